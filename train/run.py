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
from train import folder_dataset, mesh_shape, param_groups, recipes, write_errors
from train.finetune import checkpoint_image_size
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
    optimizer: str | None = None  # recipes.OPTIMIZERS: over the recipe's
    weight_decay: float | None = None
    layer_decay: float | None = None  # layer-wise learning-rate decay, in (0, 1]
    seed: int = 0
    dataset: str = "cifar10"
    data_dir: str | None = None
    dtype: str = "float32"
    eval_every: int = 1  # epochs between validation evaluations; 0: only at the end
    # Training examples held out for evaluations (data.validation_indices); 0: none; None: DEFAULT_VALIDATION of a
    # tfds dataset, a folder's validation/ split (else a tenth of its training images: train.folder_dataset).
    validation: int | None = None
    pos_embed: str | None = None  # ViTConfig.pos_embed; None: the recipe's (sincos2d for default), else the variant's
    pool: str | None = None  # ViTConfig.pool; None: the variant's (cls)
    regularisation: dict[str, Any] | None = None  # explicit recipes.REGULARISATION_PARTS, over the recipe's
    log_every: int = 50  # steps between metrics.jsonl records
    # --checkpoint-every: steps or seconds (train.checkpoint_cadence); neither: each epoch and every 30 minutes.
    checkpoint_every: int | None = None
    checkpoint_seconds: float | None = None
    keep_checkpoints: int = 3
    streaming: bool = False  # read training batches from the data source instead of memory (JAX)
    steps_per_dispatch: int = 1  # train steps per jitted call; >1 keeps the split on the device (JAX)
    data_on_device: bool = False  # the split on the device, batches gathered there (JAX)
    progress: bool = True
    eval_batch_size: int = 1000
    init_from: str | None = None  # a checkpoint in any format `vit convert` reads: fine-tune from it
    init_variant: str | None = None  # what that file does not record (a timm state dict's heads)
    freeze: str | None = None  # param_groups.FREEZE_CHOICES: "backbone" trains the head only (needs init_from)
    # --dataset folder:PATH (train.folder_dataset): the model's resolution (None: the images' own, where they
    # share one), the evaluation crop (None: 1, the whole centre square) and the processes decoding images.
    image_size: int | None = None
    crop_pct: float | None = None
    workers: int = 0
    framework: str = "jax"
    # --mesh (train.mesh_shape): the devices on the axes data, fsdp and model; None: all on data. JAX only.
    mesh: str | None = None
    shard_min_mb: float = 4.0  # tensors below this stay whole under fsdp (train.partition_rules)
    remat: bool = False  # JAX: the blocks scanned over depth, their activations recomputed in the backward pass


DEFAULT_VALIDATION = 5000  # of a tfds dataset's training split, held out unless --validation says otherwise


@dataclasses.dataclass
class TrainResult:
    workdir: str
    config: ViTConfig
    step: int
    test_accuracy: float | None  # None: the dataset has no test split (a folder without test/)
    test_loss: float | None
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
    """runs/DATASET-RECIPE-MODEL (JAX) or runs/DATASET-RECIPE-MODEL-torch: each setting resumes its own run. A
    folder dataset goes by its folder's name."""
    suffix = "" if options.framework == "jax" else f"-{options.framework}"
    dataset = (folder_dataset.folder_root(options.dataset).resolve().name if folder_dataset.is_folder(options.dataset)
               else options.dataset)
    return str(Path("runs") / f"{dataset}-{options.recipe}-{options.model.replace('/', '_')}{suffix}")


def check_options(options: TrainOptions, dtypes: Mapping[str, Any]) -> None:
    """What either trainer refuses before reading any data."""
    if options.framework not in FRAMEWORKS:
        raise ValueError(f"unknown --framework {options.framework!r}: use one of {FRAMEWORKS}")
    if options.dtype not in dtypes:
        raise ValueError(f"unknown --dtype {options.dtype!r}: use one of {sorted(dtypes)}")
    check_length(options.steps, options.epochs)
    if options.steps is not None and options.steps <= 0:
        raise ValueError(f"--steps must be positive, got {options.steps}")
    if options.log_every < 1:
        raise ValueError(f"--log-every must be at least 1, got {options.log_every}")
    if options.checkpoint_every is not None and options.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be at least 1 step, got {options.checkpoint_every}")
    if options.checkpoint_seconds is not None and options.checkpoint_seconds <= 0:
        raise ValueError(f"--checkpoint-every must be a positive duration, got {options.checkpoint_seconds} s")
    check_keep(options.keep_checkpoints)
    if not folder_dataset.is_folder(options.dataset):
        given = [flag for flag, value in (("--image-size", options.image_size), ("--crop-pct", options.crop_pct))
                 if value is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} size the images of an image folder (--dataset folder:PATH); "
                             f"{options.dataset} has images of one size already: drop {' and '.join(given)}")
    if options.workers < 0:
        raise ValueError(f"--workers must be at least 0 (0: decode in the training process), got {options.workers}")
    param_groups.check_freeze(options.freeze)
    if options.mesh is not None:
        mesh_shape.parse(options.mesh)  # the sizes are checked against the devices once they are known
    if options.shard_min_mb < 0:
        raise ValueError(f"--shard-min-mb must be at least 0, got {options.shard_min_mb}")
    if options.freeze and not options.init_from:
        raise ValueError(f"--freeze {options.freeze} trains the head on a pretrained backbone: give the checkpoint with "
                         "--init-from FILE (a randomly initialised backbone, frozen, would only train a classifier on "
                         "random features)")


def recipe_of(options: TrainOptions) -> Recipe:
    """The recipe the options name, with their overrides (--epochs, --batch-size, --lr, --optimizer,
    --weight-decay, --layer-decay), not yet resolved for the run's length."""
    return recipes.get_recipe(options.recipe, epochs=options.epochs, batch_size=options.batch_size, lr=options.lr,
                              optimizer=options.optimizer, weight_decay=options.weight_decay,
                              layer_decay=options.layer_decay)


def opening_notes(options: TrainOptions) -> list[str]:
    """What a run says of its options as it starts: a fine-tuning recipe without a checkpoint, a frozen backbone."""
    notes = []
    if options.recipe in recipes.FINE_TUNING and not options.init_from:
        notes.append(f"note: --recipe {options.recipe} is meant for fine-tuning a checkpoint (--init-from FILE); "
                     "this run trains a model from scratch with it")
    if options.freeze == "backbone":
        notes.append("--freeze backbone: only the classifier head trains (head, and head_dist of a distilled model); "
                     "the rest stays as --init-from loaded it")
    return notes


def check_length(steps: int | None, epochs: int | None) -> None:
    """--steps and --epochs each set the run's length: one at most (`vit train`, `vit compare`)."""
    if steps is not None and epochs is not None:
        raise ValueError(f"--steps {steps} and --epochs {epochs} both set the run's length: give one of them")


def check_keep(keep: int) -> None:
    """--keep-checkpoints: at least the newest, which a run resumes from (orbax would delete every one at 0)."""
    if keep < 1:
        raise ValueError(f"--keep-checkpoints must be at least 1 (the newest checkpoint is the one a run resumes "
                         f"from), got {keep}")


def architecture(options: TrainOptions) -> dict[str, str]:
    """The ViTConfig fields that --pos-embed and --pool set (checked against the variant)."""
    fields = {k: v for k, v in (("pos_embed", options.pos_embed), ("pool", options.pool)) if v is not None}
    if fields and options.init_from:
        raise ValueError("--pos-embed and --pool choose a new model's architecture; --init-from brings its own: drop them")
    ViTConfig.from_variant(options.model, **fields)  # an unknown variant fails here, before any data is read
    return fields


@dataclasses.dataclass
class InMemoryData:
    """A run's data in memory: training examples (after the hold-out), validation and test splits, and what
    config.json and the run's first lines say of them."""

    train: data_lib.Split
    validation: data_lib.Split | None
    test: data_lib.Split | None  # None: the dataset has no test split (a folder without test/)
    num_classes: int
    image_shape: tuple[int, int, int]
    name: str
    examples: int  # of the training split before the hold-out
    class_names: tuple[str, ...] = ()
    validation_record: dict[str, Any] | None = None  # config.json's "validation" (data.validation_record)
    data_record: dict[str, Any] | None = None  # config.json's "data": a folder's files, unreadable ones, size
    lines: tuple[str, ...] = ()  # the run's first lines about its data (a folder's, and each file left out)


def examples_line(train: int, validation: data_lib.Split | None, test: data_lib.Split | None) -> str:
    """The run's line on what it trains on and evaluates."""
    if validation is not None:
        return f"training on {train} examples, {len(validation)} held out for validation"
    scored = ("the test split is scored once, at the end" if test is not None
              else "and there is no test split: nothing is scored")
    return f"training on {train} examples, none held out for validation (--validation 0: {scored})"


def validation_size(options: TrainOptions) -> int:
    """The training examples a tfds run holds out: --validation, else DEFAULT_VALIDATION."""
    return DEFAULT_VALIDATION if options.validation is None else options.validation


def load_in_memory(options: TrainOptions, dataset: data_lib.Dataset | None = None) -> InMemoryData:
    """options.dataset from tfds or an image folder (or `dataset`, small in-memory data of tests), with
    --validation held out."""
    if dataset is None and folder_dataset.is_folder(options.dataset):
        return from_folder(folder_dataset.load(options.dataset, options.image_size, options.crop_pct,
                                               options.validation, workers=options.workers,
                                               fallback_size=checkpoint_size(options)))
    if dataset is None:
        dataset = data_lib.load(options.dataset, data_lib.resolve_data_dir(options.data_dir))
    examples, size = len(dataset.train), validation_size(options)
    dataset, validation = data_lib.hold_out(dataset, size)
    return InMemoryData(dataset.train, validation, dataset.test, dataset.num_classes, dataset.image_shape,
                        dataset.name, examples, dataset.class_names,
                        data_lib.validation_record(examples, size) if size else None)


def checkpoint_size(options: TrainOptions) -> Callable[[], tuple[int, int]] | None:
    """Where a folder's images come in many sizes and no --image-size is given: the --init-from checkpoint's own
    size (read only then), else None."""
    if not options.init_from:
        return None
    return lambda: checkpoint_image_size(options.init_from, options.init_variant)  # type: ignore[arg-type]


def from_folder(folder: folder_dataset.FolderData) -> InMemoryData:
    """A folder's data as a run in memory reads it; refuses one that streams (too large for memory)."""
    if folder.train is None:
        raise ValueError(
            f"{folder.plan.layout.root}: its decoded training images would not fit in memory "
            f"(VIT_FOLDER_MEMORY_LIMIT, {folder_dataset.memory_limit() / 2**30:.1f} GiB): train it with the JAX "
            "trainer, which streams it (--framework jax), or at a smaller --image-size")
    h, w = folder.plan.size
    return InMemoryData(folder.train, folder.validation, folder.test, len(folder.plan.class_names), (h, w, 3),
                        folder.name, folder.examples, folder.plan.class_names, folder.validation_record(),
                        folder.record(), tuple(folder.lines()))


def run_meta(
    options: TrainOptions, config: ViTConfig, data: Any, recipe: Recipe, total: int, spe: int
) -> dict[str, Any]:
    """What config.json and every checkpoint record about a run (both frameworks). `data`: the run's data
    (InMemoryData, or the JAX trainer's, with the same fields): its name and records."""
    return {
        "framework": options.framework,
        "model_config": config.to_dict(),
        "dataset": data.name,
        **({"data": data.data_record} if data.data_record else {}),
        "recipe": recipe.to_dict(),
        "regularisation": {**recipes.regularisation(recipe), "epochs": total / spe,
                           "strength": recipes.regularisation_strength(total / spe) if recipe.length_scaled else None},
        "validation": data.validation_record,
        "model": options.model,
        "init_from": options.init_from,
        "freeze": options.freeze,
        "seed": options.seed,
        "total_steps": total,
        "steps_per_epoch": spe,
        "dtype": options.dtype,
    }


def write_config(workdir: Path, meta: dict[str, Any], options: TrainOptions) -> None:
    with write_errors.writing("config.json", workdir / "config.json", workdir), atomic_path(workdir / "config.json") as tmp:
        tmp.write_text(json.dumps({**meta, "options": dataclasses.asdict(options)}, indent=2) + "\n")


# The flag that sets each recorded field a resume may not change (the others are the recipe's own).
_FLAGS = {"batch_size": "--batch-size", "lr": "--lr", "optimizer": "--optimizer", "weight_decay": "--weight-decay",
          "layer_decay": "--layer-decay", "crop_padding": "--crop-padding",
          "randaugment_ops": "--randaugment-ops", "randaugment_magnitude": "--randaugment-magnitude",
          "mixup_alpha": "--mixup", "cutmix_alpha": "--cutmix", "label_smoothing": "--label-smoothing",
          "drop_path": "--drop-path", "dropout": "--dropout"}
# Recipe fields that are not the trajectory's: the length (the schedule follows a new one), the name (checked
# first) and the model's regularisation (checked as the regularisation parts).
_NOT_TRAJECTORY = ("name", "epochs", "model_overrides")


def check_same_run(found: Mapping[str, Any], meta: Mapping[str, Any], directory: Path) -> None:
    """Refuses a checkpoint of another framework, recipe, dataset, validation split, trajectory or model:
    resuming it would fail or, worse, silently train something else.

    The trajectory is everything of the resolved recipe but its length: batch size, learning rate, optimizer (and
    its weight and layer decay), schedule, augmentation and the regularisation parts; and what --freeze fixes. A
    difference is refused naming the field, both values and the flag that resumes the run. Fields a checkpoint
    does not record (older ones) are not compared.
    `meta` is the resumed run's: a length-scaled run's regularisation already as it began (as_begun).
    """
    found, meta = _plain(found), _plain(meta)
    recipe_name = lambda m: (m.get("recipe") or {}).get("name")
    for what, get in (
        ("framework", lambda m: m.get("framework", "jax")),  # checkpoints from before the torch trainer are JAX's
        ("recipe", recipe_name),
        ("dataset", lambda m: m.get("dataset")),
        ("validation split", lambda m: (m.get("validation") or {}).get("examples", 0)),
    ):
        old, new = get(found), get(meta)
        if old != new:
            raise CheckpointMismatchError(
                f"{directory} holds a checkpoint of another {what} ({_difference(old, new)}): use a fresh "
                "--workdir, or the same --framework, --recipe, --model, --dataset and --validation to resume it"
            )
    differences = _trajectory_differences(found, meta)
    flagged = [(field, old, new) for field, old, new in differences if field in _FLAGS]
    if flagged:
        raise CheckpointMismatchError(
            f"{directory} holds a checkpoint of a run with another {' and '.join(f for f, _, _ in flagged)} "
            f"({'; '.join(f'{f} {_show(old)} there, {_show(new)} here' for f, old, new in flagged)}): resume with "
            f"{' '.join(_flag_text(_FLAGS[f], old) for f, old, _ in flagged)}, or start a new run in another --workdir"
        )
    if differences:
        raise CheckpointMismatchError(
            f"{directory} holds a checkpoint of a run with another {' and '.join(f for f, _, _ in differences)} (the "
            f"recipe's {'; '.join(f'{f} {_show(old)} there, {_show(new)} here' for f, old, new in differences)}: "
            "the recipe changed since the run began): resume it with the code that began it, or start a new run in "
            "another --workdir"
        )
    old, new = bool(found.get("remat")), bool(meta.get("remat"))  # its checkpoints stack the blocks' parameters
    if old != new:
        raise CheckpointMismatchError(
            f"{directory} holds checkpoints of a run {'with' if old else 'without'} --remat, whose parameters are laid "
            f"out {'stacked over depth' if old else 'block by block'}: resume it {'with' if old else 'without'} --remat, "
            "or start a new run in another --workdir"
        )
    old, new = found.get("freeze"), meta.get("freeze")  # checkpoints from before --freeze trained everything
    if old != new:
        raise CheckpointMismatchError(
            f"{directory} holds a checkpoint of a run with {_flag_text('--freeze', old)}, resumed here with "
            f"{_flag_text('--freeze', new)} (its optimizer state covers other parameters): resume with "
            f"{_flag_text('--freeze', old)}, or start a new run in another --workdir"
        )
    old, new = found.get("model_config"), meta.get("model_config")
    if old != new:
        raise CheckpointMismatchError(
            f"{directory} holds a checkpoint of another model ({_difference(old, new)}): use a fresh "
            "--workdir, or the same --model, --pos-embed, --pool (or --init-from) to resume it"
        )


def _difference(old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        return ", ".join(f"{k}={old.get(k)!r} there, {new.get(k)!r} here" for k in keys)
    return f"{old!r} there, {new!r} here"


def _plain(meta: Mapping[str, Any]) -> dict[str, Any]:
    """`meta` as a checkpoint records it (JSON: tuples are lists)."""
    return json.loads(json.dumps(meta))


def _trajectory_differences(found: Mapping[str, Any], meta: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, recorded, requested) of every trajectory field both record and that differs: the recipe's
    fields (augmentation's included) but its length, then the regularisation parts."""
    differences = []
    old_recipe, new_recipe = found.get("recipe") or {}, meta.get("recipe") or {}
    for key in new_recipe:
        if key in _NOT_TRAJECTORY or key not in old_recipe:
            continue
        if key == "augment":
            old_augment, new_augment = old_recipe[key] or {}, new_recipe[key] or {}
            differences += [(k, old_augment[k], new_augment[k]) for k in new_augment
                            if k in old_augment and k not in recipes.REGULARISATION_PARTS and old_augment[k] != new_augment[k]]
        elif old_recipe[key] != new_recipe[key]:
            differences.append((key, old_recipe[key], new_recipe[key]))
    old_parts, new_parts = recorded_regularisation(found), recorded_regularisation(meta)
    differences += [(k, old_parts[k], new_parts[k]) for k in recipes.REGULARISATION_PARTS
                    if k in old_parts and k in new_parts and old_parts[k] != new_parts[k]]
    return differences


def _flag_text(flag: str, value: Any) -> str:
    """`flag value` as a command line gives it; "no --flag" for None (the flag left out)."""
    return f"no {flag}" if value is None else f"{flag} {_show(value)}"


def _show(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def recorded_regularisation(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The regularisation parts a run's meta records: its "regularisation" record, or (older checkpoints) its
    recipe's augmentation and its model config; a part recorded nowhere is left out."""
    record = meta.get("regularisation") or {}
    augment = (meta.get("recipe") or {}).get("augment") or {}
    model = meta.get("model_config") or {}
    parts = {}
    for part in recipes.REGULARISATION_PARTS:
        # The model's rates as it trained: runs before the fine-tuning fix recorded the recipe's 0 beside a
        # checkpoint's own dropout.
        for source in ((model, record) if part in ("drop_path", "dropout") else (record, augment)):
            if part in source:
                parts[part] = source[part]
                break
    return parts


def as_begun(
    recipe: Recipe, config: ViTConfig, meta: dict[str, Any], found: Mapping[str, Any],
    flags: Mapping[str, Any] | None,
) -> tuple[Recipe, ViTConfig, dict[str, Any], dict[str, Any]]:
    """(recipe, config, meta, kept) of a run resumed from a checkpoint whose meta is `found`.

    Extending a run (another --steps or --epochs) changes its length, hence its learning-rate schedule, but
    not its regularisation: the parts a length-scaled recipe derived from the run's length when it began (all
    but those given by a flag, `flags`) keep the values `found` records, in the recipe, the model config (the
    model's drop_path and dropout) and the meta. `kept` holds the parts that differ from what the new length
    would have given. A flag's part is taken as given: check_same_run then refuses one that differs.
    """
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    if not recipe.length_scaled:
        return recipe, config, meta, {}
    recorded = {k: v for k, v in recorded_regularisation(found).items() if k not in given}
    now = recipes.regularisation(recipe)
    kept = {k: v for k, v in recorded.items() if now.get(k) != v}
    if not kept:
        return recipe, config, meta, {}
    recipe = recipes.resolve(recipe, meta["total_steps"] / meta["steps_per_epoch"], {**given, **kept})
    config = config.replace(**{k: v for k, v in kept.items() if k in ("drop_path", "dropout")})
    recipe = recipes.as_trained(recipe, config)
    began = found.get("regularisation") or {}
    record = {**recipes.regularisation(recipe), "epochs": began.get("epochs", meta["regularisation"]["epochs"]),
              "strength": began.get("strength", meta["regularisation"]["strength"])}
    meta = {**meta, "model_config": config.to_dict(), "recipe": recipe.to_dict(), "regularisation": record}
    return recipe, config, meta, kept


def resume_notes(found: Mapping[str, Any], meta: Mapping[str, Any], kept: Mapping[str, Any]) -> list[str]:
    """What a resumed run says of a new length: the schedule follows it; the regularisation does not (`kept`:
    the parts as_begun kept from the run's start)."""
    if found.get("total_steps", meta["total_steps"]) == meta["total_steps"]:
        return []
    note = f"note: the run now ends at step {meta['total_steps']}, not {found['total_steps']}; the schedule follows"
    if kept:
        model_first = sorted(kept, key=lambda k: (k not in ("drop_path", "dropout"), recipes.REGULARISATION_PARTS.index(k)))
        values = ", ".join(f"{k} {kept[k]:g}" for k in model_first)
        began = (found.get("regularisation") or {}).get("epochs")
        scaled = f": as scaled to its {began:g} epochs, not to {meta['total_steps'] / meta['steps_per_epoch']:g}" if began else ""
        note += f"; the regularisation stays as the run began ({values}{scaled})"
    return [note]


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
    validation: data_lib.Split | None, test: data_lib.Split | None, step: int, total: int, spe: int,
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
        progress.note(f"step {step} (epoch {step / spe:.2f}): {name} accuracy {evals[name]['accuracy']:.2%}, "
                      f"{name} loss {evals[name]['loss']:.4f}")
    log.plot(curves)
    return evals
