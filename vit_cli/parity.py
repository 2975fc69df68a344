"""`vit parity FILE`: one weights file through both twins, compared layer by layer (twins.parity).

Differences are reported as the maximum absolute difference scaled by the reference's (PyTorch's) maximum
magnitude; the command exits 1 past tolerance. Gradients are compared with the file's all-zero tensors (a fresh
file's head, biases and [CLS] token) replaced by random values drawn from --seed, and the command says so: with a
zero head every other gradient is zero in both twins and the comparison would prove nothing.
"""

from __future__ import annotations

import argparse

from vit_cli.flag_types import non_negative_int, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "parity",
        help="load one weights file into both twins and compare them layer by layer",
        description="Loads FILE into the JAX and the PyTorch model, runs a batch through both, prints a per-layer "
        "table of differences and exits 1 past tolerance. Gradients are compared with FILE's all-zero tensors (as a "
        "freshly initialised file's head) replaced by random values drawn from --seed, so that no gradient is "
        "trivially zero; it says so when it does.",
    )
    p.add_argument("file", help="a .safetensors weights file written by this project")
    p.add_argument("--images", nargs="+", metavar="IMAGE", help="image files to run (default: a random batch)")
    p.add_argument("--batch-size", type=positive_int, default=2, help="size of the random batch (default 2)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random batch, the labels and the values that replace all-zero tensors (default 0)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="precision of both twins")
    p.add_argument("--no-gradients", action="store_true", help="compare the forward pass only")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from twins.differences import format_table
    from twins.parity import normalised_images, random_images, run_parity
    from vit_spec import load_weights

    config, state_dict = load_weights(args.file)
    images = normalised_images(config, args.images) if args.images else random_images(config, args.batch_size, args.seed)
    report = run_parity(config, state_dict, images, args.dtype, args.seed, gradients=not args.no_gradients)
    print(format_table(report.forward, f"forward, {args.dtype}, batch {images.shape[0]} ({args.file})"))
    if report.gradients:
        print()
        title = f"gradients of the cross-entropy, {args.dtype}"
        if report.perturbed:
            print(_perturbed_note(report.perturbed, len(state_dict), args.seed))
            title += f", {len(report.perturbed)} all-zero tensor(s) replaced by random values (seed {args.seed})"
        print(format_table(report.gradients, title))
    print()
    print("PASS: the twins agree" if report.ok else "FAIL: the twins differ past tolerance")
    return 0 if report.ok else 1


def _perturbed_note(names: tuple[str, ...], total: int, seed: int) -> str:
    """One line: which tensors are all zeros, why that matters, and what was done instead."""
    first = ("head.weight", "head.bias", "cls_token")
    names = tuple(n for n in first if n in names) + tuple(n for n in names if n not in first)
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    why = (
        "a zero head (as initialised) makes every gradient but the head's zero"
        if "head.weight" in names
        else "a zero tensor hides a mistake in how it enters the model"
    )
    return (
        f"note: {len(names)} of {total} tensors are all zeros in this file ({shown}); {why}, "
        f"so the gradients are compared with them replaced by random values (seed {seed})"
    )
