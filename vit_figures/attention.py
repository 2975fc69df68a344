"""`vit attention`'s figure: where a trained ViT looks, per head, averaged over heads, and rolled out over layers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from twins.frameworks import twin_module
from vit_spec import ViTConfig
from vit_spec.attention_maps import Attention, normalise_map, pooled_relevance, rollout, upsample

CELL_INCHES = 1.6  # one map
TITLE_INCHES = 0.8  # the figure's title and the column titles
DPI = 100


def attention_of(framework: str, path: str | Path, images: np.ndarray) -> Attention:
    """The `framework` twin's logits and attention (jax_vit.inference / torch_vit.inference) on uint8 images."""
    return twin_module(framework, "inference").attention(path, images)


@dataclasses.dataclass
class Maps:
    """What one grid shows, per image: patch maps (grid_h, grid_w), not yet upsampled."""

    heads: np.ndarray  # (B, shown heads, gh, gw): the chosen layer, each head
    head_mean: np.ndarray  # (B, gh, gw): the chosen layer, averaged over heads
    rollout: np.ndarray  # (B, gh, gw): over all layers


def maps_of(attention: Attention, config: ViTConfig, layer: int = -1, heads: Sequence[int] | None = None) -> Maps:
    """The maps of `vit attention` from a twin's attention (pool-aware: pooled_relevance)."""
    probs = attention.layers[layer]
    chosen = probs if heads is None else probs[:, list(heads)]
    return Maps(
        heads=pooled_relevance(chosen, config),
        head_mean=pooled_relevance(probs.mean(axis=1), config),
        rollout=pooled_relevance(rollout(attention.layers), config),
    )


def figure_size(rows: int, columns: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG of `rows` images and `columns` panels each."""
    return round(columns * CELL_INCHES * DPI), round((rows * CELL_INCHES + TITLE_INCHES) * DPI)


def draw(
    out: str | Path, images: np.ndarray, maps: Maps, row_titles: Sequence[str], title: str, head_names: Sequence[str],
) -> None:
    """One row per image: the image, then each map overlaid on it (upsampled to the image, scaled to [0, 1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vit_spec.weights_file import atomic_path

    columns = ["image", *head_names, "mean of heads", "rollout"]
    rows = len(images)
    width, height = figure_size(rows, len(columns))
    fig, axes = plt.subplots(rows, len(columns), figsize=(width / DPI, height / DPI), dpi=DPI, squeeze=False)
    h, w = images.shape[1:3]
    grey = images.shape[-1] == 1
    for r in range(rows):
        picture = images[r, ..., 0] if grey else images[r]
        panels = [None, *maps.heads[r], maps.head_mean[r], maps.rollout[r]]
        for c, heat in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(picture, cmap="gray" if grey else None, vmin=0, vmax=255)
            if heat is not None:
                ax.imshow(normalise_map(upsample(heat, (h, w))), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
        axes[r, 0].set_ylabel(row_titles[r], fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.99, bottom=0.01, top=1 - TITLE_INCHES / (height / DPI),
                        wspace=0.05, hspace=0.2)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)


def title_of(config: ViTConfig, layer: int, framework: str) -> str:
    depth = config.depth
    index = layer % depth
    if config.pool == "cls":
        what = f"[CLS] token's attention to the patches in layer {index} (of 0..{depth - 1})"
    else:
        what = (f"mean attention each patch receives in layer {index} (of 0..{depth - 1}); "
                "a mean-pooled model has no [CLS] token")
    return f"{what}; rollout over all {depth} layers ({framework}; each map scaled to its own range)"


def row_titles(rows: Sequence[str], probabilities: np.ndarray, names: Sequence[str] | None,
               true: Sequence[int] | None) -> list[str]:
    """Each row's title: its name, the predicted class with its probability and, for dataset examples, the true
    class."""
    titles = []
    for i, name in enumerate(rows):
        k = int(probabilities[i].argmax())
        label = names[k] if names and k < len(names) else f"class {k}"
        line = f"{name}\npredicted {label} ({probabilities[i, k]:.0%})"
        if true is not None:
            line += f"\ntrue {names[true[i]] if names else true[i]}"
        titles.append(line)
    return titles


def attention_figure(
    out: str | Path, weights: str | Path, config: ViTConfig, images: np.ndarray, rows: Sequence[str],
    framework: str = "jax", layer: int = -1, head: int | None = None,
    names: Sequence[str] | None = None, true: Sequence[int] | None = None,
) -> list[str]:
    """Draws `vit attention`'s grid of `images` ((N, H, W, C) uint8, the model's size) under the `framework` twin
    into `out`; returns the row titles.

    Args:
        out: the PNG to write.
        weights: the weights file; config: its config.
        rows: a name per image.
        layer, head: the layer of the per-head maps (negative: from the end), and one head to show or every head.
        names, true: the class names, and the true class of each image where known.
    """
    from twins.predictions import softmax

    attention = attention_of(framework, weights, images)
    heads = None if head is None else [head]
    maps = maps_of(attention, config, layer, heads)
    titles = row_titles(rows, softmax(attention.logits), names, true)
    head_names = [f"head {h}" for h in (range(config.heads) if heads is None else heads)]
    draw(out, images, maps, titles, title_of(config, layer, framework), head_names)
    return titles
