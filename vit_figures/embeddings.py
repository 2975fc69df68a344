"""`vit embeddings`' figure: the ViT paper's figure 7 for any weights file: position-embedding similarity and
the principal components of the patch-embedding filters."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from vit_spec import ViTConfig
from vit_spec.embedding_maps import mosaic, patch_filter_components, position_similarity

PANEL_INCHES = 4.0  # each of the two panels of a row
TITLE_INCHES = 0.9  # the row's title
DPI = 100
COMPONENTS = 28  # as in the ViT paper


def figure_size(rows: int) -> tuple[int, int]:
    """(width, height) in pixels of the picture of `rows` weights files (as a PNG)."""
    return round(2 * PANEL_INCHES * DPI), round(rows * (PANEL_INCHES + TITLE_INCHES) * DPI)


def filter_tiles(components: np.ndarray) -> np.ndarray:
    """The components (k, ph, pw, C) as one mosaic of RGB (or grey) tiles, each scaled to [0, 1]."""
    lo = components.min(axis=(1, 2, 3), keepdims=True)
    span = np.maximum(components.max(axis=(1, 2, 3), keepdims=True) - lo, 1e-12)
    tiles = (components - lo) / span
    k = len(tiles)
    columns = min(7, k)  # the paper's 4 x 7
    rows = -(-k // columns)
    padded = np.full((rows * columns, *tiles.shape[1:]), np.nan)
    padded[:k] = tiles
    grid = padded.reshape(rows, columns, *tiles.shape[1:])
    grid = mosaic(grid, gap=1)
    return grid[..., 0] if grid.shape[-1] == 1 else grid


@dataclasses.dataclass
class Embeddings:
    """What one row of the picture shows, for one weights file."""

    name: str
    config: ViTConfig
    similarity: np.ndarray  # (gh, gw, gh, gw)
    components: np.ndarray  # (k, ph, pw, C)
    ratio: np.ndarray  # (k,) explained variance


def embeddings_of(name: str, config: ViTConfig, weights: Mapping[str, np.ndarray]) -> Embeddings:
    components, ratio = patch_filter_components(weights, config, COMPONENTS)
    return Embeddings(name, config, position_similarity(weights, config), components, ratio)


def draw(out: str | Path, models: Sequence[Embeddings]) -> None:
    """One row per model: position-embedding similarity (a map per patch position), then the filters' components;
    written to `out` in the format of its suffix (vit_figures.figure_files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vit_figures.figure_files import save

    width, height = figure_size(len(models))
    fig, axes = plt.subplots(len(models), 2, figsize=(width / DPI, height / DPI), dpi=DPI, squeeze=False)
    for r, model in enumerate(models):
        name, config, similarity, ratio = model.name, model.config, model.similarity, model.ratio
        gap = max(1, config.grid[1] // 8)
        # The colours span the model's own range: sin-cos similarities all lie high (its low frequencies
        # are shared by every position), and on the paper's -1..1 scale its structure would not show.
        image = axes[r, 0].imshow(mosaic(similarity, gap=gap), cmap="viridis",
                                  vmin=float(similarity.min()), vmax=1, interpolation="nearest")
        gh, gw = config.grid
        axes[r, 0].set_title(f"{name}: {config.pos_embed} position embedding{table_note(config)}\ncosine similarity of "
                             f"each position's embedding\nwith every other's (one {gh}x{gw} map per position)", fontsize=8)
        fig.colorbar(image, ax=axes[r, 0], fraction=0.046, pad=0.02)
        tiles = filter_tiles(model.components)
        grey = tiles.ndim == 2
        shown = np.nan_to_num(tiles, nan=1.0)  # white between tiles
        axes[r, 1].imshow(shown, cmap="gray" if grey else None, vmin=0, vmax=1, interpolation="nearest")
        ph, pw = config.patch_hw
        axes[r, 1].set_title(f"{name}: patch-embedding filters ({config.channels}x{ph}x{pw})\nfirst {len(ratio)} principal "
                             f"components ({ratio.sum():.0%} of the variance),\neach scaled to [0, 1]", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.set_size_inches(width / DPI, height / DPI)
    save(fig, out, dpi=DPI)  # the format of out's suffix, atomically


def table_note(config: ViTConfig) -> str:
    """What the figure leaves out of the position table, in words ("" for a standard model's [CLS] slot)."""
    if not config.pos_embed_covers_prefix:
        return " (patches only)" if config.num_prefix_tokens else ""
    extra = config.num_prefix_tokens - int(config.has_class_token)
    return f" ({config.num_prefix_tokens} prefix slots left out)" if extra else ""


def locality(similarity: np.ndarray) -> tuple[float, float]:
    """How local a position embedding is: (mean similarity of a patch with its 4 neighbours, with all other
    patches), from the (gh, gw, gh, gw) similarity table."""
    gh, gw = similarity.shape[:2]
    neighbours = np.mean([similarity[i, j, i + di, j + dj] for i in range(gh) for j in range(gw)
                          for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)) if 0 <= i + di < gh and 0 <= j + dj < gw])
    others = (similarity.sum() - gh * gw) / max(gh * gw * (gh * gw - 1), 1)
    return float(neighbours), float(others)
