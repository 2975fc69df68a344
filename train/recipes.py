"""Training recipes: every hyperparameter of a run, by name (`--recipe`), with flags overriding a few."""

from __future__ import annotations

import dataclasses
from typing import Any

from train.augment import AugmentConfig

# The tutorial's torchvision Normalize constants: the usual CIFAR-10 channel mean and std.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class RecipeError(ValueError):
    """An unknown recipe or an impossible override."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train: optimizer, schedule, batch, length, augmentation and model-side regularisation.

    optimizer: "adam_l2" (PyTorch's Adam(weight_decay=wd): wd * param added to the gradient, every
        parameter decayed) or "adamw" (decoupled decay, masked to weights: no biases, norms,
        position embedding or [CLS] token).
    schedule: "step" (StepLR: lr * gamma every step_epochs epochs) or "warmup_cosine" (linear warmup
        for warmup_epochs, at most warmup_max_fraction of the run, then cosine to zero).
    """

    name: str
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    weight_decay: float
    schedule: str
    step_epochs: int = 20
    step_gamma: float = 0.5
    warmup_epochs: float = 0.0
    warmup_max_fraction: float = 0.1
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float | None = None
    augment: AugmentConfig = AugmentConfig()
    model_overrides: tuple[tuple[str, Any], ...] = ()  # ViTConfig fields set by the recipe

    def replace(self, **changes: Any) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model_overrides"] = dict(self.model_overrides)
        return out


RECIPES: dict[str, Recipe] = {
    # The tutorial, reproduced faithfully for comparison.
    "tutorial": Recipe(
        name="tutorial",
        epochs=50,
        batch_size=128,
        lr=3e-4,
        optimizer="adam_l2",
        weight_decay=1e-4,
        schedule="step",
        step_epochs=20,
        step_gamma=0.5,
        augment=AugmentConfig(crop_padding=4, flip=True, mean=CIFAR10_MEAN, std=CIFAR10_STD),
    ),
    # Ours: the from-scratch ViT recipe of DeiT / "ViT for small datasets" / CCT, sized for CIFAR.
    "default": Recipe(
        name="default",
        epochs=200,
        batch_size=128,
        lr=1e-3,
        optimizer="adamw",
        weight_decay=0.05,
        schedule="warmup_cosine",
        warmup_epochs=5,
        warmup_max_fraction=0.1,
        b2=0.999,
        clip_norm=1.0,
        augment=AugmentConfig(
            crop_padding=4,
            flip=True,
            randaugment_ops=2,
            randaugment_magnitude=9.0,
            mixup_alpha=0.8,
            cutmix_alpha=1.0,
            mix_prob=0.5,
            switch_prob=0.5,
            label_smoothing=0.1,
            mean=CIFAR10_MEAN,
            std=CIFAR10_STD,
        ),
        model_overrides=(("drop_path", 0.1),),
    ),
}


def get_recipe(name: str, *, epochs: int | None = None, batch_size: int | None = None, lr: float | None = None) -> Recipe:
    """The named recipe with the command line's overrides applied."""
    if name not in RECIPES:
        raise RecipeError(f"unknown recipe {name!r}: use one of {sorted(RECIPES)}")
    recipe = RECIPES[name]
    if epochs is not None:
        if epochs <= 0:
            raise RecipeError(f"--epochs must be positive, got {epochs}")
        recipe = recipe.replace(epochs=epochs)
    if batch_size is not None:
        if batch_size <= 0:
            raise RecipeError(f"--batch-size must be positive, got {batch_size}")
        recipe = recipe.replace(batch_size=batch_size)
    if lr is not None:
        if not lr > 0:
            raise RecipeError(f"--lr must be positive, got {lr}")
        recipe = recipe.replace(lr=lr)
    return recipe
