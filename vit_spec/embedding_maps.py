"""What a ViT's embedding learned, from its weights (numpy, the shared layout): the ViT paper's figure 7.

Position similarity: the cosine similarity of each patch's position embedding with every other
patch's. Patch filters: the principal components of the patch-embedding filters, as image tiles.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from vit_spec.config import ViTConfig
from vit_spec.layout import WeightsError, sincos_2d


def patch_position_embeddings(weights: Mapping[str, np.ndarray], config: ViTConfig) -> np.ndarray:
    """(grid_h * grid_w, D): the patches' rows of the position embedding (the prefix tokens' slots dropped where
    the table has them: [CLS], distillation token, registers; pos_embed_covers_prefix=False tables cover the
    patches only).

    A sin-cos model's table is computed from its config where a file does not hold it.
    """
    table = weights.get("pos_embed")
    if table is None:
        if config.pos_embed != "sincos2d":
            raise WeightsError("the weights hold no 'pos_embed' and the model's position embedding is learned")
        table = sincos_2d(config)
    table = np.asarray(table, np.float64).reshape(-1, config.width)
    rows = config.num_pos_embed_tokens
    if table.shape[0] != rows:
        covers = "every token" if config.pos_embed_covers_prefix else "the patches only"
        raise WeightsError(f"pos_embed has {table.shape[0]} rows, the model's table {rows} ({covers})")
    return table[rows - config.num_patches:]


def position_similarity(weights: Mapping[str, np.ndarray], config: ViTConfig) -> np.ndarray:
    """(gh, gw, gh, gw): [i, j] is the map of patch (i, j)'s position-embedding cosine similarity with every patch."""
    pos = patch_position_embeddings(weights, config)
    unit = pos / np.maximum(np.linalg.norm(pos, axis=1, keepdims=True), 1e-12)
    gh, gw = config.grid
    return (unit @ unit.T).reshape(gh, gw, gh, gw)


def patch_filter_components(weights: Mapping[str, np.ndarray], config: ViTConfig, count: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """The first principal components of the patch-embedding filters: (tiles (k, ph, pw, C), explained variance ratio (k,)).

    Each of the `width` filters is one (C, ph, pw) vector; the components are the directions of most
    variance among them (centred), as in the ViT paper's "RGB embedding filters (first 28 principal
    components)". k = min(count, number of components). A component's sign is arbitrary.
    """
    w = np.asarray(weights["patch_embed.proj.weight"], np.float64)  # (D, C, ph, pw)
    d, c, ph, pw = w.shape
    flat = w.reshape(d, -1)
    flat = flat - flat.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(flat, full_matrices=False)
    k = min(count, vt.shape[0])
    variance = s**2
    ratio = variance[:k] / max(variance.sum(), 1e-300)
    return vt[:k].reshape(k, c, ph, pw).transpose(0, 2, 3, 1), ratio


def mosaic(tiles: np.ndarray, gap: int = 1) -> np.ndarray:
    """Tiles (R, C, h, w[, ch]) laid out as one (R*(h+gap)-gap, C*(w+gap)-gap[, ch]) image, NaN between tiles
    (drawn as the background)."""
    r, c, h, w = tiles.shape[:4]
    out = np.full((r * (h + gap) - gap, c * (w + gap) - gap, *tiles.shape[4:]), np.nan)
    for i in range(r):
        for j in range(c):
            out[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = tiles[i, j]
    return out
