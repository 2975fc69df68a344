"""What a ViT attends to, from its attention probabilities (numpy, either twin's): per-head maps and rollout.

Each layer's probabilities are (B, heads, T, T), rows are queries and sum to one; tokens are the prefix tokens
([CLS], the distillation token, the registers: config.num_prefix_tokens, timm's order) followed by the patches in
row-major grid order. Maps are over the patches only: the prefix tokens' columns are left out.

Which rows a map reads is what the pooled vector reads (readout_rows): pool="cls" the [CLS] row (distilled: the
mean of the [CLS] and distillation rows, which the model averages), pool="mean" (with or without a [CLS] token) the
mean of the patch rows, pool="map" the MAP head's own attention over the patches (its latent query, `pool`).
Rollout keeps every token in its rows and columns (the math of the whole residual stream), and the same readout
is taken of it; for MAP the pooling attention weights the rolled-out patch rows.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from vit_spec.config import ViTConfig


@dataclasses.dataclass
class Attention:
    """A twin's view of a batch: logits (B, classes) and per layer the attention probabilities (B, heads, T, T)."""

    logits: np.ndarray
    layers: list[np.ndarray]
    pool: np.ndarray | None = None  # pool="map": the MAP head's attention, (B, heads, 1, patches)


def rollout(attentions: Sequence[np.ndarray]) -> np.ndarray:
    """Attention rollout (Abnar and Zuidema 2020): (B, T, T), how much each output token draws on each input token.

    Each layer's attention is averaged over heads, the identity is added for the residual connection and
    rows are renormalised, then the layers are multiplied from the first up. Every row sums to one.

    Args:
        attentions: per layer, in order, the probabilities (B, heads, T, T).
    """
    if not attentions:
        raise ValueError("rollout needs the attention of at least one layer")
    joint = None
    for probs in attentions:
        a = np.asarray(probs, np.float64).mean(axis=1)
        a = a + np.eye(a.shape[-1])
        a = a / a.sum(axis=-1, keepdims=True)
        joint = a if joint is None else a @ joint
    return joint


def readout(config: ViTConfig) -> str:
    """What the maps of `config` read, in words (for titles): see the module's docstring."""
    if config.pool == "map":
        return "the MAP head's attention (its latent query) over the patches"
    if config.pool == "cls":
        if config.distilled:
            return "the mean of the [CLS] and distillation tokens' attention to the patches"
        return "the [CLS] token's attention to the patches"
    # mean (and "none", which returns every token): the patch tokens the pooled vector averages
    if config.num_prefix_tokens:
        return "the mean attention each patch receives from the patch tokens"
    return "the mean attention each patch receives"


def pooled_relevance(attention: np.ndarray, config: ViTConfig, pool_attention: np.ndarray | None = None) -> np.ndarray:
    """How much the pooled representation draws on each patch, as a (..., grid_h, grid_w) map.

    `attention` is (..., T, T) over all tokens (one layer's, per head or averaged, or a rollout); only the patch
    columns are read. pool="cls": the [CLS] row (distilled: the mean of the [CLS] and distillation rows).
    pool="mean": the mean of the patch rows (the tokens the pooled vector averages; a [CLS] token beside mean
    pooling feeds nothing after the last layer). pool="map": `pool_attention` (..., patches), the MAP head's
    attention averaged over its heads, weighting the patch rows.
    """
    attention = np.asarray(attention)
    p = config.num_prefix_tokens
    if attention.shape[-1] != config.num_tokens:
        raise ValueError(f"attention over {attention.shape[-1]} tokens, but the model has {config.num_tokens}")
    if config.pool == "map":
        if pool_attention is None:
            raise ValueError("a MAP-pooled model's relevance needs its pooling attention (the 'attn_pool' intermediate)")
        weights = np.einsum("...n,...nk->...k", np.asarray(pool_attention, np.float64), attention[..., p:, p:])
    elif config.pool == "cls":
        weights = attention[..., : 1 + int(config.distilled), p:].mean(axis=-2)
    else:
        weights = attention[..., p:, p:].mean(axis=-2)
    return weights.reshape(*weights.shape[:-1], *config.grid)


def pooling_maps(pool: np.ndarray, config: ViTConfig) -> np.ndarray:
    """The MAP head's attention (..., 1, patches) as (..., grid_h, grid_w) maps."""
    pool = np.asarray(pool)[..., 0, :]
    return pool.reshape(*pool.shape[:-1], *config.grid)


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., gh, gw) patch maps -> (..., H, W), bilinear with pixel centres aligned (as torch's align_corners=False)."""
    from vit_spec.resample import interpolation_matrix

    rows = interpolation_matrix(maps.shape[-2], size[0], "bilinear", antialias=False)
    cols = interpolation_matrix(maps.shape[-1], size[1], "bilinear", antialias=False)
    return np.einsum("ih,...hw,jw->...ij", rows, np.asarray(maps, np.float64), cols)


def normalise_map(m: np.ndarray) -> np.ndarray:
    """A map scaled to [0, 1] over its last two axes, for display (a constant map becomes all zeros)."""
    lo = m.min(axis=(-2, -1), keepdims=True)
    span = m.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(span > 0, (m - lo) / np.where(span > 0, span, 1), 0.0)
