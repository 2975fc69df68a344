"""The training loop of `vit train`: data -> jitted steps -> metrics, evaluations and checkpoints."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import jax_vit
from jax_vit import ViT
from train import data as data_lib
from train import device_data, recipes, run, sharding
from train.checkpoint import Checkpoints
from train.evaluate import evaluate, make_eval_step
from train.finetune import finetune_start
from train.metrics import MetricsLog, Progress
from train.optim import make_optimizer
from train.recipes import get_recipe
from train.run import DivergedError, TrainOptions, TrainResult, default_workdir, model_config  # noqa: F401 (re-exported)
from train.step import TrainState, make_multi_step, make_train_step
from vit_spec import ViTConfig

DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}

# `initial_params(config, rng) -> params`: where a run's parameters come from. jax_vit.init_params by
# default; `vit train --init-from FILE` plugs a loader in here.
InitialParams = Callable[[ViTConfig, jax.Array], Any]


def train(
    options: TrainOptions, dataset: data_lib.Dataset | None = None, initial_params: InitialParams | None = None
) -> TrainResult:
    """Trains (or resumes training in options.workdir) and returns the final state and test metrics.

    `dataset` replaces reading options.dataset from tfds (tests pass small in-memory data).
    """
    run.check_options(options, DTYPES)
    if options.framework != "jax":
        raise ValueError(f"train.trainer trains the JAX model; --framework {options.framework} has its own trainer")
    if options.steps_per_dispatch < 1:
        raise ValueError(f"--steps-per-dispatch must be at least 1, got {options.steps_per_dispatch}")
    # Several steps per call gather their batches on the device, from the split kept there.
    on_device = options.data_on_device or options.steps_per_dispatch > 1
    if on_device and options.streaming:
        raise ValueError(
            "--streaming reads batches on the host, for data too large for memory: it cannot be combined with "
            "--steps-per-dispatch above 1 or --data-on-device, which keep the whole split on the device"
        )
    recipe = get_recipe(options.recipe, epochs=options.epochs, batch_size=options.batch_size, lr=options.lr)
    recipes.resolve(recipe, recipe.epochs, options.regularisation)  # a bad flag fails before any data is read
    architecture = run.architecture(options)
    mesh = sharding.make_mesh()
    sharding.check_batch_size(recipe.batch_size, mesh)
    lead = jax.process_index() == 0
    if options.workdir is None:
        options = dataclasses.replace(options, workdir=default_workdir(options))
    workdir = Path(options.workdir)

    # Data: the training split in memory, or streamed from its data source.
    train_source = None
    if dataset is None and options.streaming:
        sources = data_lib.open_sources(options.dataset, data_lib.resolve_data_dir(options.data_dir))
        num_classes, image_shape = data_lib.describe(sources["train"])
        train_source, test = sources["train"], data_lib.load_split(sources["test"], "test")
        n_all = len(train_source)
        train_idx, held_out = data_lib.validation_indices(n_all, options.validation)
        validation = data_lib.read_split(train_source, held_out) if options.validation else None
        if options.validation:
            train_source = data_lib.SourceSubset(train_source, train_idx)
        n_train = len(train_source)
        dataset_name = options.dataset
        class_names = tuple(data_lib.label_names(sources["train"]))
    else:
        loaded = run.load_in_memory(options, dataset)
        train_split, validation, test = loaded.train, loaded.validation, loaded.test
        num_classes, image_shape, n_train = loaded.num_classes, loaded.image_shape, len(loaded.train)
        dataset_name, n_all, class_names = loaded.name, loaded.examples, loaded.class_names

    order = data_lib.BatchOrder(n_train, recipe.batch_size, options.seed)
    spe = order.steps_per_epoch
    total = options.steps or recipe.epochs * spe
    checkpoint_every = options.checkpoint_every or spe
    # The regularisation of a run of this length (the default recipe scales it), then the flags' parts.
    recipe = recipes.resolve(recipe, total / spe, options.regularisation)
    if options.init_from:
        config, initial_params = finetune_start(
            options.init_from, image_shape, num_classes, recipe.model_overrides, options.init_variant
        )
    else:
        config = model_config(options.model, recipe, num_classes, image_shape, **architecture)
    # Augmentation normalises as the model expects (a fine-tuned checkpoint brings its own constants).
    recipe = dataclasses.replace(recipe, augment=dataclasses.replace(recipe.augment, mean=config.image_mean, std=config.image_std))
    tx, schedule = make_optimizer(recipe, spe, total)
    model = ViT(config, dtype=DTYPES[options.dtype])
    meta = {
        **run.run_meta(options, config, dataset_name, recipe, total, spe, n_all),
        # Runs of another K (or data path) agree to float32 rounding, not bit for bit (train.step.make_multi_step).
        "steps_per_dispatch": options.steps_per_dispatch,
        "data_on_device": on_device,
        "devices": int(mesh.devices.size),
        "processes": jax.process_count(),
    }

    # State: fresh (or from initial_params), then replaced by the newest good checkpoint.
    repl = sharding.replicated(mesh)
    init = initial_params or (lambda cfg, key: jax_vit.init_params(cfg, key))
    params = sharding.replicate(mesh, sharding.to_host(init(config, jax.random.key(options.seed))))
    state = jax.jit(lambda p: TrainState.create(p, tx), out_shardings=repl)(params)
    rng = sharding.replicate(mesh, np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.key(options.seed), 1))))
    checkpoints = Checkpoints(workdir, keep=options.keep_checkpoints)
    restored = checkpoints.restore_latest({"state": state, "rng": rng}, meta)
    start = 0
    if restored is not None:
        start, tree, found = restored
        run.check_not_past_end(start, total, workdir)
        state, rng = tree["state"], tree["rng"]
        if found.get("seed", options.seed) != options.seed:
            # The run continues as it began: its data order and augmentation follow its own seed.
            print(f"note: resuming with the checkpoint's seed {found['seed']} (not --seed {options.seed})", file=sys.stderr)
            options = dataclasses.replace(options, seed=found["seed"])
            order = data_lib.BatchOrder(n_train, recipe.batch_size, options.seed)
            meta["seed"] = options.seed
        if found.get("total_steps", total) != total:
            print(f"note: the run now ends at step {total}, not {found['total_steps']}; the schedule follows", file=sys.stderr)
        if (found.get("steps_per_dispatch", 1), found.get("data_on_device", False)) != (options.steps_per_dispatch, on_device):
            print(f"note: resuming with --steps-per-dispatch {options.steps_per_dispatch} (data on the device: {on_device}), "
                  f"not {found.get('steps_per_dispatch', 1)} ({found.get('data_on_device', False)}): the same steps, "
                  "compiled otherwise, so equal to float32 rounding, not necessarily bit for bit", file=sys.stderr)
    if lead:
        run.write_config(workdir, meta, options)

    log = MetricsLog(workdir, start, enabled=lead)
    train_step = make_train_step(model, tx, schedule, recipe.augment, num_classes, mesh)
    eval_step = make_eval_step(model, mesh)
    progress = Progress(total, start, enabled=options.progress and lead)
    if lead:
        progress.note(recipes.describe(recipe, total / spe))
        progress.note(f"training on {n_train} examples, {len(validation) if validation is not None else 'none'} held out for validation"
                      + ("" if validation is not None else " (--validation 0: the test split is scored once, at the end)"))
    if restored is not None:
        progress.note(f"resuming from step {start} of {total} in {workdir}")
    pi, pc = jax.process_index(), jax.process_count()
    if on_device:
        # The split goes to the device once; each call then sends only its batches' rows.
        train_split = device_data.put_split(train_split, mesh)
        multi_step = make_multi_step(model, tx, schedule, recipe.augment, num_classes, mesh)
    elif train_source is not None:
        batches = iter(data_lib.StreamingBatches(train_source, order, start, total, pi, pc))
    else:
        batches = data_lib.memory_batches(train_split, order, start, total, pi, pc)
    # A call never runs past a step that logs, evaluates or checkpoints: those need its state.
    boundaries = (options.log_every, checkpoint_every, spe * options.eval_every)

    pending: list[dict[str, jax.Array]] = []
    tick, tick_step = time.perf_counter(), start
    evals: dict[str, dict[str, float]] = {}  # split -> the latest {"accuracy", "loss"}
    untimed = 0  # pending steps of calls that compiled their program: no speed for them
    compiled: set[int] = set()  # the call lengths (steps per call) compiled so far
    try:
        step = start
        while step < total:
            done = call_end(step, options.steps_per_dispatch if on_device else 1, total, boundaries)
            compiles = done - step not in compiled
            if compiles:
                jax.block_until_ready(pending)  # the calls before are timed up to here
                compile_start = time.perf_counter()
            if on_device:
                rows = device_data.global_rows(mesh, device_data.chunk_rows(order, step, done - step, pi, pc))
                state, metrics = multi_step(state, train_split, rows, rng)
            else:
                images, labels = sharding.global_batch(mesh, *next(batches))
                state, metrics = train_step(state, (images, labels), rng)
            pending.append(metrics)
            progress.dispatched(done - step, metrics)  # the bar counts the steps as they finish
            if compiles:  # leave compilation out of images/s
                jax.block_until_ready(metrics)
                tick += time.perf_counter() - compile_start
                untimed += done - step
                compiled.add(done - step)
            step = done
            is_last = done == total
            want_eval = run.wants_eval(done, total, spe, options.eval_every, validation is not None)
            want_checkpoint = is_last or done % checkpoint_every == 0
            if pending and (done % options.log_every == 0 or want_eval or want_checkpoint):
                jax.block_until_ready(pending)  # steps run asynchronously: time them once finished
                progress.drain()
                record = _summarise(pending, done, spe, recipe.batch_size, time.perf_counter() - tick, untimed)
                if not record.pop("finite"):
                    good = checkpoints.steps()
                    raise DivergedError(run.diverged_message(tick_step, done, good, checkpoints.directory))
                log.write(record)
                progress.show(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}",
                              img_s=f"{record['images_per_s'] or 0:.0f}", lr=f"{record['lr']:.2e}")
                pending, tick, tick_step, untimed = [], time.perf_counter(), done, 0
            if want_eval:
                # Evaluations score the held-out examples; the test split only once, at the end.
                scored = {"validation": validation, "test": test} if is_last else {"validation": validation}
                for name, split in scored.items():
                    if split is None:
                        continue
                    evals[name] = evaluate(eval_step, state.params, split, mesh, options.eval_batch_size)
                    log.write({"kind": "eval", "split": name, "step": done, "epoch": done / spe, **evals[name]})
                    progress.note(f"step {done} (epoch {done / spe:.2f}): {name} accuracy {evals[name]['accuracy']:.4f}, "
                                  f"{name} loss {evals[name]['loss']:.4f}")
                log.plot(workdir / "curves.png")
                tick = time.perf_counter()  # nor is evaluating
            if want_checkpoint:
                checkpoints.save(done, state, rng, meta)
                tick = time.perf_counter()  # saving is not training time
    finally:
        progress.close()
    if "test" not in evals:  # resumed a finished run: nothing trained, still report
        for name, split in (("validation", validation), ("test", test)):
            if split is not None:
                evals[name] = evaluate(eval_step, state.params, split, mesh, options.eval_batch_size)
    host_params = sharding.to_host(state.params)
    if lead:
        jax_vit.save(workdir / "model.safetensors", config, host_params, class_names)
    checkpoints.close()
    val = evals.get("validation", {})
    return TrainResult(str(workdir), config, total, evals["test"]["accuracy"], evals["test"]["loss"],
                       val.get("accuracy"), val.get("loss"), host_params, log.records)


def call_end(step: int, steps_per_call: int, total: int, boundaries: tuple[int, ...]) -> int:
    """Where a call of up to `steps_per_call` steps from `step` ends: at most at `total`, and at the first
    multiple of each boundary period (log, checkpoint, evaluation; 0: none) after `step`."""
    end = min(step + steps_per_call, total)
    for period in boundaries:
        if period > 0:
            end = min(end, (step // period + 1) * period)
    return end


def _summarise(
    pending: list[dict[str, jax.Array]], step: int, spe: int, batch: int, seconds: float, untimed: int = 0
) -> dict[str, Any]:
    """run.summarise of the calls since the last record: `pending` holds one metrics dict per call, scalars
    (one step) or arrays of K steps (make_multi_step)."""
    values = [
        dict(zip(call, step_values))
        for call in sharding.to_host(pending)
        for step_values in zip(*(np.reshape(v, -1) for v in call.values()))
    ]
    return run.summarise(values, step, spe, batch, seconds, untimed)
