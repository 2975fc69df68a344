"""What the two trainers share, framework-free: the options of `vit train`, the data and plan of a run,
its config.json, its train records and the rules for resuming a workdir.

train.jax_loop.trainer (JAX) and train.torch_loop.trainer (PyTorch) each add only their framework's model, step,
evaluation and checkpoints to this.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from train import data as data_lib
from train import recipes
from train.recipes import Recipe
from vit_spec import ViTConfig, atomic_path

if TYPE_CHECKING:
    from train.metrics import MetricsLog, Progress

FRAMEWORKS = ("jax", "torch")


class DivergedError(ValueError):
    """The loss or the gradients became NaN or infinite."""


class CheckpointMismatchError(ValueError):
    """A workdir whose checkpoint belongs to another model, recipe, dataset or framework."""


class RunFinishedError(ValueError):
    """A workdir whose run is already past the requested end."""


@dataclasses.dataclass
class TrainOptions:
    """Everything `vit train` takes; None means "the recipe's value"."""

    workdir: str | None = None  # None: runs/DATASET-RECIPE-MODEL (-torch for the PyTorch trainer)
    model: str = "tutorial"
    recipe: str = "default"
    epochs: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    dataset: str = "cifar10"
    data_dir: str | None = None
    dtype: str = "float32"
    eval_every: int = 1  # epochs between validation evaluations; 0: only at the end
    validation: int = 5000  # training examples held out for evaluations (data.validation_indices); 0: none
    pos_embed: str | None = None  # ViTConfig.pos_embed; None: the recipe's (sincos2d for default), else the variant's
    pool: str | None = None  # ViTConfig.pool; None: the variant's (cls)
    regularisation: dict[str, Any] | None = None  # explicit recipes.REGULARISATION_PARTS, over the recipe's
    log_every: int = 50  # steps between metrics.jsonl records
    checkpoint_every: int | None = None  # steps; None: once per epoch
    keep_checkpoints: int = 3
    streaming: bool = False  # read training batches from the data source instead of memory (JAX)
    steps_per_dispatch: int = 1  # train steps per jitted call; >1 keeps the split on the device (JAX)
    data_on_device: bool = False  # the split on the device, batches gathered there (JAX)
    progress: bool = True
    eval_batch_size: int = 1000
    init_from: str | None = None  # a checkpoint in any format `vit convert` reads: fine-tune from it
    init_variant: str | None = None  # what that file does not record (a timm state dict's heads)
    framework: str = "jax"


@dataclasses.dataclass
class TrainResult:
    workdir: str
    config: ViTConfig
    step: int
    test_accuracy: float
    test_loss: float
    validation_accuracy: float | None  # None: nothing was held out (--validation 0)
    validation_loss: float | None
    params: Any  # on the host: flax params (JAX) or a numpy state dict with timm names (PyTorch)
    records: list[dict[str, Any]]


def model_config(variant: str, recipe: Recipe, num_classes: int, image_shape: tuple[int, ...], **fields: Any) -> ViTConfig:
    """The variant, sized for the dataset, with the recipe's architecture, normalisation and regularisation (and
    `fields`: --pos-embed, --pool)."""
    h, w, c = image_shape
    mean, std = recipe.augment.mean, recipe.augment.std
    if len(mean) != c:  # e.g. a grayscale dataset under CIFAR's constants: the config's per-channel default
        mean, std = None, None
    return ViTConfig.from_variant(
        variant, num_classes=num_classes, image_size=(h, w) if h != w else h, channels=c,
        image_mean=mean, image_std=std, **{**dict(recipe.architecture), **dict(recipe.model_overrides), **fields},
    )


def default_workdir(options: TrainOptions) -> str:
    """runs/DATASET-RECIPE-MODEL (JAX) or runs/DATASET-RECIPE-MODEL-torch: each setting resumes its own run."""
    suffix = "" if options.framework == "jax" else f"-{options.framework}"
    return str(Path("runs") / f"{options.dataset}-{options.recipe}-{options.model.replace('/', '_')}{suffix}")


def check_options(options: TrainOptions, dtypes: Mapping[str, Any]) -> None:
    """What either trainer refuses before reading any data."""
    if options.framework not in FRAMEWORKS:
        raise ValueError(f"unknown --framework {options.framework!r}: use one of {FRAMEWORKS}")
    if options.dtype not in dtypes:
        raise ValueError(f"unknown --dtype {options.dtype!r}: use one of {sorted(dtypes)}")
    if options.steps is not None and options.steps <= 0:
        raise ValueError(f"--steps must be positive, got {options.steps}")
    if options.log_every < 1:
        raise ValueError(f"--log-every must be at least 1, got {options.log_every}")
    if options.checkpoint_every is not None and options.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be at least 1, got {options.checkpoint_every}")


def architecture(options: TrainOptions) -> dict[str, str]:
    """The ViTConfig fields that --pos-embed and --pool set (checked against the variant)."""
    fields = {k: v for k, v in (("pos_embed", options.pos_embed), ("pool", options.pool)) if v is not None}
    if fields and options.init_from:
        raise ValueError("--pos-embed and --pool choose a new model's architecture; --init-from brings its own: drop them")
    ViTConfig.from_variant(options.model, **fields)  # an unknown variant fails here, before any data is read
    return fields


@dataclasses.dataclass
class InMemoryData:
    """A run's data in memory: training examples (after the hold-out), validation and test splits."""

    train: data_lib.Split
    validation: data_lib.Split | None
    test: data_lib.Split
    num_classes: int
    image_shape: tuple[int, int, int]
    name: str
    examples: int  # of the training split before the hold-out
    class_names: tuple[str, ...] = ()


def load_in_memory(options: TrainOptions, dataset: data_lib.Dataset | None = None) -> InMemoryData:
    """options.dataset from tfds (or `dataset`, small in-memory data of tests), with --validation held out."""
    if dataset is None:
        dataset = data_lib.load(options.dataset, data_lib.resolve_data_dir(options.data_dir))
    examples = len(dataset.train)
    dataset, validation = data_lib.hold_out(dataset, options.validation)
    return InMemoryData(dataset.train, validation, dataset.test, dataset.num_classes, dataset.image_shape,
                        dataset.name, examples, dataset.class_names)


def run_meta(
    options: TrainOptions, config: ViTConfig, dataset_name: str, recipe: Recipe, total: int, spe: int, examples: int
) -> dict[str, Any]:
    """What config.json and every checkpoint record about a run (both frameworks)."""
    return {
        "framework": options.framework,
        "model_config": config.to_dict(),
        "dataset": dataset_name,
        "recipe": recipe.to_dict(),
        "regularisation": {**recipes.regularisation(recipe), "epochs": total / spe,
                           "strength": recipes.regularisation_strength(total / spe) if recipe.length_scaled else None},
        "validation": data_lib.validation_record(examples, options.validation) if options.validation else None,
        "model": options.model,
        "init_from": options.init_from,
        "seed": options.seed,
        "total_steps": total,
        "steps_per_epoch": spe,
        "dtype": options.dtype,
    }


def write_config(workdir: Path, meta: dict[str, Any], options: TrainOptions) -> None:
    with atomic_path(workdir / "config.json") as tmp:
        tmp.write_text(json.dumps({**meta, "options": dataclasses.asdict(options)}, indent=2) + "\n")


def check_same_run(found: Mapping[str, Any], meta: Mapping[str, Any], directory: Path) -> None:
    """Refuses a checkpoint of another recipe (another optimizer state), model, dataset, validation split or
    framework: resuming it would fail or, worse, silently train something else."""
    recipe_name = lambda m: (m.get("recipe") or {}).get("name")
    for what, get in (
        ("framework", lambda m: m.get("framework", "jax")),  # checkpoints from before the torch trainer are JAX's
        ("recipe", recipe_name),
        ("model", lambda m: m.get("model_config")),
        ("dataset", lambda m: m.get("dataset")),
        ("validation split", lambda m: (m.get("validation") or {}).get("examples", 0)),
    ):
        old, new = get(found), get(meta)
        if old != new:
            raise CheckpointMismatchError(
                f"{directory} holds a checkpoint of another {what} ({_difference(old, new)}): use a fresh "
                "--workdir, or the same --framework, --recipe, --model, --dataset and --validation to resume it"
            )


def _difference(old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        return ", ".join(f"{k}={old.get(k)!r} there, {new.get(k)!r} here" for k in keys)
    return f"{old!r} there, {new!r} here"


def check_not_past_end(start: int, total: int, workdir: Path) -> None:
    """Refuses to "resume" a run already past the requested end: it would report later weights as step `total`."""
    if start > total:
        raise RunFinishedError(
            f"the run in {workdir} has already trained {start} steps, past the requested end at step {total}: "
            f"ask for at least {start} steps (--steps, or --epochs) to continue it, or use a fresh --workdir"
        )


def summarise(values: list[dict[str, float]], step: int, spe: int, batch: int, seconds: float, untimed: int = 0) -> dict[str, Any]:
    """The train record of the steps since the last one: means, the last lr, images/s (of the timed steps).

    `values`: one dict of host scalars per step ("loss", "accuracy", "lr", "grad_norm", "finite").
    """
    mean = lambda k: float(np.mean([v[k] for v in values]))
    return {
        "kind": "train",
        "step": step,
        "epoch": step / spe,
        "loss": mean("loss"),
        "accuracy": mean("accuracy"),
        "lr": float(values[-1]["lr"]),
        "grad_norm": mean("grad_norm"),
        # None when the record holds only the compiling step, which has no meaningful speed.
        "images_per_s": (len(values) - untimed) * batch / max(seconds, 1e-9) if len(values) > untimed else None,
        "finite": bool(all(v["finite"] for v in values)),
    }


def diverged_message(first: int, last: int, good: list[int], directory: Path) -> str:
    return (
        f"training diverged: the loss or gradients became NaN or infinite between steps {first} and {last}. "
        "The last good checkpoint is " + (f"step {good[-1]} in {directory}" if good else "none (none was written yet)")
        + "; nothing was saved after the divergence. Lower --lr (or use --recipe default, which clips gradients) "
        "and run again"
    )


def wants_eval(done: int, total: int, spe: int, eval_every: int, has_validation: bool) -> bool:
    """Evaluate after step `done`: at the end, and every eval_every epochs when something is held out."""
    return done == total or (has_validation and eval_every > 0 and done % spe == 0 and (done // spe) % eval_every == 0)


def evaluation_round(
    validation: data_lib.Split | None, test: data_lib.Split, step: int, total: int, spe: int,
    score: Callable[[data_lib.Split], dict[str, float]], log: MetricsLog, progress: Progress, curves: Path,
) -> dict[str, dict[str, float]]:
    """One evaluation at `step`, as both loops run it: each split scored by `score` (the loop's own), logged as an
    eval record and noted, then the curves redrawn. Returns the scores by split."""
    # Evaluations score the held-out examples; the test split only once, at the end.
    scored = {"validation": validation, "test": test} if step == total else {"validation": validation}
    evals: dict[str, dict[str, float]] = {}
    for name, split in scored.items():
        if split is None:
            continue
        evals[name] = score(split)
        log.write({"kind": "eval", "split": name, "step": step, "epoch": step / spe, **evals[name]})
        progress.note(f"step {step} (epoch {step / spe:.2f}): {name} accuracy {evals[name]['accuracy']:.4f}, "
                      f"{name} loss {evals[name]['loss']:.4f}")
    log.plot(curves)
    return evals
