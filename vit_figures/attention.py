"""`vit attention`'s figure: where a trained ViT looks, per head, averaged over heads, and rolled out over layers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from twins.frameworks import twin_module
from vit_spec import ViTConfig
from vit_spec.attention_maps import Attention, normalise_map, pooled_relevance, pooling_maps, readout, rollout, upsample

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CELL_INCHES = 1.6  # one map
GAP_INCHES = 0.06  # between two maps
LEFT_INCHES = 0.55  # the row titles, rotated on the left edge (up to 3 lines)
TITLE_INCHES = 0.95  # the figure's title (wrapped to the figure's width, up to 3 lines) and the column titles
MARGIN_INCHES = 0.05  # right and bottom
DPI = 100
TITLE_POINTS, COLUMN_POINTS, ROW_POINTS = 10, 9, 7  # font sizes

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
    """The maps of `vit attention` from a twin's attention (pool-aware: vit_spec.attention_maps.pooled_relevance),
    over the patches only. A MAP-pooled model's per-head maps and their mean are its pooling attention (the MAP
    head's heads, after the last layer; `layer` is not used), its rollout that attention over the rolled-out layers."""
    joint = rollout(attention.layers)
    if config.pool == "map":
        if attention.pool is None:
            raise ValueError("a MAP-pooled model's maps need its pooling attention (Attention.pool)")
        pool = attention.pool
        chosen = pool if heads is None else pool[:, list(heads)]
        mean = pool.mean(axis=1)  # (B, 1, patches)
        return Maps(heads=pooling_maps(chosen, config), head_mean=pooling_maps(mean, config),
                    rollout=pooled_relevance(joint, config, mean[:, 0]))
    probs = attention.layers[layer]
    chosen = probs if heads is None else probs[:, list(heads)]
    return Maps(
        heads=pooled_relevance(chosen, config),
        head_mean=pooled_relevance(probs.mean(axis=1), config),
        rollout=pooled_relevance(joint, config),
    )


def figure_size(rows: int, columns: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG of `rows` images and `columns` panels each."""
    return (round((LEFT_INCHES + columns * CELL_INCHES + MARGIN_INCHES) * DPI),
            round((TITLE_INCHES + rows * CELL_INCHES + MARGIN_INCHES) * DPI))


def _text_width(renderer, text: str, points: float) -> float:
    """The width in pixels of one line of `text` at `points`."""
    from matplotlib.font_manager import FontProperties

    return renderer.get_text_width_height_descent(text, FontProperties(size=points), ismath=False)[0]


def _wrap(renderer, text: str, points: float, width: float) -> str:
    """`text` broken between words into lines no wider than `width` pixels (a word wider than that alone on its
    line, shortened)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and _text_width(renderer, f"{lines[-1]} {word}", points) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(_shorten(renderer, word, points, width))
    return "\n".join(lines)


def _shorten(renderer, line: str, points: float, width: float) -> str:
    """`line`, or its start and end around "…" where it is wider than `width` pixels (a file's name keeps its
    suffix, a prediction its probability)."""
    if _text_width(renderer, line, points) <= width:
        return line
    keep = len(line)
    while keep > 2:
        keep -= 1
        head, tail = line[: (keep + 1) // 2], line[len(line) - keep // 2:]
        if _text_width(renderer, f"{head}…{tail}", points) <= width:
            return f"{head}…{tail}"
    return "…"


def _plain(text: str) -> str:
    """`text` as matplotlib shows it literally: a file name with two $ would otherwise be typeset as maths."""
    return text.replace("$", r"\$")


def grid(images: np.ndarray, maps: Maps, row_titles: Sequence[str], title: str, head_names: Sequence[str]) -> Figure:
    """One row per image: the image, then each map overlaid on it (upsampled to the image, scaled to [0, 1]).

    Every text lies inside the figure: the title is wrapped to its width, and a row's title (rotated on the
    left edge) has each of its lines shortened in the middle to the row's height.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["image", *head_names, "mean of heads", "rollout"]
    rows = len(images)
    width, height = figure_size(rows, len(columns))
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    renderer = fig.canvas.get_renderer()
    h, w = images.shape[1:3]
    grey = images.shape[-1] == 1
    cell = CELL_INCHES - GAP_INCHES
    for r in range(rows):
        picture = images[r, ..., 0] if grey else images[r]
        panels = [None, *maps.heads[r], maps.head_mean[r], maps.rollout[r]]
        for c, heat in enumerate(panels):
            # Each map's box in inches from the bottom left: the title band above, the row titles to the left.
            left = LEFT_INCHES + c * CELL_INCHES + GAP_INCHES / 2
            bottom = MARGIN_INCHES + (rows - 1 - r) * CELL_INCHES + GAP_INCHES / 2
            ax = fig.add_axes((left * DPI / width, bottom * DPI / height, cell * DPI / width, cell * DPI / height))
            ax.imshow(picture, cmap="gray" if grey else None, vmin=0, vmax=255)
            if heat is not None:
                ax.imshow(normalise_map(upsample(heat, (h, w))), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(_shorten(renderer, columns[c], COLUMN_POINTS, cell * DPI), fontsize=COLUMN_POINTS)
            if c == 0:
                lines = [_shorten(renderer, line, ROW_POINTS, cell * DPI) for line in row_titles[r].split("\n")]
                ax.set_ylabel(_plain("\n".join(lines)), fontsize=ROW_POINTS)
    wrapped = _wrap(renderer, title, TITLE_POINTS, width - 2 * MARGIN_INCHES * DPI)
    fig.suptitle(wrapped, fontsize=TITLE_POINTS, y=1 - MARGIN_INCHES * DPI / height, va="top")
    return fig


def draw(
    out: str | Path, images: np.ndarray, maps: Maps, row_titles: Sequence[str], title: str, head_names: Sequence[str],
) -> None:
    """Writes `grid`'s figure to `out`, in the format of its suffix (vit_figures.figure_files)."""
    from vit_figures.figure_files import save

    save(grid(images, maps, row_titles, title, head_names), out, dpi=DPI)


def left_out(config: ViTConfig) -> str:
    """The prefix tokens the maps leave out, in words ("" for none): the maps are over the patches."""
    # pool="cls" reads the [CLS] row: its column is left out too, as always, without saying so.
    parts = ["the [CLS] token"] * (config.has_class_token and config.pool != "cls")
    parts += ["the distillation token"] * config.distilled
    if config.reg_tokens:
        parts.append(f"{config.reg_tokens} register{'s' * (config.reg_tokens != 1)}")
    if not parts:
        return ""
    return ("; " + " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)
            + " left out of the maps (over the patches only)")


def title_of(config: ViTConfig, layer: int, framework: str) -> str:
    depth = config.depth
    index = layer % depth
    if config.pool == "map":
        what = f"{readout(config)}, per head and averaged (after layer {depth - 1}); rollout over all {depth} layers " \
               "weighted by it"
    else:
        what = f"{readout(config)} in layer {index} (of 0..{depth - 1}); rollout over all {depth} layers"
        if config.pool == "mean" and not config.has_class_token:
            what += "; a mean-pooled model has no [CLS] token"
        elif config.pool == "mean":
            what += "; the [CLS] token beside mean pooling feeds nothing, so the maps follow the patch tokens"
    return f"{what}{left_out(config)} ({framework}; each map scaled to its own range)"


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
        out: the picture to write (its suffix picks the format: vit_figures.figure_files).
        weights: the weights file; config: its config.
        rows: a name per image.
        layer, head: the layer of the per-head maps and one head to show (negative: from the end), or every head.
        names, true: the class names, and the true class of each image where known.
    """
    from twins.predictions import softmax

    attention = attention_of(framework, weights, images)
    heads = None if head is None else [head % config.heads]
    maps = maps_of(attention, config, layer, heads)
    titles = row_titles(rows, softmax(attention.logits), names, true)
    head_names = [f"head {h}" for h in (range(config.heads) if heads is None else heads)]
    draw(out, images, maps, titles, title_of(config, layer, framework), head_names)
    return titles
