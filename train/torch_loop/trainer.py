"""`vit train --framework torch`: the PyTorch twin trained by the same recipes on the same data.

The same run as train.jax_loop.trainer's, framework for framework: the same examples in the same order
(train.data.BatchOrder), the same recipe resolved for the run's length, the same learning rate per step,
optimizer semantics, evaluations, metrics.jsonl, curves.png, config.json and model.safetensors. What is
PyTorch's: the model (torch_vit), augmentation with torchvision (train.torch_loop.augment), torch.optim
(train.torch_loop.step) and checkpoints (train.torch_loop.checkpoint). CPU, or CUDA where present (bfloat16 autocast
with --dtype bfloat16; parameters stay float32).

Every step seeds torch's RNG from (seed, step): augmentation and dropout of a step depend on the step
alone, so a run resumed from a checkpoint continues exactly (bit for bit on the CPU).

`train` runs the stages of train.jax_loop.trainer's run, by the same names:
  _set_up              check the flags, read the data, resolve the recipe for the run's length: a _Setup
  _initial_state       step 0: the model (fresh, or from given weights) and its optimizer (of the trainable
                       parameters: --freeze)
  _resume              the newest good checkpoint in their place, with notes on what changed since
    _as_begun            a resumed run's regularisation as it began, whatever its new length
  _open_progress       the bar and the notes that open the run
  _train_loop          the steps, each followed by what falls due after it:
    _write_train_record  a metrics.jsonl train record (and the divergence check)
    _evaluate_round      an evaluation: eval records, notes, curves.png
  _finish              the final save: model.safetensors and the run's result
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

import torch_vit
from train import length_advice, recipes, run, write_errors
from train.checkpoint_cadence import CheckpointCadence
from train.data import BatchOrder
from train.finetune import finetune_checkpoint
from train.interrupts import Interrupted, StopSignals
from train.metrics import MetricsLog, Progress
from train.recipes import Recipe
from train.run import DivergedError, TrainOptions, TrainResult
from train.torch_loop.checkpoint import TorchCheckpoints
from train.torch_loop.evaluate import evaluate
from train.torch_loop.step import TrainStep
from train.workdir_lock import WorkdirLock
from vit_spec import ViTConfig

DTYPES = {"float32": None, "bfloat16": torch.bfloat16}

# What only the JAX trainer does (XLA dispatch and multi-host options).
# The PyTorch trainer is data-parallel (DDP) over its processes: --mesh's fsdp and model axes are JAX's.
_JAX_ONLY = (("streaming", "--streaming"), ("data_on_device", "--data-on-device"), ("mesh", "--mesh"),
             ("remat", "--remat"))


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What set-up decides before the model exists; the rest of the run reads it. Only _resume replaces it (a
    resumed run keeps its checkpoint's seed)."""

    options: TrainOptions  # workdir filled in
    workdir: Path
    device: torch.device
    data: run.InMemoryData
    order: BatchOrder
    spe: int  # steps per epoch
    total: int  # steps of the whole run
    cadence: CheckpointCadence
    recipe: Recipe  # resolved for the run's length, normalising as the model expects
    config: ViTConfig
    start_weights: Mapping[str, np.ndarray] | None  # None: a fresh initialisation
    missing: tuple[str, ...]  # of start_weights: taken from the fresh model (a new head)
    meta: dict[str, Any]  # what config.json and every checkpoint record
    init_summary: str | None = None  # --init-from: the line saying what was loaded (train.finetune.summary)


@dataclasses.dataclass(frozen=True)
class _Start:
    """Where the loop begins: step 0 with the initial model, or a checkpoint's step and state (loaded into the
    model and the optimizer)."""

    step: int
    model: torch_vit.ViT
    trainer: TrainStep
    resumed: bool = False


@dataclasses.dataclass
class _Window:
    """The steps since the last train record, which the next one summarises, and its clock."""

    step: int  # where the window began: a divergence happened after it
    tick: float  # time.perf_counter() at its start, moved on past evaluating and saving
    pending: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one per step


def step_seed(seed: int, step: int) -> int:
    """The seed of torch's RNG for one step: distinct for every (seed, step), stable across runs."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0])


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(
    options: TrainOptions,
    dataset: Any = None,
    initial_state_dict: Mapping[str, np.ndarray] | None = None,
    device: torch.device | str | None = None,
) -> TrainResult:
    """Trains the PyTorch ViT (or resumes training in options.workdir) and returns the final weights and test metrics.

    Args:
        options: as the JAX trainer's; framework must be "torch".
        dataset: small in-memory data replacing options.dataset (tests).
        initial_state_dict: start from these weights (timm names) instead of a fresh initialisation (the JAX
            twin's distributions, torch_vit.ViT.init_like_flax, under the run's seed); `vit compare` starts
            both frameworks from the same weights.
        device: default CUDA when available, else the CPU.

    The workdir is the run's alone while it runs (train.workdir_lock); SIGINT and SIGTERM stop it after the step
    in flight with a checkpoint of that step (train.interrupts.Interrupted).
    """
    _check(options)
    if options.workdir is None:
        options = dataclasses.replace(options, workdir=run.default_workdir(options))
    with WorkdirLock(options.workdir):
        write_errors.remove_unfinished_saves(options.workdir)
        return _train(options, dataset, initial_state_dict, device)


def _train(
    options: TrainOptions,
    dataset: Any,
    initial_state_dict: Mapping[str, np.ndarray] | None,
    device: torch.device | str | None,
) -> TrainResult:
    setup = _set_up(options, dataset, initial_state_dict, device)
    start = _initial_state(setup)
    checkpoints = TorchCheckpoints(setup.workdir, keep=setup.options.keep_checkpoints)
    setup, start = _resume(setup, checkpoints, start)
    run.write_config(setup.workdir, setup.meta, setup.options)

    log = MetricsLog(setup.workdir, start.step)
    progress = _open_progress(setup, start)
    try:
        evals = _train_loop(setup, start, checkpoints, log, progress)
    finally:
        progress.close()
    return _finish(setup, start.model, evals, log)


def _check(options: TrainOptions) -> None:
    """Refuses what this trainer cannot run, before anything is built or read."""
    run.check_options(options, DTYPES)
    if options.framework != "torch":
        raise ValueError(f"train.torch_loop.trainer trains the PyTorch model, not --framework {options.framework}")
    for field, flag in _JAX_ONLY:
        if getattr(options, field):
            raise ValueError(f"{flag} is an option of the JAX trainer: drop it with --framework torch")
    if options.steps_per_dispatch != 1:
        raise ValueError("--steps-per-dispatch is an option of the JAX trainer (XLA dispatch): drop it with --framework torch")


def _set_up(
    options: TrainOptions,
    dataset: Any,
    initial_state_dict: Mapping[str, np.ndarray] | None,
    device: torch.device | str | None,
) -> _Setup:
    """Everything the run decides before its model exists. The flags are checked before any data is read; the
    data then gives the steps per epoch, hence the run's length, for which the recipe is resolved."""
    _check(options)
    device = torch.device(device) if device is not None else default_device()
    if options.dtype == "bfloat16" and device.type == "cpu":
        print("note: bfloat16 autocast on the CPU is slow in PyTorch; it is meant for CUDA", file=sys.stderr)
    recipe = run.recipe_of(options)
    recipes.resolve(recipe, recipe.epochs, options.regularisation)  # a bad flag fails before any data is read
    architecture = run.architecture(options)
    if options.workdir is None:
        options = dataclasses.replace(options, workdir=run.default_workdir(options))

    data = run.load_in_memory(options, dataset)
    order = BatchOrder(len(data.train), recipe.batch_size, options.seed)
    spe = order.steps_per_epoch
    total = options.steps or recipe.epochs * spe
    recipe = recipes.resolve(recipe, total / spe, options.regularisation)
    start_weights = dict(initial_state_dict) if initial_state_dict is not None else None
    missing: list[str] = []
    init_summary = None
    if options.init_from:
        start = finetune_checkpoint(
            options.init_from, data.image_shape, data.num_classes, recipe.model_overrides, options.init_variant,
            data.class_names,
        )
        config, start_weights, missing, init_summary = start.config, start.state_dict, start.missing, start.summary
    else:
        config = run.model_config(options.model, recipe, data.num_classes, data.image_shape, **architecture)
    recipe = recipes.as_trained(recipe, config)
    meta = run.run_meta(options, config, data, recipe, total, spe)
    return _Setup(
        options=options, workdir=Path(options.workdir), device=device, data=data, order=order, spe=spe, total=total,
        cadence=CheckpointCadence.of_run(options.checkpoint_every, options.checkpoint_seconds, spe), recipe=recipe,
        config=config, start_weights=start_weights,
        missing=tuple(missing), meta=meta, init_summary=init_summary,
    )


def _initial_state(setup: _Setup) -> _Start:
    """Step 0: the model under the run's seed (or its start weights) on the device, and its optimizer."""
    torch.manual_seed(setup.options.seed)
    model = torch_vit.ViT(setup.config)
    # The JAX trainer's initialisation, drawn from torch's RNG: the same distributions, not the same values.
    model.init_like_flax()
    if setup.start_weights is not None:
        weights = dict(setup.start_weights)
        fresh = torch_vit.state_dict_numpy(model)
        for name in setup.missing:  # a new head: zero, as the JAX trainer's (big_vision's fine-tuning)
            weights[name] = fresh[name]
        model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in weights.items()}, strict=True)
    model = model.to(setup.device)
    trainer = TrainStep(model, setup.recipe, setup.spe, setup.total, setup.data.num_classes,
                        autocast_dtype=DTYPES[setup.options.dtype], freeze=setup.options.freeze)
    return _Start(0, model, trainer)


def _resume(setup: _Setup, checkpoints: TorchCheckpoints, fresh: _Start) -> tuple[_Setup, _Start]:
    """The newest good checkpoint loaded into `fresh`'s model and optimizer, when the workdir holds one (of this
    run, not past its end), and notes on what differs from the flags: the checkpoint's seed wins, a new length
    is followed, the regularisation stays as the run began (_as_begun: then a model built for it)."""
    restored = checkpoints.restore_latest(lambda found: _as_begun(setup, found)[0].meta)
    if restored is None:
        return setup, fresh
    start, state, found = restored
    run.check_not_past_end(start, setup.total, setup.workdir)
    setup, kept = _as_begun(setup, found)
    if kept:  # a model and a step that apply the run's first regularisation
        fresh = _initial_state(setup)
    fresh.model.load_state_dict(state["model"])
    fresh.trainer.load_state_dict(state["optimizer"])
    options = setup.options
    if found.get("seed", options.seed) != options.seed:
        print(f"note: resuming with the checkpoint's seed {found['seed']} (not --seed {options.seed})", file=sys.stderr)
        options = dataclasses.replace(options, seed=found["seed"])
        order = BatchOrder(len(setup.data.train), setup.recipe.batch_size, options.seed)
        setup = dataclasses.replace(setup, options=options, order=order, meta={**setup.meta, "seed": options.seed})
    for note in run.resume_notes(found, setup.meta, kept):
        print(note, file=sys.stderr)
    return setup, dataclasses.replace(fresh, step=start, resumed=True)


def _as_begun(setup: _Setup, found: Mapping[str, Any]) -> tuple[_Setup, dict[str, Any]]:
    """`setup` as the run recorded by `found` (a checkpoint's meta) continues: a length-scaled recipe's
    regularisation as the run began, not as its new length would scale it (run.as_begun). Also the parts kept
    (empty: `setup` unchanged)."""
    recipe, config, meta, kept = run.as_begun(setup.recipe, setup.config, setup.meta, found, setup.options.regularisation)
    if not kept:
        return setup, {}
    return dataclasses.replace(setup, recipe=recipe, config=config, meta=meta), kept


def _open_progress(setup: _Setup, start: _Start) -> Progress:
    """The progress bar, from the loop's first step, and the notes that open the run."""
    data = setup.data
    progress = Progress(setup.total, start.step, enabled=setup.options.progress)
    for line in data.lines:
        progress.note(line)
    if setup.init_summary and not start.resumed:  # a resumed run's weights are its checkpoint's
        progress.note(setup.init_summary)
    for note in run.opening_notes(setup.options):
        progress.note(note)
    # The length the regularisation was scaled to: a resumed run's first (_as_begun).
    progress.note(recipes.describe(setup.recipe, setup.meta["regularisation"]["epochs"]))
    progress.note(f"{run.examples_line(len(data.train), data.validation, data.test)}; the PyTorch model on {setup.device}")
    if start.resumed:
        progress.note(f"resuming from step {start.step} of {setup.total} in {setup.workdir}")
    return progress


def _train_loop(
    setup: _Setup, start: _Start, checkpoints: TorchCheckpoints, log: MetricsLog, progress: Progress
) -> dict[str, dict[str, float]]:
    """Runs the steps from start.step to the end; after each, the train record, evaluation and checkpoint due
    then. Returns the latest scores per split (the model is trained in place).

    A SIGINT or SIGTERM (StopSignals) ends it after the step in flight: its train record, the evaluation due
    then, a checkpoint of that step, then Interrupted."""
    options, spe, total, data, cadence = setup.options, setup.spe, setup.total, setup.data, setup.cadence
    model, trainer = start.model, start.trainer
    window = _Window(start.step, time.perf_counter())
    evals: dict[str, dict[str, float]] = {}  # split -> the latest {"accuracy", "loss"}
    advice = length_advice.FirstRunAdvice(options, setup.recipe, total, spe, accelerator=setup.device.type != "cpu",
                                          fresh=start.step == 0)
    cadence.saved()  # the clock of --checkpoint-every's time starts with the loop
    with StopSignals(say=progress.note) as stop:
        for step in range(start.step, total):
            idx = setup.order.indices(step)
            torch.manual_seed(step_seed(options.seed, step))  # this step's augmentation and dropout
            metrics = trainer.step(torch.from_numpy(data.train.images[idx]), torch.from_numpy(data.train.labels[idx].astype(np.int64)), step)
            window.pending.append(metrics)
            progress.update(1)
            done = step + 1
            stopping = stop.stop_at(done) and done < total
            want_eval = run.wants_eval(done, total, spe, options.eval_every, data.validation is not None)
            want_checkpoint = stopping or cadence.due(done, total, cadence.time_due(done, options.log_every))
            # A run's last step always logs, whatever --log-every: a short run gets its train record.
            if not metrics["finite"] or done % options.log_every == 0 or done == total or want_eval or want_checkpoint:
                window = _write_train_record(setup, window, done, checkpoints, log, progress)
                advice.after(log.records[-1], progress.note)
            if want_eval:
                evals.update(_evaluate_round(setup, model, done, log, progress))
                window.tick = time.perf_counter()
            if want_checkpoint:
                checkpoints.save(done, model, trainer.state_dict(), setup.meta)
                cadence.saved()
                window.tick = time.perf_counter()
            if stopping:
                raise Interrupted(stop.signum, done)
    return evals


def _write_train_record(
    setup: _Setup, window: _Window, done: int, checkpoints: TorchCheckpoints, log: MetricsLog, progress: Progress
) -> _Window:
    """Writes the train record of the window's steps and opens the next window at `done`. A non-finite loss
    or gradient among them ends the run: DivergedError names the checkpoints to go back to."""
    if setup.device.type == "cuda":
        torch.cuda.synchronize()
    record = run.summarise(window.pending, done, setup.spe, setup.recipe.batch_size, time.perf_counter() - window.tick)
    if not record.pop("finite"):
        raise DivergedError(run.diverged_message(window.step, done, checkpoints.steps(), checkpoints.directory))
    log.write(record)
    progress.show(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.1%}",
                  img_s=f"{record['images_per_s'] or 0:.0f}", lr=f"{record['lr']:.2e}")
    return _Window(done, time.perf_counter())


def _evaluate_round(
    setup: _Setup, model: torch_vit.ViT, step: int, log: MetricsLog, progress: Progress
) -> dict[str, dict[str, float]]:
    """One evaluation at `step`: each split scored, logged as an eval record and noted, then curves.png redrawn.
    Returns the scores by split."""
    score = lambda split: evaluate(model, split.images, split.labels, setup.options.eval_batch_size)
    return run.evaluation_round(setup.data.validation, setup.data.test, step, setup.total, setup.spe, score, log,
                                progress, setup.workdir / "curves.png")


def _finish(setup: _Setup, model: torch_vit.ViT, evals: dict[str, dict[str, float]], log: MetricsLog) -> TrainResult:
    """The final save: model.safetensors, then the run's result. The scores are the loop's last evaluation's;
    when it scored no test split (a finished run resumed), they are taken here."""
    data = setup.data
    if not evals:  # resumed a finished run: nothing trained, still report
        evals = dict(evals)
        for name, split in (("validation", data.validation), ("test", data.test)):
            if split is not None:
                evals[name] = evaluate(model, split.images, split.labels, setup.options.eval_batch_size)
    model = model.cpu()
    path = setup.workdir / "model.safetensors"
    with write_errors.writing("the trained weights", path, setup.workdir):
        torch_vit.save(path, model, data.class_names)
    val = evals.get("validation", {})
    test = evals.get("test", {})
    return TrainResult(str(setup.workdir), setup.config, setup.total, test.get("accuracy"), test.get("loss"),
                       val.get("accuracy"), val.get("loss"), torch_vit.state_dict_numpy(model), log.records)
