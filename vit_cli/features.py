"""`vit features WEIGHTS IMAGE... --out FILE.npz`: what a ViT sees in image files, as numbers: its final tokens split
into the prefix tokens ([CLS], distillation, registers) and the patch tokens, and the pooled feature
(twins.predictions.features_of_files: the twin's forward_features and forward_head(pre_logits=True)).

WEIGHTS is a weights file or the workdir of a finished `vit train` run (its model.safetensors); a model without a
head (num_classes 0) works too. The .npz holds, per readable image in the given order: prefix_tokens (N, P, D),
patch_tokens (N, grid_h * grid_w, D, row-major), pooled (N, features_dim; left out for a pool="none" model, which
pools nothing), files (the image paths), prefix_names (P: "cls", "dist", "reg0", ...). An existing --out is
replaced only with --overwrite.

Exit codes: 0 when every image was read; 1 when any file could not be read (each is named, the others are still
written; with none readable nothing is written); 2 for a usage error or an unusable weights file.
"""

from __future__ import annotations

import argparse
import sys

from vit_cli.flag_types import positive_int
from vit_cli.output_files import add_overwrite_flag, check_output


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from twins.predictions import features_of_files
    from vit_spec import atomic_path
    from vit_spec.tokens import prefix_names

    check_output(args.out, args.overwrite, "--out")
    result = features_of_files(args.weights, args.images, args.framework, args.batch_size)
    for error in result["errors"]:
        print(f"vit features: skipped {error}", file=sys.stderr)
    if not result["files"]:
        print("vit features: none of the image files could be read: nothing written", file=sys.stderr)
        return 1
    config = result["config"]
    arrays = {"prefix_tokens": result["prefix_tokens"], "patch_tokens": result["patch_tokens"]}
    if result["pooled"] is not None:
        arrays["pooled"] = result["pooled"]
    arrays = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
    names = prefix_names(config)
    with atomic_path(args.out) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays, files=np.array(result["files"], dtype=str), prefix_names=np.array(names, dtype=str))
    gh, gw = config.grid
    print(f"{len(result['files'])} image{'s' * (len(result['files']) != 1)} ({args.framework})")
    print(f"prefix_tokens {arrays['prefix_tokens'].shape}: {', '.join(names) or 'none'}")
    print(f"patch_tokens {arrays['patch_tokens'].shape}: a {gh}x{gw} grid, row-major")
    if "pooled" in arrays:
        print(f"pooled {arrays['pooled'].shape}: what the head reads (pool={config.pool!r})")
    else:
        print("pooled: left out, a pool='none' model pools nothing")
    print(f"wrote {args.out}")
    return 1 if result["errors"] else 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "features",
        help="write a ViT's features of image files to an .npz: prefix and patch tokens, pooled feature",
        description="Runs the model on each image (read as `vit predict` reads it) and writes its final tokens, split "
        "into prefix tokens ([CLS], distillation, registers) and patch tokens, and its pooled feature (what the head "
        "reads) to one .npz. A file that cannot be read is named and skipped, the others are written; the exit code "
        "is then 1.",
    )
    p.add_argument("weights", help="a .safetensors file of this project, or a finished `vit train` workdir (its "
                   "model.safetensors)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="the .npz to write")
    add_overwrite_flag(p, "--out")
    p.add_argument("--framework", choices=("jax", "torch"), default="jax", help="the twin that runs (default: jax)")
    p.add_argument("--batch-size", type=positive_int, default=64, metavar="N", help="images per forward pass (default: 64)")
    p.set_defaults(run=_run)
