"""`vit recipes`: train a grid of runs (recipe x epochs x position embedding x pooling) and print their table.

Each cell is an ordinary `vit train` run in its own workdir; a finished run is read back, not retrained,
and an interrupted one resumes. So the table can be built by separate (parallel) `vit train` runs with
the printed commands, then printed by this command.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
from pathlib import Path
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "recipes",
        help="train recipes for several budgets (and position embeddings, poolings) and print one table",
        description="Trains each combination of --recipes, --epochs, --pos-embed and --pool (a run per "
        "combination, each in ROOT/NAME; finished runs are read back, interrupted ones resumed) and prints "
        "their validation and test accuracy as a Markdown table, with the command of each run.",
    )
    p.add_argument("--recipes", nargs="+", default=["default", "tutorial"], metavar="RECIPE", help="(default: default tutorial)")
    p.add_argument("--epochs", nargs="+", type=int, default=[1, 2, 5], metavar="N", help="(default: 1 2 5)")
    p.add_argument("--pos-embed", nargs="+", choices=("learned", "sincos2d"), help="(default: each recipe's own)")
    p.add_argument("--pool", nargs="+", choices=("cls", "mean"), help="(default: each recipe's own)")
    p.add_argument("--model", default="tutorial", help="(default: tutorial)")
    p.add_argument("--dataset", default="cifar10", help="(default: cifar10)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--batch-size", type=int, help="(default: the recipe's, 128)")
    p.add_argument("--root", default="runs/recipes", help="one workdir per run under this folder (default: runs/recipes)")
    p.add_argument("--data-dir", help="tfds data directory (default: $TFDS_DATA_DIR)")
    p.add_argument("--no-train", dest="train", action="store_false",
                   help="only read back finished runs (the others are listed as missing, with their commands)")
    p.add_argument("--json", metavar="FILE", help="also write the rows here")
    p.set_defaults(run=run_recipes)


def run_name(recipe: str, model: str, dataset: str, epochs: int, pos_embed: str, pool: str, seed: int) -> str:
    return f"{dataset}-{recipe}-{model.replace('/', '_')}-{epochs}ep-{pos_embed}-{pool}-seed{seed}"


def own_architecture(recipe: str, model: str) -> tuple[str, str]:
    """(position embedding, pooling) of `model` as `recipe` builds it without --pos-embed and --pool."""
    from train.recipes import get_recipe
    from vit_spec import ViTConfig

    config = ViTConfig.from_variant(model, **dict(get_recipe(recipe).architecture))
    return config.pos_embed, config.pool


def train_command(args: argparse.Namespace, recipe: str, epochs: int, pos_embed: str, pool: str, workdir: Path) -> str:
    words = ["vit", "train", "--recipe", recipe, "--model", args.model, "--epochs", str(epochs)]
    if args.dataset != "cifar10":
        words += ["--dataset", args.dataset]
    own_pos_embed, own_pool = own_architecture(recipe, args.model)
    if pos_embed != own_pos_embed:
        words += ["--pos-embed", pos_embed]
    if pool != own_pool:
        words += ["--pool", pool]
    if args.batch_size:
        words += ["--batch-size", str(args.batch_size)]
    words += ["--seed", str(args.seed), "--workdir", str(workdir)]
    return shlex.join(words)


def finished(workdir: Path) -> dict[str, Any] | None:
    """{"validation", "test", "steps", ...} of a run that reached its last step, from its files; else None."""
    config_path, metrics_path = workdir / "config.json", workdir / "metrics.jsonl"
    if not (config_path.is_file() and metrics_path.is_file() and (workdir / "model.safetensors").is_file()):
        return None
    config = json.loads(config_path.read_text())
    total = config["total_steps"]
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    final = {r.get("split", "test"): r for r in records if r.get("kind") == "eval" and r["step"] == total}
    if "test" not in final:
        return None
    speeds = [r["images_per_s"] for r in records if r.get("kind") == "train" and r.get("images_per_s")]
    return {
        "steps": total,
        "validation": final.get("validation", {}).get("accuracy"),
        "test": final["test"]["accuracy"],
        "images_per_s": sorted(speeds)[len(speeds) // 2] if speeds else None,
        "regularisation": config.get("regularisation"),
    }


def run_recipes(args: argparse.Namespace) -> int:
    from train.trainer import TrainOptions, train

    root = Path(args.root)
    rows = []
    cells = [
        (recipe, epochs, pos_embed, pool)
        for recipe in args.recipes
        for epochs, pos_embed, pool in itertools.product(
            args.epochs, args.pos_embed or [own_architecture(recipe, args.model)[0]],
            args.pool or [own_architecture(recipe, args.model)[1]])
    ]
    for recipe, epochs, pos_embed, pool in cells:
        workdir = root / run_name(recipe, args.model, args.dataset, epochs, pos_embed, pool, args.seed)
        command = train_command(args, recipe, epochs, pos_embed, pool, workdir)
        result = finished(workdir)
        if result is None and args.train:
            print(f"$ {command}", flush=True)
            train(TrainOptions(
                workdir=str(workdir), model=args.model, recipe=recipe, epochs=epochs, batch_size=args.batch_size,
                seed=args.seed, dataset=args.dataset, data_dir=args.data_dir,
                pos_embed=pos_embed, pool=pool,
            ))
            result = finished(workdir)
        rows.append({"recipe": recipe, "epochs": epochs, "pos_embed": pos_embed, "pool": pool,
                     "command": command, **(result or {})})
    print(format_table(rows, bool(args.pos_embed or args.pool)))
    if args.json:
        from vit_spec import atomic_path

        with atomic_path(args.json) as tmp:
            Path(tmp).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r.get("test") is not None for r in rows) else 1


def format_table(rows: list[dict[str, Any]], architecture: bool) -> str:
    pct = lambda v: "missing" if v is None else f"{100 * v:.1f}%"
    head = ["recipe"] + (["position embedding", "pooling"] if architecture else []) + [
        "epochs", "validation accuracy", "test accuracy", "command"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for r in rows:
        cells = [f"`{r['recipe']}`"] + ([r["pos_embed"], r["pool"]] if architecture else []) + [
            str(r["epochs"]), pct(r.get("validation")), pct(r.get("test")), f"`{r['command']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
