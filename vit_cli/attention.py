"""`vit attention`: where a trained ViT looks, per head, averaged over heads, and rolled out over layers
(vit_figures.attention)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from vit_figures.attention import attention_figure
    from vit_spec import WeightsError, load_weights
    from vit_spec.image_files import fit_pixels, read_images

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
        from train.data import read_examples

        pixels, labels, names = read_examples(args.dataset, args.data_dir, args.split, args.index)
        images = np.stack([fit_pixels(p, config) for p in pixels])
        true = [int(x) for x in labels]
        rows = [f"{args.dataset} {args.split} #{i}" for i in args.index]
    else:
        images, read, errors = read_images(args.images, config)
        for error in errors:
            print(f"vit attention: skipped {error}", file=sys.stderr)
        if not read:
            raise ValueError("none of the image files could be read")
        rows = [Path(p).name for p in read]
    titles = attention_figure(args.out, args.weights, config, images, rows, args.framework, args.layer, args.head,
                              names, true)
    for line in titles:
        print(line.replace("\n", ": ", 1).replace("\n", ", "))
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
