"""`vit train --init-from FILE`: start from weights in any format `vit convert` reads.

The checkpoint decides the architecture and the input normalisation; the dataset decides the image
size (the position embedding is resampled, as timm does) and the number of classes (a new head,
zero-initialised as big_vision fine-tunes); the recipe adds its regularisation: a dropout or drop_path rate
that a flag (zero included) or the recipe sets (recipes.resolve's model_overrides) replaces the checkpoint's, one
that neither sets stays the checkpoint's, as does its attention dropout (recipes.as_trained reports them).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from vit_spec import ViTConfig
from vit_spec.formats import load_checkpoint, missing_params


def finetune_weights(
    path: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    overrides: Mapping[str, Any] = (),
    variant: str | None = None,
) -> tuple[ViTConfig, dict[str, np.ndarray], list[str]]:
    """(config, state dict, names of the parameters it lacks: a new head) for fine-tuning the checkpoint
    at `path` on a dataset; framework-free (each trainer initialises what is missing).

    Args:
        path: a checkpoint in any supported format (vit, timm, hf, npz, big_vision).
        image_shape: the dataset's (height, width, channels).
        num_classes: the dataset's classes; a different count gets a new head.
        overrides: ViTConfig fields the resolved recipe sets (its model_overrides: dropout, drop_path); a field
            it leaves out keeps the checkpoint's value.
        variant: what the file does not record (a timm state dict's heads), as `vit convert --variant`.
    """
    h, w, c = image_shape
    config, state_dict = load_checkpoint(path, variant=variant, image_size=(h, w) if h != w else h, num_classes=num_classes)
    if config.channels != c:
        raise ValueError(f"{path} is a model of {config.channels}-channel images, but the dataset's have {c} channels")
    config = config.replace(**dict(overrides))
    state_dict = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
    return config, state_dict, missing_params(config, state_dict)
