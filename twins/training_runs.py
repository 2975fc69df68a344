"""`vit compare`: both twins trained for the same budget, side by side; and the lockstep training runs
of the parity suite (the JAX step and the PyTorch step on the same batches from the same weights).

`vit compare` runs the two trainers as a user would (each with its own augmentation randomness), from the
same initial weights, and prints images/s, final train loss, accuracies and the largest difference of the
final parameters. `jax_steps` / `torch_steps` run the two trainers' own updates (loss, gradients, clipping,
optimizer, schedule) on identical inputs, for parity_tests/test_twins_training_run.py; that both
augmentations compute those inputs when they are off is tested apart (tests/test_torch_augment.py).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from vit_spec import ViTConfig

Batch = tuple[np.ndarray, np.ndarray]  # uint8 NHWC images, int labels


def lockstep_recipe(name: str, batch_size: int, lr: float | None = None, **changes: Any):
    """The recipe `name` as the parity suite runs it: augmentation and dropout off (label smoothing,
    optimizer, clipping and schedule kept), so that both twins see identical inputs."""
    from train import recipes

    recipe = recipes.get_recipe(name, batch_size=batch_size, lr=lr)
    off = {"crop_padding": 0, "randaugment_ops": 0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "drop_path": 0.0, "dropout": 0.0}
    recipe = recipes.resolve(recipe.replace(length_scaled=False), recipe.epochs, off)
    return recipe.replace(augment=dataclasses.replace(recipe.augment, flip=False), **changes)


def lockstep_inputs(batch: Batch, augment: Any, num_classes: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The step inputs of both twins for a batch with augmentation off, computed once in numpy in `dtype`:
    normalised NHWC images and label-smoothed one-hot targets (what both augmentations compute then)."""
    images, labels = batch
    x = (images.astype(dtype) / 255.0 - np.asarray(augment.mean, dtype)) / np.asarray(augment.std, dtype)
    targets = np.eye(num_classes, dtype=dtype)[labels]
    if augment.label_smoothing:
        targets = targets * (1 - augment.label_smoothing) + augment.label_smoothing / num_classes
    return x.astype(dtype), targets.astype(dtype)


def jax_steps(
    config: ViTConfig, recipe: Any, weights: Mapping[str, np.ndarray], batches: Sequence[Batch],
    steps_per_epoch: int, total_steps: int, dtype: str = "float32",
) -> tuple[list[dict[str, float]], dict[str, np.ndarray]]:
    """The JAX trainer's update (train.step, train.optim) on `batches` (lockstep_inputs): per-step metrics and
    the final parameters (timm names)."""
    import jax

    from jax_vit import ViT, params_from_state_dict, state_dict_from_params
    from train.optim import make_optimizer
    from train.step import TrainState, make_update_step
    from vit_cli.parity import jax_precision

    with jax_precision(dtype):
        params = jax.tree.map(jax.numpy.asarray, params_from_state_dict(config, {k: np.asarray(v, dtype) for k, v in weights.items()}))
        tx, schedule = make_optimizer(recipe, steps_per_epoch, total_steps)
        update = make_update_step(ViT(config), tx, schedule)
        state = TrainState.create(params, tx)
        key = jax.random.key(0)
        metrics = []
        for batch in batches:
            x, targets = lockstep_inputs(batch, recipe.augment, config.num_classes, dtype)
            state, m = update(state, x, targets, np.asarray(batch[1], np.int32), key)
            metrics.append({k: float(v) for k, v in m.items()})
        return metrics, state_dict_from_params(config, jax.device_get(state.params))


def torch_steps(
    config: ViTConfig, recipe: Any, weights: Mapping[str, np.ndarray], batches: Sequence[Batch],
    steps_per_epoch: int, total_steps: int, dtype: str = "float32",
) -> tuple[list[dict[str, float]], dict[str, np.ndarray]]:
    """The PyTorch trainer's update (train.torch_step.TrainStep) on the same inputs, as jax_steps."""
    import torch

    from torch_vit import model_from_state_dict, state_dict_numpy
    from train.torch_step import TrainStep

    model = model_from_state_dict(config, {k: np.asarray(v, dtype) for k, v in weights.items()})
    trainer = TrainStep(model, recipe, steps_per_epoch, total_steps, config.num_classes)
    metrics = []
    for i, batch in enumerate(batches):
        x, targets = lockstep_inputs(batch, recipe.augment, config.num_classes, dtype)
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        metrics.append(trainer.update(x, torch.from_numpy(targets), torch.from_numpy(np.asarray(batch[1], np.int64)), i))
    return metrics, state_dict_numpy(model)


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
    p.add_argument("--steps", type=int, help="train this many steps")
    p.add_argument("--epochs", type=int, help="or this many epochs (default: --steps 300)")
    p.add_argument("--batch-size", type=int, help="(default: the recipe's, 128)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-dir", help="tfds data directory (default: $TFDS_DATA_DIR, else tfds's default)")
    p.add_argument("--validation", type=int, default=5000, metavar="N", help="training examples held out (default: 5000)")
    p.add_argument("--workdir", help="the two runs go to WORKDIR/jax and WORKDIR/torch (default: runs/compare-DATASET-RECIPE-MODEL)")
    p.add_argument("--log-every", type=int, default=10, help="steps between train records, the curves' points (default: 10)")
    p.add_argument("--out", metavar="PNG", help="draw both runs' loss and accuracy curves into this PNG")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(run=_run)


@dataclasses.dataclass
class Side:
    framework: str
    images_per_s: float
    final_loss: float
    validation_accuracy: float | None
    test_accuracy: float
    weights: dict[str, np.ndarray]
    records: list[dict[str, Any]]


def _side(framework: str, result: Any, weights: dict[str, np.ndarray]) -> Side:
    train = [r for r in result.records if r.get("kind") == "train"]
    speeds = [r["images_per_s"] for r in train if r.get("images_per_s")]
    return Side(framework, float(np.median(speeds)) if speeds else float("nan"), train[-1]["loss"],
                result.validation_accuracy, result.test_accuracy, weights, result.records)


def largest_difference(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> tuple[str, float, float]:
    """(tensor, max |a - b|, that scaled by max |a|) of the tensor whose scaled difference is largest."""
    worst = ("", 0.0, 0.0)
    for name in a:
        diff = float(np.max(np.abs(np.asarray(a[name], np.float64) - np.asarray(b[name], np.float64))))
        scale = float(np.max(np.abs(a[name]))) or 1.0
        if diff / scale >= worst[2]:
            worst = (name, diff, diff / scale)
    return worst


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


def plot(sides: Sequence[Side], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vit_spec import atomic_path

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for side, color in zip(sides, ("tab:blue", "tab:orange")):
        train = [r for r in side.records if r.get("kind") == "train"]
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], color=color, label=f"{side.framework} train")
        ax_acc.plot([r["step"] for r in train], [r["accuracy"] for r in train], color=color, alpha=0.6,
                    label=f"{side.framework} train (augmented)")
        for split, marker in (("validation", "o"), ("test", "s")):
            evals = [r for r in side.records if r.get("kind") == "eval" and r.get("split") == split]
            if evals:
                ax_acc.plot([r["step"] for r in evals], [r["accuracy"] for r in evals], marker, color=color,
                            label=f"{side.framework} {split}")
    ax_loss.set(xlabel="step", ylabel="loss", title="train loss")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _run(args: argparse.Namespace) -> int:
    import jax

    import jax_vit
    from train import data as data_lib
    from train import torch_trainer, trainer
    from train.run import TrainOptions

    if args.steps is None and args.epochs is None:
        args.steps = 300
    base = Path(args.workdir or Path("runs") / f"compare-{args.dataset}-{args.recipe}-{args.model.replace('/', '_')}")
    dataset = data_lib.load(args.dataset, data_lib.resolve_data_dir(args.data_dir))
    common = dict(model=args.model, recipe=args.recipe, steps=args.steps, epochs=args.epochs, batch_size=args.batch_size,
                  lr=args.lr, seed=args.seed, dataset=args.dataset, validation=args.validation, progress=args.progress,
                  log_every=args.log_every)
    initial: dict[str, dict[str, np.ndarray]] = {}

    def initial_params(config: ViTConfig, key: jax.Array) -> Any:
        # The JAX run's initial weights are the PyTorch run's too.
        params = jax_vit.init_params(config, key)
        initial["weights"] = jax_vit.state_dict_from_params(config, jax.device_get(params))
        return params

    jax_result = trainer.train(TrainOptions(workdir=str(base / "jax"), framework="jax", **common), dataset=dataset,
                               initial_params=initial_params)
    jax_side = _side("jax", jax_result, jax_vit.state_dict_from_params(jax_result.config, jax_result.params))
    torch_result = torch_trainer.train(TrainOptions(workdir=str(base / "torch"), framework="torch", **common),
                                       dataset=dataset, initial_state_dict=initial["weights"])
    torch_side = _side("torch", torch_result, torch_result.params)
    budget = f"{args.recipe} recipe, {args.model}, {jax_result.step} steps, seed {args.seed}, the same initial weights"
    print(format_table(jax_side, torch_side, budget))
    if args.out:
        plot([jax_side, torch_side], args.out)
        print(f"curves in {args.out}")
    return 0
