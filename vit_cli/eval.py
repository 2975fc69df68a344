"""`vit eval FILE`: the accuracy of a weights file on a dataset split, under JAX, PyTorch or both
(train.evaluation)."""

from __future__ import annotations

import argparse

from vit_cli.flag_types import float_in, non_negative_int, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="print the test accuracy of a weights file, under JAX or PyTorch",
        description="Scores a .safetensors weights file on the test split. --framework both scores it with "
        "both models and counts the predictions on which they disagree.",
    )
    p.add_argument("file", help="a .safetensors weights file of this project (e.g. WORKDIR/model.safetensors)")
    p.add_argument("--framework", default="jax", choices=("jax", "torch", "both"), help="(default: jax)")
    p.add_argument("--dataset", default="cifar10", help="tfds dataset, or folder:PATH (an image folder, as `vit train` "
                   "reads it) (default: cifar10)")
    p.add_argument("--data-dir", help="tfds data directory (default: $TFDS_DATA_DIR, else tfds's default)")
    p.add_argument("--split", default="test", help="split to score (default: test)")
    p.add_argument("--batch-size", type=positive_int, default=500, help="(default: 500)")
    p.add_argument("--crop-pct", type=float_in(0.0, 1.0, low_open=True), help="folder:PATH: the evaluation crop's "
                   "share of the resized image, as `vit train --crop-pct` (default: 1, the whole centre square)")
    p.add_argument("--workers", type=non_negative_int, default=0, help="folder:PATH: processes decoding images (default: 0)")
    p.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from train import evaluation

    split = evaluation.weights_split(args.file, args.dataset, args.data_dir, args.split, args.crop_pct, args.workers)
    frameworks = ("jax", "torch") if args.framework == "both" else (args.framework,)
    logits = {}
    for name in frameworks:
        logits[name] = evaluation.logits(name, args.file, split, args.batch_size)
        accuracy = float((logits[name].argmax(-1) == split.labels).mean())
        print(f"{name}: {args.dataset} {args.split} accuracy {accuracy:.2%} ({len(split)} images)")
    if len(frameworks) == 2:
        differ, real = evaluation.disagreements(logits["jax"], logits["torch"])
        print(f"jax vs torch: {differ} differing predictions, {real} of them not near-ties")
        return 1 if real else 0
    return 0
