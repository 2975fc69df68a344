"""What a ViT's embedding learned, from its weights (numpy, the shared layout): the ViT paper's figure 7.

Position similarity: the cosine similarity of each patch's position embedding with every other
patch's. Row/column parts: how much of the table is a part per row plus a part per column (the paper's
"row-column structure"). Patch filters: the principal components of the patch-embedding filters, as image tiles.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class RowColumnParts:
    """A patch position table split as table[i, j] = mean + row[i] + column[j] + rest (a two-way analysis of
    variance, per embedding dimension).

    share: the fraction of the table's variance (about its mean) that row + column explain: 1 for a sin-cos
    table (half its dimensions code the row, half the column); `chance` for independent random vectors.
    rows, columns: the cosine similarity of the row parts (gh, gh) and of the column parts (gw, gw): whether
    the table tells row 0 from row gh-1 (an ordered code falls with distance) or codes them alike.
    """

    share: float
    chance: float
    rows: np.ndarray
    columns: np.ndarray


def row_column_parts(weights: Mapping[str, np.ndarray], config: ViTConfig) -> RowColumnParts | None:
    """The row and column parts of the patches' position embedding (RowColumnParts); None where there is nothing
    to split: a grid of one row or one column, or a table whose patch rows are all equal."""
    gh, gw = config.grid
    if gh < 2 or gw < 2:
        return None
    table = patch_position_embeddings(weights, config).reshape(gh, gw, -1)
    table = table - table.mean(axis=(0, 1))
    total = float((table**2).sum())
    if total <= 1e-12 * table.size:
        return None
    row, column = table.mean(axis=1), table.mean(axis=0)  # (gh, D), (gw, D): each centred already
    share = (gw * float((row**2).sum()) + gh * float((column**2).sum())) / total
    # Degrees of freedom: a random table puts (gh - 1) + (gw - 1) of its gh * gw - 1 into the two parts.
    chance = (gh + gw - 2) / (gh * gw - 1)

    def cosine(parts: np.ndarray) -> np.ndarray:
        unit = parts / np.maximum(np.linalg.norm(parts, axis=1, keepdims=True), 1e-12)
        return unit @ unit.T

    return RowColumnParts(share, chance, cosine(row), cosine(column))


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
