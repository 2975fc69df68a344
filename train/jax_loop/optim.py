"""The optax optimizer and learning-rate schedule of a recipe: adam_l2, adamw or sgd, clipped, with layer-wise
learning-rate decay where the recipe asks for it (train.torch_loop.optim is its torch.optim twin)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_vit.block_layout import SCANNED_BLOCKS
from train import param_groups
from train.recipes import OPTIMIZERS, Recipe, RecipeError
from train.schedule import warmup_steps
from vit_spec.layout import NO_DECAY_NAMES, exempt_from_decay

__all__ = ["NO_DECAY_NAMES", "layer_scale_tree", "lr_schedule", "make_optimizer", "scale_by_layer_decay", "timm_names",
           "weight_decay_mask"]


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


def timm_names(path: tuple, leaf: Any) -> list[str]:
    """The timm-style names of a Flax parameter at `path` (blocks_3/attn/qkv/kernel -> blocks.3.attn.qkv.kernel):
    one, or one per block for a leaf that ViT(scan_blocks=True) stacks under "blocks". The last component is
    Flax's ("kernel", "scale"), which no rule on the names reads."""
    keys = [str(getattr(k, "key", k)) for k in path]
    if keys[0] == SCANNED_BLOCKS:
        return [".".join(["blocks", str(i), *keys[1:]]) for i in range(leaf.shape[0])]
    if keys[0].startswith("blocks_"):
        keys = ["blocks", keys[0].removeprefix("blocks_"), *keys[1:]]
    return [".".join(keys)]


def layer_scale_tree(params: Any, layer_decay: float) -> Any:
    """Per leaf of `params`: the scale of its learning rate (train.param_groups.layer_scales), a float64 numpy scalar
    (cast to the update's dtype where applied), or for a stacked block leaf a (depth, 1, ...) column of the blocks'
    scales."""
    named = jax.tree_util.tree_flatten_with_path(params)[0]
    scales = param_groups.layer_scales([n for path, leaf in named for n in timm_names(path, leaf)], layer_decay)

    def scale(path: tuple, leaf: Any) -> np.ndarray:
        values = np.asarray([scales[n] for n in timm_names(path, leaf)], np.float64)
        if str(getattr(path[0], "key", path[0])) == SCANNED_BLOCKS:
            return values.reshape((-1,) + (1,) * (leaf.ndim - 1))
        return values[0]

    return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_layer_decay(layer_decay: float) -> optax.GradientTransformation:
    """Multiplies each leaf's update by its layer's learning-rate scale (layer_scale_tree), after the whole optimizer:
    timm scales the group's lr, which scales every term the lr multiplies (adamw's decoupled decay included)."""

    def update(updates: Any, state: optax.EmptyState, params: Any = None) -> tuple[Any, optax.EmptyState]:
        scales = layer_scale_tree(updates, layer_decay)  # static: computed from the tree's paths and shapes
        return jax.tree.map(lambda u, s: u * s.astype(u.dtype), updates, scales), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


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
    elif recipe.optimizer == "sgd":
        # torch.optim.SGD(momentum=m, dampening=0, nesterov=False, weight_decay=wd on the masked parameters):
        # g += wd * param, then the buffer v = g + m v (optax.trace, which starts at zero: v = g first, as torch's),
        # then param -= lr v. optax.sgd(schedule, m) but for the decay.
        if recipe.weight_decay:
            parts.append(optax.add_decayed_weights(recipe.weight_decay, mask=weight_decay_mask))
        parts += [optax.trace(decay=recipe.momentum, nesterov=False), optax.scale_by_learning_rate(schedule)]
    else:
        raise RecipeError(f"unknown optimizer {recipe.optimizer!r}: use one of {OPTIMIZERS}")
    if recipe.layer_decay is not None:
        parts.append(scale_by_layer_decay(recipe.layer_decay))
    return optax.chain(*parts), schedule
