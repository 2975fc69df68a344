"""The torch.optim optimizer of a recipe, its weight-decay mask and global-norm clipping: the PyTorch twin of
train.jax_loop.optim (optax), which the parity suite holds it to update by update. The learning rate of each step
is train.schedule's, set by the step (train.torch_loop.step)."""

from __future__ import annotations

from typing import Any

import torch

from torch_vit import ViT
from train import param_groups
from train.recipes import OPTIMIZERS, Recipe, RecipeError
from vit_spec.layout import NO_DECAY_NAMES, exempt_from_decay

__all__ = ["NO_DECAY_NAMES", "decays", "make_optimizer", "optimizer_groups"]


def decays(name: str, param: torch.Tensor) -> bool:
    """True where AdamW's weight decay applies: matrices and conv kernels (JAX's "kernel" leaves), never
    biases, norms or the tensors of vit_spec.layout.NO_DECAY_NAMES (position embedding, prefix tokens, MAP latent)."""
    return param.ndim >= 2 and not exempt_from_decay(name)


def optimizer_groups(model: ViT, recipe: Recipe) -> list[dict[str, Any]]:
    """The param groups of the recipe's optimizer, over the parameters that train (requires_grad; --freeze):
    [decayed, not decayed] (adamw, sgd: the mask of `decays`) or one group (adam_l2: every parameter decayed), each
    split by layer with its learning-rate scale "lr_scale" (train.param_groups.layer_scales; 1 without layer decay),
    which the step multiplies the schedule's rate by."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if recipe.optimizer == "adam_l2":
        parts = [(named, recipe.weight_decay)]
    else:
        parts = [([(n, p) for n, p in named if decays(n, p)], recipe.weight_decay),
                 ([(n, p) for n, p in named if not decays(n, p)], 0.0)]
    if recipe.layer_decay is None:
        return [{"params": [p for _, p in part], "weight_decay": wd, "lr_scale": 1.0} for part, wd in parts if part]
    scales = param_groups.layer_scales([n for n, _ in named], recipe.layer_decay)
    groups: list[dict[str, Any]] = []
    for part, wd in parts:
        by_scale: dict[float, list[torch.Tensor]] = {}
        for n, p in part:
            by_scale.setdefault(scales[n], []).append(p)
        groups += [{"params": ps, "weight_decay": wd, "lr_scale": scale} for scale, ps in by_scale.items()]
    return groups


def make_optimizer(model: ViT, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's torch.optim optimizer over the parameters that train; the learning rate of each group is set
    before each step (train_step: the schedule's rate times the group's "lr_scale")."""
    groups = optimizer_groups(model, recipe)
    if recipe.optimizer == "adam_l2":
        # PyTorch's own L2 decay: wd * param added to every gradient, as the tutorial's Adam(weight_decay=wd).
        return torch.optim.Adam(groups, lr=recipe.lr, betas=(recipe.b1, recipe.b2), eps=recipe.eps, foreach=False)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, betas=(recipe.b1, recipe.b2), eps=recipe.eps, foreach=False)
    if recipe.optimizer == "sgd":
        # v = g (+ wd * param) + momentum * v, param -= lr v: optax.trace's momentum (train.jax_loop.optim).
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, dampening=0.0, nesterov=False,
                               foreach=False)
    raise RecipeError(f"unknown optimizer {recipe.optimizer!r}: use one of {OPTIMIZERS}")


def global_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


@torch.no_grad()
def clip_by_global_norm(grads: list[torch.Tensor], max_norm: float, norm: torch.Tensor) -> None:
    """optax.clip_by_global_norm in place: scale by max_norm / norm when norm exceeds max_norm.

    Not torch.nn.utils.clip_grad_norm_, which divides by (norm + 1e-6) and so clips a little everywhere.
    """
    if norm >= max_norm:
        torch._foreach_mul_(grads, max_norm / norm)
