"""`vit predict WEIGHTS IMAGE...`: the top-k classes of image files, with probabilities, under either twin
(twins.predictions).

WEIGHTS is a weights file or the workdir of a finished `vit train` run (its model.safetensors). Each file is
read as the model sees it (vit_spec.image_files: centre crop to its aspect, bicubic resize to its
image size, its channels, its image_mean/image_std). Class names come from --labels, else from the weight
file's metadata (the trainers record the dataset's), else "class N".

Exit codes: 0 when every file was classified; 1 when any file could not be read (each is named, the others
are still classified, and it is 1 even when none could be read); 2 for a usage error or an unusable weights
or labels file.
"""

from __future__ import annotations

import argparse
import json
import sys

from vit_cli.flag_types import positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="classify image files (PNG, JPEG, ...) with a weights file: top-k classes and probabilities",
        description="Reads each image as the model sees it (centre crop to its aspect, resize to its image size, "
        "its normalisation) and prints its most probable classes. Class names: --labels, else those the weights "
        "file records, else 'class N'. A file that cannot be read is named on stderr (in the JSON with --json) "
        "and the others are still classified; the exit code is then 1.",
    )
    p.add_argument("weights", help="a .safetensors file of this project, or a finished `vit train` workdir (its "
                   "model.safetensors)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="classes shown per image (default: 5, at most the model's)")
    p.add_argument("--framework", choices=("jax", "torch"), default="jax", help="the twin that runs (default: jax)")
    p.add_argument("--labels", metavar="FILE|cifar10|cifar100|imagenet",
                   help="class names: a text file with one per line, or a built-in list (default: the weights file's)")
    p.add_argument("--json", action="store_true", help="print one JSON list: per file, its predictions or its error")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from twins.predictions import classify_files, format_predictions

    results = classify_files(args.weights, args.images, args.framework, args.top_k, args.labels)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            if "error" in result:
                print(f"vit predict: {result['error']}", file=sys.stderr)
            else:
                print(format_predictions(result["file"], result["predictions"]))
    return 1 if any("error" in r for r in results) else 0
