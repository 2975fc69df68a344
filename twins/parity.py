"""The layer-by-layer comparison of `vit parity FILE` and the parity suite: the same weights and images through
both twins, every intermediate tensor, the logits and every gradient compared (twins.differences).

Gradients are compared with every all-zero tensor replaced by the parity suite's random values
(vit_spec.random_weights): a freshly initialised file has a zero head (the standard ViT init), which makes
every gradient but the head's exactly zero in both twins, and a comparison of zeros proves nothing."""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from twins.differences import FORWARD_TOL, GRAD_TOL, Difference, compare, set_apart_zero_gradients
from vit_spec import ViTConfig, random_weights


@dataclasses.dataclass
class ParityReport:
    forward: list[Difference]
    gradients: list[Difference]
    # The all-zero tensors replaced by random values for the gradient comparison (perturb_zeros).
    perturbed: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.forward + self.gradients)


def loss_labels(config: ViTConfig, batch: int, seed: int) -> np.ndarray:
    """The labels of the cross-entropy whose gradients are compared."""
    return np.random.default_rng(seed + 1).integers(0, max(config.num_classes, 1), size=batch)


def zero_tensors(state_dict: Mapping[str, np.ndarray]) -> list[str]:
    """The names of the non-empty tensors that are all zeros, in the file's order."""
    return [name for name, value in state_dict.items() if np.size(value) and not np.any(value)]


def perturb_zeros(config: ViTConfig, state_dict: Mapping[str, np.ndarray], seed: int = 0) -> tuple[dict[str, np.ndarray], list[str]]:
    """(the weights with every all-zero tensor replaced by vit_spec.random_weights(config, seed)'s tensor of that
    name, the names replaced); deterministic in `seed`, the other tensors untouched."""
    zeros = zero_tensors(state_dict)
    if not zeros:
        return dict(state_dict), []
    fresh = random_weights(config, seed=seed)
    zeros = [name for name in zeros if name in fresh]
    out = dict(state_dict)
    for name in zeros:
        out[name] = np.asarray(fresh[name], dtype=np.asarray(state_dict[name]).dtype)
    return out, zeros


def run_parity(
    config: ViTConfig,
    state_dict: Mapping[str, np.ndarray],
    images_nhwc: np.ndarray,
    dtype: str = "float32",
    seed: int = 0,
    gradients: bool = True,
    perturb: bool = True,
) -> ParityReport:
    """Forward (and gradient) comparison of the twins on one batch.

    The forward pass runs the weights as given. With `perturb`, the gradients are computed with every all-zero
    tensor replaced by random values (perturb_zeros, by `seed`); their names are in the report's `perturbed`.
    """
    from twins import jax_side, torch_side

    forward = compare(
        torch_side.forward(config, state_dict, images_nhwc, dtype), jax_side.forward(config, state_dict, images_nhwc, dtype),
        FORWARD_TOL[dtype],
    )
    grads: list[Difference] = []
    perturbed: list[str] = []
    if gradients:
        labels = loss_labels(config, images_nhwc.shape[0], seed)
        weights = state_dict
        if perturb:
            weights, perturbed = perturb_zeros(config, state_dict, seed)
        grads = set_apart_zero_gradients(compare(
            torch_side.gradients(config, weights, images_nhwc, labels, dtype),
            jax_side.gradients(config, weights, images_nhwc, labels, dtype),
            GRAD_TOL[dtype],
        ), dtype)
    return ParityReport(forward, grads, tuple(perturbed))


def random_images(config: ViTConfig, batch: int, seed: int = 0) -> np.ndarray:
    """A normalised-looking NHWC float32 batch."""
    h, w = config.image_hw
    return np.random.default_rng(seed).standard_normal((batch, h, w, config.channels)).astype(np.float32)


def normalised_images(config: ViTConfig, paths: list[str]) -> np.ndarray:
    """Image files as the model sees them (vit_spec.image_files: centre crop, resize, its image_mean / image_std), NHWC float32."""
    from vit_spec.image_files import normalise, read_image

    return normalise(np.stack([read_image(path, config) for path in paths]), config)
