"""`vit attention`: where a trained ViT looks, per head, averaged over heads, and rolled out over layers
(vit_figures.attention).

WEIGHTS is a weights file or the workdir of a finished `vit train` run (its model.safetensors). Rows are
titled with the predicted class, named as `vit predict` names it (twins.predictions.class_names: --labels,
else the weights file's names, else "class N"). The picture's format is its --out suffix (.png, .jpg, .pdf,
.svg, ...); an existing --out is replaced only with --overwrite.

Exit codes: 0 when every image was drawn; 1 when any image file could not be read (each is named, the
others are still drawn); 2 for a usage error, an unusable weights file, or when no image file could be read
(nothing is drawn).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vit_cli.flag_types import non_negative_int
from vit_cli.output_files import add_overwrite_flag, check_output


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from twins.predictions import class_names, read_files
    from vit_figures.attention import attention_figure
    from vit_figures.figure_files import figure_format
    from vit_spec import WeightsError, load_weights, resolve_weights_path
    from vit_spec.image_files import fit_pixels

    if bool(args.images) == (args.dataset is not None):
        raise ValueError("give image files, or --dataset NAME --index N ..., not both and not neither")
    if args.dataset is not None and not args.index:
        raise ValueError(f"--dataset {args.dataset} needs --index N ... (which examples to show)")
    check_output(args.out, args.overwrite, "--out")
    figure_format(args.out, "--out")
    weights = resolve_weights_path(args.weights)
    config, _ = load_weights(weights)
    if args.layer is not None and config.pool == "map":
        raise ValueError(f"--layer {args.layer}: a MAP-pooled model's maps are its pooling attention (the MAP head's, "
                         "after the last layer), not one layer's: leave --layer out")
    args.layer = -1 if args.layer is None else args.layer
    if not -config.depth <= args.layer < config.depth:
        raise ValueError(f"--layer {args.layer} is out of range: the model has layers 0..{config.depth - 1} (negative: from the end)")
    if args.head is not None and not -config.heads <= args.head < config.heads:
        raise ValueError(f"--head {args.head} is out of range: the model has heads 0..{config.heads - 1} (negative: from the end)")
    if not config.num_classes:
        raise WeightsError(f"{weights} has no classification head: there is no prediction to show beside its maps")
    true, names, skipped = None, None, 0
    if args.dataset is not None:
        from train import folder_dataset
        from train.data import read_examples

        if folder_dataset.is_folder(args.dataset):
            pixels, labels, names = folder_dataset.read_examples(args.dataset, args.split, args.index)
        else:
            pixels, labels, names = read_examples(args.dataset, args.data_dir, args.split, args.index)
        if args.labels is not None:
            names = class_names(weights, config.num_classes, args.labels)
        images = np.stack([fit_pixels(p, config) for p in pixels])
        true = [int(x) for x in labels]
        rows = [f"{args.dataset} {args.split} #{i}" for i in args.index]
    else:
        names = class_names(weights, config.num_classes, args.labels)
        read = read_files(args.images, config)
        errors = [r for r in read if isinstance(r, str)]
        for error in errors:
            print(f"vit attention: skipped {error}", file=sys.stderr)
        if len(errors) == len(read):
            raise ValueError("none of the image files could be read")
        images = np.stack([r for r in read if not isinstance(r, str)])
        rows = [Path(p).name for p, r in zip(args.images, read) if not isinstance(r, str)]
        skipped = len(errors)
    titles = attention_figure(args.out, weights, config, images, rows, args.framework, args.layer, args.head,
                              names, true)
    for line in titles:
        print(line.replace("\n", ": ", 1).replace("\n", ", "))
    print(f"wrote {args.out}")
    return 1 if skipped else 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "attention",
        help="draw where a trained ViT looks: per-head attention, their mean and attention rollout",
        description="For each image: the [CLS] token's attention to the patches in one layer, per head and averaged "
        "over heads, and attention rollout over all layers (Abnar and Zuidema 2020: head-averaged attention plus "
        "the identity, rows renormalised, multiplied over layers), each upsampled and overlaid on the image. Maps "
        "cover the patches only (registers and the distillation token are left out, and the title says so). A "
        "mean-pooled model's maps show the mean attention each patch receives from the patch tokens; a MAP-pooled "
        "model's per-head maps are its pooling attention (the MAP head's), its rollout weighted by it. An image "
        "file that cannot be read is named and skipped, the others are drawn, and the exit code is then 1.",
    )
    p.add_argument("weights", help="a .safetensors weights file of this project (as `vit train` and `vit convert` "
                   "write), or a finished `vit train` workdir (its model.safetensors)")
    p.add_argument("images", nargs="*", help="PNG/JPEG files (centre-cropped and resized to the model's image size)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the grid goes here, one row per image; its suffix picks the format (.png, .jpg, .pdf, .svg, ...)")
    add_overwrite_flag(p, "--out")
    p.add_argument("--layer", type=int, default=None, help="the layer of the per-head maps, from 0; negative counts from "
                   "the end (default: -1, the last; a MAP-pooled model's maps are its pooling attention, no layer's)")
    p.add_argument("--head", type=int, help="show this head only, from 0; negative counts from the end (default: every head)")
    p.add_argument("--framework", default="jax", choices=("jax", "torch"), help="which twin computes the attention (default: jax)")
    p.add_argument("--labels", metavar="FILE|cifar10|cifar100|imagenet",
                   help="class names, as for `vit predict`: a text file with one per line, or a built-in list "
                   "(default: the dataset's with --dataset, else the weights file's, else 'class N')")
    p.add_argument("--dataset", help="take images from this tfds dataset instead of files (e.g. cifar10), or from an "
                   "image folder (folder:PATH, in the order `vit train` reads it), with --index")
    p.add_argument("--index", type=non_negative_int, nargs="+", default=[], metavar="N", help="the dataset examples to show")
    p.add_argument("--split", default="test", help="the dataset's split (default: test)")
    p.add_argument("--data-dir", help="tfds data directory (default: $TFDS_DATA_DIR, else tfds's default)")
    p.set_defaults(run=_run)
