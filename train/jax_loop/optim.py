"""The optax optimizer and learning-rate schedule of a recipe."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from train.recipes import Recipe, RecipeError
from train.schedule import warmup_steps
from vit_spec.layout import NO_DECAY_NAMES, exempt_from_decay

__all__ = ["NO_DECAY_NAMES", "lr_schedule", "make_optimizer", "weight_decay_mask"]


def lr_schedule(recipe: Recipe, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """The recipe's learning rate as a function of the step (train.schedule.learning_rate, in optax), computed in
    the widest float enabled: optax would compute it from the int32 step count in float32 even under jax_enable_x64."""
    base = _schedule(recipe, steps_per_epoch, total_steps)
    wide = jax.dtypes.canonicalize_dtype(jnp.float64)  # float32 unless x64 is on
    return lambda count: base(jnp.asarray(count, wide))


def _schedule(recipe: Recipe, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    if recipe.schedule == "step":
        # PyTorch's StepLR, stepped once per epoch.
        return optax.exponential_decay(
            recipe.lr, transition_steps=recipe.step_epochs * steps_per_epoch, decay_rate=recipe.step_gamma, staircase=True
        )
    if recipe.schedule == "warmup_cosine":
        warmup = warmup_steps(recipe, steps_per_epoch, total_steps)
        return optax.warmup_cosine_decay_schedule(
            0.0, recipe.lr, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1), end_value=0.0
        )
    raise RecipeError(f"unknown schedule {recipe.schedule!r}: use 'step' or 'warmup_cosine'")


def weight_decay_mask(params: Any) -> Any:
    """True where weight decay applies: matrices and conv kernels ("kernel" leaves), never biases, norms or the
    tensors of vit_spec.layout.NO_DECAY_NAMES (position embedding, prefix tokens, MAP latent, layer-scale gains)."""

    def decays(path: tuple, _: Any) -> bool:
        names = [str(getattr(k, "key", k)) for k in path]
        return names[-1] == "kernel" and not exempt_from_decay(".".join(names))

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(recipe: Recipe, steps_per_epoch: int, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, schedule) for the recipe."""
    schedule = lr_schedule(recipe, steps_per_epoch, total_steps)
    parts = []
    if recipe.clip_norm:
        parts.append(optax.clip_by_global_norm(recipe.clip_norm))
    if recipe.optimizer == "adam_l2":
        # torch.optim.Adam(weight_decay=wd): grad += wd * param on every parameter, then Adam.
        if recipe.weight_decay:
            parts.append(optax.add_decayed_weights(recipe.weight_decay))
        parts += [optax.scale_by_adam(recipe.b1, recipe.b2, recipe.eps), optax.scale_by_learning_rate(schedule)]
    elif recipe.optimizer == "adamw":
        parts.append(
            optax.adamw(schedule, recipe.b1, recipe.b2, recipe.eps, weight_decay=recipe.weight_decay, mask=weight_decay_mask)
        )
    else:
        raise RecipeError(f"unknown optimizer {recipe.optimizer!r}: use 'adam_l2' or 'adamw'")
    return optax.chain(*parts), schedule
