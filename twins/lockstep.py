"""The parity suite's training runs in lockstep: the JAX trainer's step and the PyTorch trainer's step
(twins.jax_side.lockstep_steps, twins.torch_side.lockstep_steps) on the same batches from the same weights.

Augmentation and dropout are off, so both see the identical inputs computed here once, in numpy; that both
augmentations compute those inputs when they are off is tested apart (tests/test_torch_augment.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

Batch = tuple[np.ndarray, np.ndarray]  # uint8 NHWC images, int labels


def lockstep_recipe(name: str, batch_size: int, lr: float | None = None, **changes: Any):
    """The recipe `name` as the parity suite runs it: augmentation and dropout off (label smoothing,
    optimizer, clipping and schedule kept), so that both twins see identical inputs."""
    from train import recipes

    recipe = recipes.get_recipe(name, batch_size=batch_size, lr=lr)
    off = {"crop_padding": 0, "randaugment_ops": 0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "drop_path": 0.0, "dropout": 0.0}
    recipe = recipes.resolve(recipe.replace(length_scaled=False), recipe.epochs, off)
    return recipe.replace(augment=dataclasses.replace(recipe.augment, flip=False), **changes)


def lockstep_inputs(batch: Batch, augment: Any, num_classes: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The step inputs of both twins for a batch with augmentation off, computed once in numpy in `dtype`:
    normalised NHWC images and label-smoothed one-hot targets (what both augmentations compute then)."""
    images, labels = batch
    x = (images.astype(dtype) / 255.0 - np.asarray(augment.mean, dtype)) / np.asarray(augment.std, dtype)
    targets = np.eye(num_classes, dtype=dtype)[labels]
    if augment.label_smoothing:
        targets = targets * (1 - augment.label_smoothing) + augment.label_smoothing / num_classes
    return x.astype(dtype), targets.astype(dtype)
