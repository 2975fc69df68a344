"""The torch.optim optimizer of a recipe, its weight-decay mask and global-norm clipping: the PyTorch twin of
train.jax_loop.optim (optax), which the parity suite holds it to update by update. The learning rate of each step
is train.schedule's, set by the step (train.torch_loop.step)."""

from __future__ import annotations

import torch

from torch_vit import ViT
from train.recipes import Recipe, RecipeError
from vit_spec.layout import NO_DECAY_NAMES, exempt_from_decay

__all__ = ["NO_DECAY_NAMES", "decays", "make_optimizer"]


def decays(name: str, param: torch.Tensor) -> bool:
    """True where AdamW's weight decay applies: matrices and conv kernels (JAX's "kernel" leaves), never
    biases, norms or the tensors of vit_spec.layout.NO_DECAY_NAMES (position embedding, prefix tokens, MAP latent)."""
    return param.ndim >= 2 and not exempt_from_decay(name)


def make_optimizer(model: ViT, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's torch.optim optimizer; its learning rate is set before each step (train_step)."""
    if recipe.optimizer == "adam_l2":
        # PyTorch's own L2 decay: wd * param added to every gradient, as the tutorial's Adam(weight_decay=wd).
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, betas=(recipe.b1, recipe.b2), eps=recipe.eps,
                                weight_decay=recipe.weight_decay, foreach=False)
    if recipe.optimizer == "adamw":
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in named if decays(n, p)], "weight_decay": recipe.weight_decay},
            {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=recipe.lr, betas=(recipe.b1, recipe.b2), eps=recipe.eps, foreach=False)
    raise RecipeError(f"unknown optimizer {recipe.optimizer!r}: use 'adam_l2' or 'adamw'")


def global_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


@torch.no_grad()
def clip_by_global_norm(grads: list[torch.Tensor], max_norm: float, norm: torch.Tensor) -> None:
    """optax.clip_by_global_norm in place: scale by max_norm / norm when norm exceeds max_norm.

    Not torch.nn.utils.clip_grad_norm_, which divides by (norm + 1e-6) and so clips a little everywhere.
    """
    if norm >= max_norm:
        torch._foreach_mul_(grads, max_norm / norm)
