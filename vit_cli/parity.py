"""`vit parity FILE`: one weights file through both twins, compared layer by layer (twins.parity).

Differences are reported as the maximum absolute difference scaled by the reference's (PyTorch's) maximum
magnitude; the command exits 1 past tolerance.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "parity",
        help="load one weights file into both twins and compare them layer by layer",
        description="Loads FILE into the JAX and the PyTorch model, runs a batch through both, prints a per-layer "
        "table of differences and exits 1 past tolerance.",
    )
    p.add_argument("file", help="a .safetensors weights file written by this project")
    p.add_argument("--images", nargs="+", metavar="IMAGE", help="image files to run (default: a random batch)")
    p.add_argument("--batch-size", type=int, default=2, help="size of the random batch (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="precision of both twins")
    p.add_argument("--no-gradients", action="store_true", help="compare the forward pass only")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from twins.differences import format_table
    from twins.parity import normalised_images, random_images, run_parity
    from vit_spec import load_weights

    config, state_dict = load_weights(args.file)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    images = normalised_images(config, args.images) if args.images else random_images(config, args.batch_size, args.seed)
    report = run_parity(config, state_dict, images, args.dtype, args.seed, gradients=not args.no_gradients)
    print(format_table(report.forward, f"forward, {args.dtype}, batch {images.shape[0]} ({args.file})"))
    if report.gradients:
        print()
        print(format_table(report.gradients, f"gradients of the cross-entropy, {args.dtype}"))
    print()
    print("PASS: the twins agree" if report.ok else "FAIL: the twins differ past tolerance")
    return 0 if report.ok else 1
