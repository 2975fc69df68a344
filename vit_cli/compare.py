"""`vit compare`: both twins trained for the same budget from the same weights, side by side
(twins.training_runs): images/s, final train loss, accuracies and the largest difference of the final
parameters."""

from __future__ import annotations

import argparse
from pathlib import Path

from vit_cli.flag_types import non_negative_int, positive_float, positive_int
from vit_cli.output_files import add_overwrite_flag, check_output


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="train the JAX and the PyTorch twin for the same budget from the same weights and compare them",
        description="Runs `vit train` with --framework jax and --framework torch (same recipe, seed, data order and "
        "initial weights; each framework its own augmentation randomness) and prints images/s, final train loss, "
        "validation and test accuracy and the largest difference of the final parameters.",
    )
    p.add_argument("--model", default="tutorial", help="model variant (default: tutorial)")
    p.add_argument("--recipe", default="default", help="'default' or 'tutorial' (default: default)")
    p.add_argument("--steps", type=positive_int, help="train this many steps")
    p.add_argument("--epochs", type=positive_int, help="or this many epochs (default: --steps 300)")
    p.add_argument("--batch-size", type=positive_int, help="(default: the recipe's, 128)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default: the recipe's)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-dir", help="tfds data directory (default: $TFDS_DATA_DIR, else tfds's default)")
    p.add_argument("--validation", type=non_negative_int, default=5000, metavar="N", help="training examples held out (default: 5000)")
    p.add_argument("--workdir", help="the two runs go to WORKDIR/jax and WORKDIR/torch (default: runs/compare-DATASET-RECIPE-MODEL)")
    p.add_argument("--log-every", type=positive_int, default=10, help="steps between train records, the curves' points (default: 10)")
    p.add_argument("--out", metavar="PNG", help="draw both runs' loss and accuracy curves into this PNG")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    add_overwrite_flag(p, "--out")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from train import data as data_lib
    from train.run import check_length
    from twins import training_runs

    check_length(args.steps, args.epochs)  # before the data is read
    if args.out:  # before two training runs, not after
        from vit_figures.figure_files import figure_format

        check_output(args.out, args.overwrite, "--out")
        figure_format(args.out, "--out")

    if args.steps is None and args.epochs is None:
        args.steps = 300
    base = Path(args.workdir or Path("runs") / f"compare-{args.dataset}-{args.recipe}-{args.model.replace('/', '_')}")
    dataset = data_lib.load(args.dataset, data_lib.resolve_data_dir(args.data_dir))
    jax_side, torch_side, steps = training_runs.compare_runs(
        base, dataset, model=args.model, recipe=args.recipe, steps=args.steps, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, dataset=args.dataset, validation=args.validation,
        progress=args.progress, log_every=args.log_every,
    )
    budget = f"{args.recipe} recipe, {args.model}, {steps} steps, seed {args.seed}, the same initial weights"
    print(training_runs.format_table(jax_side, torch_side, budget))
    if args.out:
        from vit_figures import curves

        curves.save(curves.draw_sides([jax_side, torch_side]), args.out)
        print(f"curves in {args.out}")
    return 0
