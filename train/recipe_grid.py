"""`vit recipes`: a grid of runs (recipe x epochs x position embedding x pooling), trained, and their table.

Each cell is an ordinary `vit train` run in its own workdir; a finished run is read back, not retrained,
and an interrupted one resumes. So the table can be built by separate (parallel) `vit train` runs with
the printed commands, then printed by this command.
"""

from __future__ import annotations

import itertools
import json
import shlex
from pathlib import Path
from typing import Any, Callable, Sequence


def run_name(recipe: str, model: str, dataset: str, epochs: int, pos_embed: str, pool: str, seed: int) -> str:
    return f"{dataset}-{recipe}-{model.replace('/', '_')}-{epochs}ep-{pos_embed}-{pool}-seed{seed}"


def own_architecture(recipe: str, model: str) -> tuple[str, str]:
    """(position embedding, pooling) of `model` as `recipe` builds it without --pos-embed and --pool."""
    from train.recipes import get_recipe
    from vit_spec import ViTConfig

    config = ViTConfig.from_variant(model, **dict(get_recipe(recipe).architecture))
    return config.pos_embed, config.pool


def train_command(recipe: str, model: str, dataset: str, epochs: int, pos_embed: str, pool: str, seed: int,
                  batch_size: int | None, workdir: Path) -> str:
    """The `vit train` command of one cell of the grid."""
    words = ["vit", "train", "--recipe", recipe, "--model", model, "--epochs", str(epochs)]
    if dataset != "cifar10":
        words += ["--dataset", dataset]
    own_pos_embed, own_pool = own_architecture(recipe, model)
    if pos_embed != own_pos_embed:
        words += ["--pos-embed", pos_embed]
    if pool != own_pool:
        words += ["--pool", pool]
    if batch_size:
        words += ["--batch-size", str(batch_size)]
    words += ["--seed", str(seed), "--workdir", str(workdir)]
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


def run_grid(
    recipes: Sequence[str], epochs: Sequence[int], pos_embeds: Sequence[str] | None, pools: Sequence[str] | None,
    model: str = "tutorial", dataset: str = "cifar10", seed: int = 0, batch_size: int | None = None,
    root: str | Path = "runs/recipes", data_dir: str | None = None, train: bool = True,
    announce: Callable[[str], None] = lambda command: print(f"$ {command}", flush=True),
) -> list[dict[str, Any]]:
    """A row per cell of the grid ({"recipe", "epochs", "pos_embed", "pool", "command"} and, once finished,
    finished()'s figures): a finished run is read back, the others trained (when `train`) in ROOT/run_name(...),
    each announced with its command first.

    Args:
        pos_embeds, pools: None for each recipe's own.
    """
    from train.jax_loop.trainer import TrainOptions
    from train.jax_loop.trainer import train as train_run

    root = Path(root)
    rows = []
    cells = [
        (recipe, n, pos_embed, pool)
        for recipe in recipes
        for n, pos_embed, pool in itertools.product(
            epochs, pos_embeds or [own_architecture(recipe, model)[0]], pools or [own_architecture(recipe, model)[1]])
    ]
    for recipe, n, pos_embed, pool in cells:
        workdir = root / run_name(recipe, model, dataset, n, pos_embed, pool, seed)
        command = train_command(recipe, model, dataset, n, pos_embed, pool, seed, batch_size, workdir)
        result = finished(workdir)
        if result is None and train:
            announce(command)
            train_run(TrainOptions(
                workdir=str(workdir), model=model, recipe=recipe, epochs=n, batch_size=batch_size,
                seed=seed, dataset=dataset, data_dir=data_dir, pos_embed=pos_embed, pool=pool,
            ))
            result = finished(workdir)
        rows.append({"recipe": recipe, "epochs": n, "pos_embed": pos_embed, "pool": pool,
                     "command": command, **(result or {})})
    return rows


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
