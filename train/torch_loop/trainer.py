"""`vit train --framework torch`: the PyTorch twin trained by the same recipes on the same data.

The same run as train.trainer's, framework for framework: the same examples in the same order
(train.data.BatchOrder), the same recipe resolved for the run's length, the same learning rate per step,
optimizer semantics, evaluations, metrics.jsonl, curves.png, config.json and model.safetensors. What is
PyTorch's: the model (torch_vit), augmentation with torchvision (train.torch_augment), torch.optim
(train.torch_step) and checkpoints (train.torch_checkpoint). CPU, or CUDA where present (bfloat16 autocast
with --dtype bfloat16; parameters stay float32).

Every step seeds torch's RNG from (seed, step): augmentation and dropout of a step depend on the step
alone, so a run resumed from a checkpoint continues exactly (bit for bit on the CPU).
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
from train import recipes, run
from train.data import BatchOrder
from train.finetune import finetune_weights
from train.metrics import MetricsLog, Progress
from train.recipes import get_recipe
from train.run import DivergedError, TrainOptions, TrainResult
from train.torch_checkpoint import TorchCheckpoints
from train.torch_evaluate import evaluate
from train.torch_step import TrainStep

DTYPES = {"float32": None, "bfloat16": torch.bfloat16}

# What only the JAX trainer does (XLA dispatch and multi-host options).
_JAX_ONLY = (("streaming", "--streaming"), ("data_on_device", "--data-on-device"))


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
    """
    run.check_options(options, DTYPES)
    if options.framework != "torch":
        raise ValueError(f"train.torch_trainer trains the PyTorch model, not --framework {options.framework}")
    for field, flag in _JAX_ONLY:
        if getattr(options, field):
            raise ValueError(f"{flag} is an option of the JAX trainer: drop it with --framework torch")
    if options.steps_per_dispatch != 1:
        raise ValueError("--steps-per-dispatch is an option of the JAX trainer (XLA dispatch): drop it with --framework torch")
    device = torch.device(device) if device is not None else default_device()
    if options.dtype == "bfloat16" and device.type == "cpu":
        print("note: bfloat16 autocast on the CPU is slow in PyTorch; it is meant for CUDA", file=sys.stderr)
    recipe = get_recipe(options.recipe, epochs=options.epochs, batch_size=options.batch_size, lr=options.lr)
    recipes.resolve(recipe, recipe.epochs, options.regularisation)  # a bad flag fails before any data is read
    architecture = run.architecture(options)
    if options.workdir is None:
        options = dataclasses.replace(options, workdir=run.default_workdir(options))
    workdir = Path(options.workdir)

    data = run.load_in_memory(options, dataset)
    order = BatchOrder(len(data.train), recipe.batch_size, options.seed)
    spe = order.steps_per_epoch
    total = options.steps or recipe.epochs * spe
    checkpoint_every = options.checkpoint_every or spe
    recipe = recipes.resolve(recipe, total / spe, options.regularisation)
    start_weights = dict(initial_state_dict) if initial_state_dict is not None else None
    if options.init_from:
        config, state_dict, missing = finetune_weights(
            options.init_from, data.image_shape, data.num_classes, recipe.model_overrides, options.init_variant
        )
        start_weights = state_dict
    else:
        config = run.model_config(options.model, recipe, data.num_classes, data.image_shape, **architecture)
        missing = []
    recipe = dataclasses.replace(recipe, augment=dataclasses.replace(recipe.augment, mean=config.image_mean, std=config.image_std))
    meta = run.run_meta(options, config, data.name, recipe, total, spe, data.examples)

    torch.manual_seed(options.seed)
    model = torch_vit.ViT(config)
    # The JAX trainer's initialisation, drawn from torch's RNG: the same distributions, not the same values.
    model.init_like_flax()
    if start_weights is not None:
        fresh = torch_vit.state_dict_numpy(model)
        for name in missing:  # a new head: zero, as the JAX trainer's (big_vision's fine-tuning)
            start_weights[name] = fresh[name]
        model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in start_weights.items()}, strict=True)
    model = model.to(device)
    trainer = TrainStep(model, recipe, spe, total, data.num_classes, autocast_dtype=DTYPES[options.dtype])

    checkpoints = TorchCheckpoints(workdir, keep=options.keep_checkpoints)
    restored = checkpoints.restore_latest(meta)
    start = 0
    if restored is not None:
        start, state, found = restored
        run.check_not_past_end(start, total, workdir)
        model.load_state_dict(state["model"])
        trainer.load_state_dict(state["optimizer"])
        if found.get("seed", options.seed) != options.seed:
            print(f"note: resuming with the checkpoint's seed {found['seed']} (not --seed {options.seed})", file=sys.stderr)
            options = dataclasses.replace(options, seed=found["seed"])
            order = BatchOrder(len(data.train), recipe.batch_size, options.seed)
            meta["seed"] = options.seed
        if found.get("total_steps", total) != total:
            print(f"note: the run now ends at step {total}, not {found['total_steps']}; the schedule follows", file=sys.stderr)
    run.write_config(workdir, meta, options)

    log = MetricsLog(workdir, start)
    progress = Progress(total, start, enabled=options.progress)
    progress.note(recipes.describe(recipe, total / spe))
    progress.note(f"training the PyTorch model on {device} on {len(data.train)} examples, "
                  f"{len(data.validation) if data.validation is not None else 'none'} held out for validation")
    if restored is not None:
        progress.note(f"resuming from step {start} of {total} in {workdir}")

    pending: list[dict[str, Any]] = []
    tick, tick_step = time.perf_counter(), start
    evals: dict[str, dict[str, float]] = {}
    splits = {"validation": data.validation, "test": data.test}
    try:
        for step in range(start, total):
            idx = order.indices(step)
            torch.manual_seed(step_seed(options.seed, step))  # this step's augmentation and dropout
            metrics = trainer.step(torch.from_numpy(data.train.images[idx]), torch.from_numpy(data.train.labels[idx].astype(np.int64)), step)
            pending.append(metrics)
            progress.update(1)
            done = step + 1
            is_last = done == total
            want_eval = run.wants_eval(done, total, spe, options.eval_every, data.validation is not None)
            want_checkpoint = is_last or done % checkpoint_every == 0
            if not metrics["finite"] or done % options.log_every == 0 or want_eval or want_checkpoint:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                record = run.summarise(pending, done, spe, recipe.batch_size, time.perf_counter() - tick)
                if not record.pop("finite"):
                    raise DivergedError(run.diverged_message(tick_step, done, checkpoints.steps(), checkpoints.directory))
                log.write(record)
                progress.show(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}",
                              img_s=f"{record['images_per_s'] or 0:.0f}", lr=f"{record['lr']:.2e}")
                pending, tick, tick_step = [], time.perf_counter(), done
            if want_eval:
                for name in ("validation", "test") if is_last else ("validation",):
                    if splits[name] is None:
                        continue
                    evals[name] = evaluate(model, splits[name].images, splits[name].labels, options.eval_batch_size)
                    log.write({"kind": "eval", "split": name, "step": done, "epoch": done / spe, **evals[name]})
                    progress.note(f"step {done} (epoch {done / spe:.2f}): {name} accuracy {evals[name]['accuracy']:.4f}, "
                                  f"{name} loss {evals[name]['loss']:.4f}")
                log.plot(workdir / "curves.png")
                tick = time.perf_counter()
            if want_checkpoint:
                checkpoints.save(done, model, trainer.state_dict(), meta)
                tick = time.perf_counter()
    finally:
        progress.close()
    if "test" not in evals:  # resumed a finished run: nothing trained, still report
        for name, split in splits.items():
            if split is not None:
                evals[name] = evaluate(model, split.images, split.labels, options.eval_batch_size)
    model = model.cpu()
    torch_vit.save(workdir / "model.safetensors", model, data.class_names)
    val = evals.get("validation", {})
    return TrainResult(str(workdir), config, total, evals["test"]["accuracy"], evals["test"]["loss"],
                       val.get("accuracy"), val.get("loss"), torch_vit.state_dict_numpy(model), log.records)
