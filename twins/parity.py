"""The layer-by-layer comparison of `vit parity FILE` and the parity suite: the same weights and images through
both twins, every intermediate tensor, the logits and every gradient compared (twins.differences)."""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from twins.differences import FORWARD_TOL, GRAD_TOL, Difference, compare
from vit_spec import ViTConfig


@dataclasses.dataclass
class ParityReport:
    forward: list[Difference]
    gradients: list[Difference]

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.forward + self.gradients)


def loss_labels(config: ViTConfig, batch: int, seed: int) -> np.ndarray:
    """The labels of the cross-entropy whose gradients are compared."""
    return np.random.default_rng(seed + 1).integers(0, max(config.num_classes, 1), size=batch)


def run_parity(config: ViTConfig, state_dict: Mapping[str, np.ndarray], images_nhwc: np.ndarray, dtype: str = "float32", seed: int = 0, gradients: bool = True) -> ParityReport:
    """Forward (and gradient) comparison of the twins on one batch."""
    from twins import jax_side, torch_side

    forward = compare(
        torch_side.forward(config, state_dict, images_nhwc, dtype), jax_side.forward(config, state_dict, images_nhwc, dtype),
        FORWARD_TOL[dtype],
    )
    grads: list[Difference] = []
    if gradients:
        labels = loss_labels(config, images_nhwc.shape[0], seed)
        grads = compare(
            torch_side.gradients(config, state_dict, images_nhwc, labels, dtype),
            jax_side.gradients(config, state_dict, images_nhwc, labels, dtype),
            GRAD_TOL[dtype],
        )
    return ParityReport(forward, grads)


def random_images(config: ViTConfig, batch: int, seed: int = 0) -> np.ndarray:
    """A normalised-looking NHWC float32 batch."""
    h, w = config.image_hw
    return np.random.default_rng(seed).standard_normal((batch, h, w, config.channels)).astype(np.float32)


def normalised_images(config: ViTConfig, paths: list[str]) -> np.ndarray:
    """Image files as the model sees them (vit_spec.image_files: centre crop, resize, its image_mean / image_std), NHWC float32."""
    from vit_spec.image_files import normalise, read_image

    return normalise(np.stack([read_image(path, config) for path in paths]), config)
