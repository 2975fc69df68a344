"""A ViT's final tokens, split into what they are (numpy or any array with numpy slicing: jax, torch).

The tokens (B, T, D) of `forward_features` in either twin are the prefix tokens in timm's order ([CLS], the
distillation token, the registers: config.num_prefix_tokens of them), then the patches in row-major grid order.
"""

from __future__ import annotations

from typing import Any

from vit_spec.config import ViTConfig


def split_tokens(tokens: Any, config: ViTConfig) -> tuple[Any, Any]:
    """(prefix tokens (B, P, D), patch tokens (B, grid_h * grid_w, D)) of final tokens (B, T, D); P may be 0."""
    if tokens.shape[-2] != config.num_tokens:
        raise ValueError(f"tokens of shape {tuple(tokens.shape)} are not this model's: it has {config.num_tokens} tokens "
                         f"({config.num_prefix_tokens} prefix + {config.num_patches} patches)")
    p = config.num_prefix_tokens
    return tokens[..., :p, :], tokens[..., p:, :]


def prefix_names(config: ViTConfig) -> list[str]:
    """The name of each prefix token, in order: "cls", "dist", "reg0", "reg1", ..."""
    return ["cls"] * config.has_class_token + ["dist"] * config.distilled + [f"reg{i}" for i in range(config.reg_tokens)]
