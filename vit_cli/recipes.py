"""`vit recipes`: train a grid of runs (recipe x epochs x position embedding x pooling) and print their table
(train.recipe_grid).

Each cell is an ordinary `vit train` run in its own workdir; a finished run is read back, not retrained,
and an interrupted one resumes. So the table can be built by separate (parallel) `vit train` runs with
the printed commands, then printed by this command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vit_cli.flag_types import non_negative_int, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "recipes",
        help="train recipes for several budgets (and position embeddings, poolings) and print one table",
        description="Trains each combination of --recipes, --epochs, --pos-embed and --pool (a run per "
        "combination, each in ROOT/NAME; finished runs are read back, interrupted ones resumed) and prints "
        "their validation and test accuracy as a Markdown table, with the command of each run.",
    )
    from train.recipes import RECIPES  # framework-free, cheap to import

    p.add_argument("--recipes", nargs="+", default=["default", "tutorial"], choices=sorted(RECIPES), metavar="RECIPE",
                   help=f"of {', '.join(sorted(RECIPES))} (finetune is meant for `vit train --init-from`: here it "
                   "trains from scratch) (default: default tutorial)")
    p.add_argument("--epochs", nargs="+", type=positive_int, default=[1, 2, 5], metavar="N", help="(default: 1 2 5)")
    p.add_argument("--pos-embed", nargs="+", choices=("learned", "sincos2d"), help="(default: each recipe's own)")
    p.add_argument("--pool", nargs="+", choices=("cls", "mean"), help="(default: each recipe's own)")
    p.add_argument("--model", default="tutorial", help="(default: tutorial)")
    p.add_argument("--dataset", default="cifar10", help="(default: cifar10)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="(default: 0)")
    p.add_argument("--batch-size", type=positive_int, help="(default: the recipe's, 128)")
    p.add_argument("--root", default="runs/recipes", help="one workdir per run under this folder (default: runs/recipes)")
    p.add_argument("--data-dir", help="tfds data directory (default: $TFDS_DATA_DIR)")
    p.add_argument("--no-train", dest="train", action="store_false",
                   help="only read back finished runs (the others are listed as missing, with their commands)")
    p.add_argument("--json", metavar="FILE", help="also write the rows here")
    p.set_defaults(run=run_recipes)


def run_recipes(args: argparse.Namespace) -> int:
    from train.recipe_grid import format_table, run_grid

    rows = run_grid(args.recipes, args.epochs, args.pos_embed, args.pool, model=args.model, dataset=args.dataset,
                    seed=args.seed, batch_size=args.batch_size, root=args.root, data_dir=args.data_dir, train=args.train)
    print(format_table(rows, bool(args.pos_embed or args.pool)))
    if args.json:
        from vit_spec import atomic_path

        with atomic_path(args.json) as tmp:
            Path(tmp).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r.get("test") is not None for r in rows) else 1
