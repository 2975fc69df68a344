"""What a ViT attends to, from its attention probabilities (numpy, either twin's): per-head maps and rollout.

Each layer's probabilities are (B, heads, T, T), rows are queries and sum to one; tokens are the
[CLS] token (pool="cls") followed by the patches in row-major grid order.
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


def pooled_relevance(attention: np.ndarray, config: ViTConfig) -> np.ndarray:
    """How much the pooled representation draws on each patch, as a (..., grid_h, grid_w) map.

    `attention` is (..., T, T) (one layer's, per head or averaged, or a rollout). pool="cls": the [CLS]
    token's row, over the patches. pool="mean" has no [CLS] token: the pooled vector is the mean of all
    tokens, so a patch's share is the attention it receives, averaged over the rows (queries).
    """
    attention = np.asarray(attention)
    if config.pool == "cls":
        weights = attention[..., 0, config.num_prefix_tokens:]
    else:
        weights = attention.mean(axis=-2)
    return weights.reshape(*weights.shape[:-1], *config.grid)


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
