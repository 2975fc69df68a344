"""A recipe's learning rate as a plain function of the step: what the PyTorch trainer sets before each
step, and what optax's schedules in train.jax_loop.optim compute (tests hold the two together). Framework-free."""

from __future__ import annotations

import math
from typing import Callable

from train.recipes import Recipe, RecipeError


def warmup_steps(recipe: Recipe, steps_per_epoch: int, total_steps: int) -> int:
    """Linear warmup: warmup_epochs, but at most warmup_max_fraction of the run, and at least one step."""
    return max(int(min(recipe.warmup_epochs * steps_per_epoch, recipe.warmup_max_fraction * total_steps)), 1)


def learning_rate(recipe: Recipe, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """`lr(step)` of step 0, 1, ...: the value the update of that step uses.

    "step": PyTorch's StepLR stepped once per epoch (lr * gamma ** (epoch // step_epochs)).
    "warmup_cosine": 0 -> lr linearly over the warmup, then cosine to zero at total_steps (optax's
    warmup_cosine_decay_schedule; its first step has lr 0).
    """
    if recipe.schedule == "step":
        period = recipe.step_epochs * steps_per_epoch
        return lambda step: recipe.lr * recipe.step_gamma ** (step // period)
    if recipe.schedule == "warmup_cosine":
        warmup = warmup_steps(recipe, steps_per_epoch, total_steps)
        decay = max(total_steps, warmup + 1) - warmup

        def lr(step: int) -> float:
            if step < warmup:
                return recipe.lr * step / warmup
            t = min(step - warmup, decay)
            return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * t / decay))

        return lr
    raise RecipeError(f"unknown schedule {recipe.schedule!r}: use 'step' or 'warmup_cosine'")
