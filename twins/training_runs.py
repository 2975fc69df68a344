"""`vit compare`: both twins trained by their own trainers for the same budget, from the same initial weights,
side by side: images/s, final train loss, accuracies and the largest difference of the final parameters.

The two runs are ordinary `vit train` runs (WORKDIR/jax and WORKDIR/torch), each with its own augmentation
randomness; the lockstep runs of the parity suite, with randomness off, are twins.lockstep's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from train.run import TrainOptions
from twins.differences import largest_difference


@dataclasses.dataclass
class Side:
    framework: str
    images_per_s: float
    final_loss: float
    validation_accuracy: float | None
    test_accuracy: float
    weights: dict[str, np.ndarray]
    records: list[dict[str, Any]]


def side_of(framework: str, result: Any, weights: dict[str, np.ndarray]) -> Side:
    """A finished run as its row of the table: the median images/s of its train records, its last loss, its
    accuracies, its final weights (timm names) and its records."""
    train = [r for r in result.records if r.get("kind") == "train"]
    speeds = [r["images_per_s"] for r in train if r.get("images_per_s")]
    return Side(framework, float(np.median(speeds)) if speeds else float("nan"), train[-1]["loss"],
                result.validation_accuracy, result.test_accuracy, weights, result.records)


def format_table(jax_side: Side, torch_side: Side, budget: str) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"
    rows = [
        ("images/s (median of records)", f"{jax_side.images_per_s:.1f}", f"{torch_side.images_per_s:.1f}"),
        ("final train loss", f"{jax_side.final_loss:.4f}", f"{torch_side.final_loss:.4f}"),
        ("validation accuracy", pct(jax_side.validation_accuracy), pct(torch_side.validation_accuracy)),
        ("test accuracy", pct(jax_side.test_accuracy), pct(torch_side.test_accuracy)),
    ]
    name, diff, scaled = largest_difference(torch_side.weights, jax_side.weights)
    lines = [f"{budget}", f"{'':<30} {'JAX':>12} {'PyTorch':>12}"]
    lines += [f"{label:<30} {a:>12} {b:>12}" for label, a, b in rows]
    lines.append(f"largest final parameter difference: {name}, max |jax - torch| {diff:.3g} "
                 f"({scaled:.3g} of max |torch|)")
    return "\n".join(lines)


def compare_runs(workdir: str | Path, data: Any, **options: Any) -> tuple[Side, Side, int]:
    """Runs the JAX trainer, then the PyTorch trainer from the JAX run's initial weights, with the same options
    (TrainOptions fields: model, recipe, steps, epochs, batch_size, lr, seed, dataset, validation, ...), in
    WORKDIR/jax and WORKDIR/torch: (the JAX side, the PyTorch side, the steps run).

    Args:
        workdir: the folder of the two runs.
        data: the train.data.Dataset both read (loaded once).
    """
    from twins.jax_side import recording_initial_params, weights_of
    from train.jax_loop import trainer
    from train.torch_loop import trainer as torch_trainer

    base = Path(workdir)
    initial: dict[str, dict[str, np.ndarray]] = {}
    jax_result = trainer.train(TrainOptions(workdir=str(base / "jax"), framework="jax", **options), dataset=data,
                               initial_params=recording_initial_params(initial))
    jax_side = side_of("jax", jax_result, weights_of(jax_result.config, jax_result.params))
    torch_result = torch_trainer.train(TrainOptions(workdir=str(base / "torch"), framework="torch", **options),
                                       dataset=data, initial_state_dict=initial["weights"])
    torch_side = side_of("torch", torch_result, torch_result.params)
    return jax_side, torch_side, jax_result.step
