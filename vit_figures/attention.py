"""`vit attention`: where a trained ViT looks, per head, averaged over heads, and rolled out over layers."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from vit_spec import ViTConfig
from vit_spec.attention_maps import normalise_map, pooled_relevance, rollout, upsample
from vit_spec.image_files import fit_pixels, normalise, read_images

CELL_INCHES = 1.6  # one map
TITLE_INCHES = 0.8  # the figure's title and the column titles
DPI = 100


@dataclasses.dataclass
class Attention:
    """A twin's view of a batch: logits (B, classes) and per layer the attention probabilities (B, heads, T, T)."""

    logits: np.ndarray
    layers: list[np.ndarray]


def jax_attention(path: str | Path, images: np.ndarray, batch_size: int = 64) -> Attention:
    """The JAX twin's logits and attention on (N, H, W, C) uint8 images, in float32 with exact matmuls."""
    import jax

    from jax_vit import ViT, load
    from vit_cli.parity import jax_precision

    config, params = load(path)
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
    model = ViT(config)

    @jax.jit
    def forward(params, x):
        logits, inter = model.apply({"params": params}, x, return_intermediates=True)
        return logits, inter["attn"]

    logits, layers = [], []
    with jax_precision("float32"):
        for i in range(0, len(images), batch_size):
            out, attn = forward(params, normalise(images[i: i + batch_size], config))
            logits.append(np.asarray(out))
            layers.append([np.asarray(a) for a in attn])
    return Attention(np.concatenate(logits), [np.concatenate(per) for per in zip(*layers)])


def torch_attention(path: str | Path, images: np.ndarray, batch_size: int = 64) -> Attention:
    """The PyTorch twin's logits and attention on (N, H, W, C) uint8 images, in float32."""
    import torch

    from torch_vit import load

    model = load(path).float().eval()
    logits, layers = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(normalise(images[i: i + batch_size], model.config)).permute(0, 3, 1, 2)
            out, inter = model(x, return_intermediates=True)
            logits.append(out.numpy())
            layers.append([a.numpy() for a in inter["attn"]])
    return Attention(np.concatenate(logits), [np.concatenate(per) for per in zip(*layers)])


def attention_of(framework: str, path: str | Path, images: np.ndarray) -> Attention:
    return (jax_attention if framework == "jax" else torch_attention)(path, images)


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


def _dataset_images(args: argparse.Namespace, config: ViTConfig) -> tuple[np.ndarray, list[int], list[str], list[str]]:
    """(images, true labels, class names, row names) of --index in --dataset's --split."""
    from train import data as data_lib

    sources = data_lib.open_sources(args.dataset, data_lib.resolve_data_dir(args.data_dir))
    if args.split not in sources:
        raise data_lib.DatasetError(f"{args.dataset} has no {args.split!r} split (it has {sorted(sources)})")
    source = sources[args.split]
    size = len(source)
    bad = [i for i in args.index if not 0 <= i < size]
    if bad:
        raise ValueError(f"--index {bad} out of range: {args.dataset} {args.split} has examples 0..{size - 1}")
    pixels, labels = data_lib.read_records(source, args.index)
    names = data_lib.label_names(source)
    images = np.stack([fit_pixels(p, config) for p in pixels])
    return images, [int(x) for x in labels], names, [f"{args.dataset} {args.split} #{i}" for i in args.index]


def _run(args: argparse.Namespace) -> int:
    from vit_cli.predict import softmax
    from vit_spec import WeightsError, load_weights

    config, _ = load_weights(args.weights)
    if not -config.depth <= args.layer < config.depth:
        raise ValueError(f"--layer {args.layer} is out of range: the model has layers 0..{config.depth - 1} (negative: from the end)")
    if args.head is not None and not 0 <= args.head < config.heads:
        raise ValueError(f"--head {args.head} is out of range: the model has heads 0..{config.heads - 1}")
    if bool(args.images) == (args.dataset is not None):
        raise ValueError("give image files, or --dataset NAME --index N ..., not both and not neither")
    if args.dataset is not None and not args.index:
        raise ValueError(f"--dataset {args.dataset} needs --index N ... (which examples to show)")
    if not config.num_classes:
        raise WeightsError(f"{args.weights} has no classification head: there is no prediction to show beside its maps")
    true, names = None, None
    if args.dataset is not None:
        images, true, names, rows = _dataset_images(args, config)
    else:
        images, read, errors = read_images(args.images, config)
        for error in errors:
            print(f"vit attention: skipped {error}", file=sys.stderr)
        if not read:
            raise ValueError("none of the image files could be read")
        rows = [Path(p).name for p in read]
    attention = attention_of(args.framework, args.weights, images)
    heads = None if args.head is None else [args.head]
    maps = maps_of(attention, config, args.layer, heads)
    probs = softmax(attention.logits)
    row_titles = []
    for i, name in enumerate(rows):
        k = int(probs[i].argmax())
        label = names[k] if names and k < len(names) else f"class {k}"
        line = f"{name}\npredicted {label} ({probs[i, k]:.0%})"
        if true is not None:
            line += f"\ntrue {names[true[i]] if names else true[i]}"
        row_titles.append(line)
        print(line.replace("\n", ": ", 1).replace("\n", ", "))
    head_names = [f"head {h}" for h in (range(config.heads) if heads is None else heads)]
    draw(args.out, images, maps, row_titles, title_of(config, args.layer, args.framework), head_names)
    print(f"wrote {args.out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "attention",
        help="draw where a trained ViT looks: per-head attention, their mean and attention rollout",
        description="For each image: the [CLS] token's attention to the patches in one layer, per head and averaged "
        "over heads, and attention rollout over all layers (Abnar and Zuidema 2020: head-averaged attention plus "
        "the identity, rows renormalised, multiplied over layers), each upsampled and overlaid on the image. A "
        "mean-pooled model has no [CLS] token: its maps show the mean attention each patch receives.",
    )
    p.add_argument("weights", help="a .safetensors weights file of this project (as `vit train` and `vit convert` write)")
    p.add_argument("images", nargs="*", help="PNG/JPEG files (centre-cropped and resized to the model's image size)")
    p.add_argument("--out", required=True, metavar="PNG", help="the grid goes here: one row per image")
    p.add_argument("--layer", type=int, default=-1, help="the layer of the per-head maps, from 0; negative counts from the end (default: -1, the last)")
    p.add_argument("--head", type=int, help="show this head only (default: every head)")
    p.add_argument("--framework", default="jax", choices=("jax", "torch"), help="which twin computes the attention (default: jax)")
    p.add_argument("--dataset", help="take images from this tfds dataset instead of files (e.g. cifar10), with --index")
    p.add_argument("--index", type=int, nargs="+", default=[], metavar="N", help="the dataset examples to show")
    p.add_argument("--split", default="test", help="the dataset's split (default: test)")
    p.add_argument("--data-dir", help="tfds data directory (default: $TFDS_DATA_DIR, else tfds's default)")
    p.set_defaults(run=_run)
