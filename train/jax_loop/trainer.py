"""The training loop of `vit train`: data -> jitted steps -> metrics, evaluations and checkpoints.

`train` runs a run's stages in order (train.torch_loop.trainer has the same stages, by the same names):
  _set_up              check the flags, read the data, resolve the recipe for the run's length, build the
                       model and optimizer: a _Setup
  _initial_state       step 0: fresh parameters, optimizer state (of the trainable ones: --freeze) and the run's key
  _resume              the newest good checkpoint in their place, with notes on what changed since
    _as_begun            a resumed run's regularisation as it began, whatever its new length
  _open_progress       the bar and the notes that open the run
  _dispatcher          how one call runs its steps (split on the device, or batches from the host)
  _train_loop          the calls, each followed by what falls due at its last step:
    _write_train_record  a metrics.jsonl train record (and the divergence check)
    _evaluate_round      an evaluation: eval records, notes, curves.png
  _finish              the final save: model.safetensors and the run's result
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

import jax_vit
from jax_vit import ViT
from train import data as data_lib
from train import folder_dataset
from train import length_advice, recipes, run, write_errors
from train.augment_config import AugmentConfig
from train.checkpoint_cadence import CheckpointCadence
from train.finetune import finetune_checkpoint
from train.interrupts import Interrupted, StopSignals
from train.jax_loop import device_data, memory_plan, sharding
from train.jax_loop.checkpoint import Checkpoints
from train.jax_loop.evaluate import evaluate, make_eval_step
from train.jax_loop.optim import make_optimizer
from train.metrics import MetricsLog, Progress
from train.recipes import Recipe
from train.run import DivergedError, TrainOptions, TrainResult, default_workdir, model_config  # noqa: F401 (re-exported)
from train.jax_loop.step import Metrics, StepFn, TrainState, make_multi_step, make_train_step
from train.workdir_lock import WorkdirLock
from vit_spec import ViTConfig

if TYPE_CHECKING:
    import optax
    from jax.sharding import Mesh

DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}

# `initial_params(config, rng) -> params`: where a run's parameters come from. jax_vit.init_params by
# default; `vit train --init-from FILE` plugs a loader in here.
InitialParams = Callable[[ViTConfig, jax.Array], Any]

# `dispatch(state, step, done) -> (state, metrics)`: one call running steps step..done-1 (_dispatcher).
Dispatch = Callable[[TrainState, int, int], tuple[TrainState, Metrics]]


@dataclasses.dataclass(frozen=True)
class _Data:
    """A run's examples. The training split is in memory (a data_lib.Split) or, with --streaming, its tfds data
    source, read batch by batch as the steps need it; the held-out splits are in memory either way."""

    train: Any  # data_lib.Split; when streamed, a tfds data source or a folder_dataset.FolderData
    streamed: bool
    validation: data_lib.Split | None
    test: data_lib.Split | None  # None: a folder without test/
    num_classes: int
    image_shape: tuple[int, int, int]
    name: str
    examples: int  # of the training split before the hold-out
    class_names: tuple[str, ...]
    validation_record: dict[str, Any] | None = None  # config.json's (run.run_meta)
    data_record: dict[str, Any] | None = None
    lines: tuple[str, ...] = ()  # the run's first lines about its data


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What set-up decides before any state exists; the rest of the run reads it. Only _resume replaces it
    (a resumed run keeps its checkpoint's seed)."""

    options: TrainOptions  # workdir filled in
    workdir: Path
    mesh: Mesh
    lead: bool  # process 0: the one that writes files and notes
    on_device: bool  # the training split is kept on the device (_on_device)
    data: _Data
    order: data_lib.BatchOrder
    spe: int  # steps per epoch
    total: int  # steps of the whole run
    cadence: CheckpointCadence
    recipe: Recipe  # resolved for the run's length, normalising as the model expects
    config: ViTConfig
    model: ViT
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    initial_params: InitialParams
    meta: dict[str, Any]  # what config.json and every checkpoint record
    init_summary: str | None = None  # --init-from: the line saying what was loaded (train.finetune.summary)


@dataclasses.dataclass(frozen=True)
class _Start:
    """Where the loop begins: step 0 with fresh state, or a checkpoint's step and state."""

    step: int
    state: TrainState
    rng: jax.Array  # the run's key: a step draws from fold_in(rng, step)
    resumed: bool = False


@dataclasses.dataclass
class _Window:
    """The calls dispatched since the last train record, which the next one summarises, and its clock."""

    step: int  # where the window began: a divergence happened after it
    tick: float  # time.perf_counter() at its start, moved on past compiling, evaluating and saving
    pending: list[Metrics] = dataclasses.field(default_factory=list)  # one per call
    untimed: int = 0  # steps of calls that compiled their program: no speed for them


def train(
    options: TrainOptions, dataset: data_lib.Dataset | None = None, initial_params: InitialParams | None = None
) -> TrainResult:
    """Trains (or resumes training in options.workdir) and returns the final state and test metrics.

    `dataset` replaces reading options.dataset from tfds (tests pass small in-memory data). The workdir is the
    run's alone while it runs (train.workdir_lock: the lead holds it); SIGINT and SIGTERM stop it after the step
    in flight with a checkpoint of that step (train.interrupts.Interrupted).
    """
    _check(options)
    if options.workdir is None:
        options = dataclasses.replace(options, workdir=default_workdir(options))
    lead = jax.process_index() == 0
    with WorkdirLock(options.workdir) if lead else contextlib.nullcontext():
        if lead:
            write_errors.remove_unfinished_saves(options.workdir)
        return _train(options, dataset, initial_params)


def _train(options: TrainOptions, dataset: data_lib.Dataset | None, initial_params: InitialParams | None) -> TrainResult:
    setup = _set_up(options, dataset, initial_params)
    # State: fresh (or from initial_params), then replaced by the newest good checkpoint.
    start = _initial_state(setup)
    checkpoints = Checkpoints(setup.workdir, keep=setup.options.keep_checkpoints)
    setup, start = _resume(setup, checkpoints, start)
    if setup.lead:
        run.write_config(setup.workdir, setup.meta, setup.options)

    log = MetricsLog(setup.workdir, start.step, enabled=setup.lead)
    # The state stays where _initial_state put it (a checkpoint is restored onto the same shardings).
    state_sharding = jax.tree_util.tree_map(lambda x: x.sharding, start.state)
    train_step = make_train_step(setup.model, setup.tx, setup.schedule, _step_augment(setup), setup.data.num_classes,
                                 setup.mesh, state_sharding)
    eval_step = make_eval_step(setup.model, setup.mesh, state_sharding.params)
    progress = _open_progress(setup, start)
    dispatch = _dispatcher(setup, start, train_step, state_sharding)
    try:
        state, evals = _train_loop(setup, start, dispatch, eval_step, checkpoints, log, progress)
    finally:
        progress.close()
    return _finish(setup, state, evals, eval_step, checkpoints, log)


def dry_run(options: TrainOptions, dataset: data_lib.Dataset | None = None) -> memory_plan.MemoryPlan:
    """The run `options` describe, planned instead of trained: its train step compiled for shapes only on its mesh,
    and each device's bytes (train.jax_loop.memory_plan). Reads only what the dataset says of its images
    (classes, shape, size), none of them; writes nothing."""
    _check(options)
    recipe = run.recipe_of(options)
    mesh = sharding.make_mesh(options.mesh)
    sharding.check_batch_size(recipe.batch_size, mesh)
    num_classes, image_shape, examples = _describe_data(options, dataset)
    spe = max(1, examples // recipe.batch_size)
    total = options.steps or recipe.epochs * spe
    built = _build(options, recipe, spe, total, num_classes, image_shape)
    recipe, config, tx, schedule = built.recipe, built.config, built.tx, built.schedule
    return memory_plan.plan(_model(config, options), tx, schedule, recipe.augment, num_classes, image_shape,
                            recipe.batch_size, mesh, options.freeze, _min_shard_bytes(options))


@dataclasses.dataclass(frozen=True)
class _Built:
    """What a run of a given length trains: the recipe resolved for it, the model config, the optimizer, and with
    --init-from the checkpoint's parameters and the line that says what was loaded."""

    recipe: Recipe
    config: ViTConfig
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    initial_params: InitialParams | None = None
    init_summary: str | None = None


def _build(options: TrainOptions, recipe: Recipe, spe: int, total: int, num_classes: int,
           image_shape: tuple[int, int, int], class_names: tuple[str, ...] = ()) -> _Built:
    """The recipe resolved for `total` steps, then the model (from --model, or --init-from's checkpoint) and the
    optimizer: what _set_up and dry_run share."""
    recipe = recipes.resolve(recipe, total / spe, options.regularisation)
    initial_params = init_summary = None
    if options.init_from:
        config, initial_params, init_summary = _finetune(options.init_from, image_shape, num_classes,
                                                         recipe.model_overrides, options.init_variant, class_names)
    else:
        config = model_config(options.model, recipe, num_classes, image_shape, **run.architecture(options))
    # Augmentation normalises as the model expects (a fine-tuned checkpoint brings its own constants).
    recipe = recipes.as_trained(recipe, config)
    tx, schedule = make_optimizer(recipe, spe, total)
    return _Built(recipe, config, tx, schedule, initial_params, init_summary)


def _describe_data(options: TrainOptions, dataset: data_lib.Dataset | None) -> tuple[int, tuple[int, int, int], int]:
    """(classes, image shape, training examples) of the run's data, from its metadata (a folder's headers)."""
    if dataset is not None:
        return dataset.num_classes, dataset.image_shape, len(dataset.train)
    if folder_dataset.is_folder(options.dataset):
        plan = folder_dataset.plan(options.dataset, options.image_size, options.crop_pct, options.validation,
                                   options.streaming, options.workers, run.checkpoint_size(options))
        return len(plan.class_names), (*plan.size, 3), len(plan.train)
    source = data_lib.open_sources(options.dataset, data_lib.resolve_data_dir(options.data_dir))["train"]
    num_classes, image_shape = data_lib.describe(source)
    return num_classes, tuple(image_shape), len(source) - run.validation_size(options)


def _on_device(options: TrainOptions) -> bool:
    """Whether the training split is kept on the device: several steps per call gather their batches there."""
    return options.data_on_device or options.steps_per_dispatch > 1


def _check(options: TrainOptions) -> None:
    """Refuses what this trainer cannot run, before anything is built or read."""
    run.check_options(options, DTYPES)
    if options.framework != "jax":
        raise ValueError(f"train.jax_loop.trainer trains the JAX model; --framework {options.framework} has its own trainer")
    if options.steps_per_dispatch < 1:
        raise ValueError(f"--steps-per-dispatch must be at least 1, got {options.steps_per_dispatch}")
    if _on_device(options) and options.streaming:
        raise ValueError(
            "--streaming reads batches on the host, for data too large for memory: it cannot be combined with "
            "--steps-per-dispatch above 1 or --data-on-device, which keep the whole split on the device"
        )


def _set_up(options: TrainOptions, dataset: data_lib.Dataset | None, initial_params: InitialParams | None) -> _Setup:
    """Everything the run decides before its state exists. The flags are checked before any data is read; the
    data then gives the steps per epoch, hence the run's length, for which the recipe is resolved."""
    _check(options)
    recipe = run.recipe_of(options)
    recipes.resolve(recipe, recipe.epochs, options.regularisation)  # a bad flag fails before any data is read
    run.architecture(options)  # likewise
    mesh = sharding.make_mesh(options.mesh)
    sharding.check_batch_size(recipe.batch_size, mesh)
    if options.workdir is None:
        options = dataclasses.replace(options, workdir=default_workdir(options))

    data = _load_data(options, dataset)
    if data.streamed and _on_device(options):
        raise ValueError(f"{data.name} streams (its decoded images would not fit in memory): --steps-per-dispatch above 1 "
                         "and --data-on-device keep the whole split on the device; drop them")
    order = data_lib.BatchOrder(len(data.train), recipe.batch_size, options.seed)
    spe = order.steps_per_epoch
    total = options.steps or recipe.epochs * spe
    # The regularisation of a run of this length (the default recipe scales it), then the flags' parts.
    built = _build(options, recipe, spe, total, data.num_classes, data.image_shape, data.class_names)
    recipe, config, tx, schedule = built.recipe, built.config, built.tx, built.schedule
    initial_params, init_summary = built.initial_params or initial_params, built.init_summary
    model = _model(config, options)
    on_device = _on_device(options)
    meta = {
        **run.run_meta(options, config, data, recipe, total, spe),
        # Runs of another K (or data path) agree to float32 rounding, not bit for bit (train.jax_loop.step.make_multi_step).
        "steps_per_dispatch": options.steps_per_dispatch,
        "data_on_device": on_device,
        "devices": int(mesh.devices.size),
        "processes": jax.process_count(),
        "mesh": str(sharding.shape_of(mesh)),
        # --remat keeps the blocks stacked (ViT(scan_blocks=True)): its checkpoints hold another layout.
        "remat": options.remat,
    }
    return _Setup(
        options=options, workdir=Path(options.workdir), mesh=mesh, lead=jax.process_index() == 0, on_device=on_device,
        data=data, order=order, spe=spe, total=total, recipe=recipe,
        cadence=CheckpointCadence.of_run(options.checkpoint_every, options.checkpoint_seconds, spe),
        config=config, model=model, tx=tx, schedule=schedule,
        initial_params=initial_params or (lambda cfg, key: jax_vit.init_params(cfg, key)), meta=meta,
        init_summary=init_summary,
    )


def _model(config: ViTConfig, options: TrainOptions) -> ViT:
    """The run's module: with --remat its blocks run as one nn.scan over depth, recomputing their activations in
    the backward pass (the parameters stacked under "blocks": jax_vit.block_layout)."""
    return ViT(config, dtype=DTYPES[options.dtype], scan_blocks=options.remat, remat=options.remat)


def _load_data(options: TrainOptions, dataset: data_lib.Dataset | None) -> _Data:
    """options.dataset (or `dataset`) with --validation held out: in memory, or with --streaming (and no
    `dataset`) the training split as its data source and only the held-out splits read into memory."""
    if dataset is None and folder_dataset.is_folder(options.dataset):
        # A folder streams with --streaming, or where its decoded images would not fit in memory.
        folder = folder_dataset.load(options.dataset, options.image_size, options.crop_pct, options.validation,
                                     options.streaming, options.workers, run.checkpoint_size(options))
        if not folder.plan.streamed:
            return _in_memory(run.from_folder(folder))
        h, w = folder.plan.size
        return _Data(folder, True, folder.validation, folder.test, len(folder.plan.class_names), (h, w, 3),
                     folder.name, folder.examples, folder.plan.class_names, folder.validation_record(),
                     folder.record(), tuple(folder.lines()))
    if dataset is not None or not options.streaming:
        return _in_memory(run.load_in_memory(options, dataset))
    sources = data_lib.open_sources(options.dataset, data_lib.resolve_data_dir(options.data_dir))
    num_classes, image_shape = data_lib.describe(sources["train"])
    train_source, test = sources["train"], data_lib.load_split(sources["test"], "test")
    examples, size = len(train_source), run.validation_size(options)
    train_idx, held_out = data_lib.validation_indices(examples, size)
    validation = data_lib.read_split(train_source, held_out) if size else None
    if size:
        train_source = data_lib.SourceSubset(train_source, train_idx)
    return _Data(train_source, True, validation, test, num_classes, image_shape, options.dataset, examples,
                 tuple(data_lib.label_names(sources["train"])),
                 data_lib.validation_record(examples, size) if size else None)


def _in_memory(loaded: run.InMemoryData) -> _Data:
    return _Data(loaded.train, False, loaded.validation, loaded.test, loaded.num_classes, loaded.image_shape,
                 loaded.name, loaded.examples, loaded.class_names, loaded.validation_record, loaded.data_record,
                 loaded.lines)


def _workers_crop(setup: _Setup) -> bool:
    """Whether the random-resized crop is cut by the decoding workers (a streamed folder's full-size images)
    rather than by the train step (from images decoded once at the model's size)."""
    return isinstance(setup.data.train, folder_dataset.FolderData) and setup.recipe.augment.random_resized_crop


def _step_augment(setup: _Setup) -> AugmentConfig:
    """The augmentation the train step does: the recipe's, less a crop the workers already cut."""
    augment = setup.recipe.augment
    return dataclasses.replace(augment, random_resized_crop=False) if _workers_crop(setup) else augment


def _initial_state(setup: _Setup) -> _Start:
    """Step 0: setup.initial_params under the run's seed and a fresh optimizer state, placed on the mesh as
    train.partition_rules says (each device receives only its slices), and the run's key."""
    mesh, seed, min_bytes = setup.mesh, setup.options.seed, _min_shard_bytes(setup.options)
    host = sharding.to_host(setup.initial_params(setup.config, jax.random.key(seed)))
    if setup.options.remat:
        host = jax_vit.stack_blocks(host)
    params = sharding.put(host, sharding.state_shardings(host, mesh, min_bytes))
    del host
    create = lambda p: TrainState.create(p, setup.tx, setup.options.freeze)
    state = jax.jit(create, out_shardings=sharding.state_shardings(jax.eval_shape(create, params), mesh, min_bytes))(params)
    rng = sharding.replicate(mesh, np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 1))))
    return _Start(0, state, rng)


def _min_shard_bytes(options: TrainOptions) -> int:
    return int(options.shard_min_mb * 2**20)


def _resume(setup: _Setup, checkpoints: Checkpoints, fresh: _Start) -> tuple[_Setup, _Start]:
    """The newest good checkpoint in place of `fresh`, when the workdir holds one (of this run, not past its
    end), and notes on what differs from the flags: the checkpoint's seed wins, a new length or dispatch is
    followed, the regularisation stays as the run began (_as_begun)."""
    restored = checkpoints.restore_latest({"state": fresh.state, "rng": fresh.rng},
                                          lambda found: _as_begun(setup, found)[0].meta)
    if restored is None:
        return setup, fresh
    start, tree, found = restored
    run.check_not_past_end(start, setup.total, setup.workdir)
    setup, kept = _as_begun(setup, found)
    options, on_device = setup.options, setup.on_device
    if found.get("seed", options.seed) != options.seed:
        # The run continues as it began: its data order and augmentation follow its own seed.
        print(f"note: resuming with the checkpoint's seed {found['seed']} (not --seed {options.seed})", file=sys.stderr)
        options = dataclasses.replace(options, seed=found["seed"])
        order = data_lib.BatchOrder(len(setup.data.train), setup.recipe.batch_size, options.seed)
        setup = dataclasses.replace(setup, options=options, order=order, meta={**setup.meta, "seed": options.seed})
    for note in run.resume_notes(found, setup.meta, kept):
        print(note, file=sys.stderr)
    if found.get("mesh", setup.meta["mesh"]) != setup.meta["mesh"]:
        print(f"note: the checkpoint was written on the mesh {found['mesh']}; it is resharded onto {setup.meta['mesh']} "
              "as it loads", file=sys.stderr)
    if (found.get("steps_per_dispatch", 1), found.get("data_on_device", False)) != (options.steps_per_dispatch, on_device):
        print(f"note: resuming with --steps-per-dispatch {options.steps_per_dispatch} (data on the device: {on_device}), "
              f"not {found.get('steps_per_dispatch', 1)} ({found.get('data_on_device', False)}): the same steps, "
              "compiled otherwise, so equal to float32 rounding, not necessarily bit for bit", file=sys.stderr)
    return setup, _Start(start, tree["state"], tree["rng"], resumed=True)


def _as_begun(setup: _Setup, found: Mapping[str, Any]) -> tuple[_Setup, dict[str, Any]]:
    """`setup` as the run recorded by `found` (a checkpoint's meta) continues: a length-scaled recipe's
    regularisation as the run began, not as its new length would scale it (run.as_begun), with the model that
    applies it. Also the parts kept (empty: `setup` unchanged). The parameters and optimizer do not depend on
    it: the state restored into `fresh`'s template stays valid."""
    recipe, config, meta, kept = run.as_begun(setup.recipe, setup.config, setup.meta, found, setup.options.regularisation)
    if not kept:
        return setup, {}
    model = _model(config, setup.options)
    return dataclasses.replace(setup, recipe=recipe, config=config, model=model, meta=meta), kept


def _open_progress(setup: _Setup, start: _Start) -> Progress:
    """The progress bar, from the loop's first step, and the notes that open the run (the lead's only, but for
    where it resumes)."""
    data, total = setup.data, setup.total
    progress = Progress(total, start.step, enabled=setup.options.progress and setup.lead)
    if setup.lead:
        for line in data.lines:
            progress.note(line)
        if setup.init_summary and not start.resumed:  # a resumed run's weights are its checkpoint's
            progress.note(setup.init_summary)
        for note in run.opening_notes(setup.options):
            progress.note(note)
        if sharding.shape_of(setup.mesh).devices > sharding.shape_of(setup.mesh).data:
            progress.note(sharding.describe(start.state.params, setup.mesh, _min_shard_bytes(setup.options)))
        # The length the regularisation was scaled to: a resumed run's first (_as_begun).
        progress.note(recipes.describe(setup.recipe, setup.meta["regularisation"]["epochs"]))
        progress.note(run.examples_line(len(data.train), data.validation, data.test))
    if start.resumed:
        progress.note(f"resuming from step {start.step} of {total} in {setup.workdir}")
    return progress


def _dispatcher(setup: _Setup, start: _Start, train_step: StepFn, state_sharding: Any) -> Dispatch:
    """How one call runs its steps. With the split on the device, it goes there once and each call sends only
    its batches' rows (K steps a call); otherwise each call is one step on a batch read on the host, from
    memory or streamed, in this process's share."""
    mesh, order, rng, data = setup.mesh, setup.order, start.rng, setup.data
    pi, pc = jax.process_index(), jax.process_count()
    if setup.on_device:
        train_split = device_data.put_split(data.train, mesh)
        multi_step = make_multi_step(setup.model, setup.tx, setup.schedule, _step_augment(setup), data.num_classes, mesh,
                                     state_sharding)

        def dispatch_rows(state: TrainState, step: int, done: int) -> tuple[TrainState, Metrics]:
            rows = device_data.global_rows(mesh, device_data.chunk_rows(order, step, done - step, pi, pc))
            return multi_step(state, train_split, rows, rng)

        return dispatch_rows
    if data.streamed:
        if isinstance(data.train, folder_dataset.FolderData):
            a = setup.recipe.augment
            batches = iter(folder_dataset.stream(data.train, order, setup.options.seed, start.step, setup.total,
                                                 setup.options.workers, _workers_crop(setup), a.crop_scale,
                                                 a.crop_ratio, pi, pc))
        else:
            batches = iter(data_lib.StreamingBatches(data.train, order, start.step, setup.total, pi, pc))
    else:
        batches = data_lib.memory_batches(data.train, order, start.step, setup.total, pi, pc)

    def dispatch_batch(state: TrainState, step: int, done: int) -> tuple[TrainState, Metrics]:
        images, labels = sharding.global_batch(mesh, *next(batches))
        return train_step(state, (images, labels), rng)

    return dispatch_batch


def _train_loop(
    setup: _Setup,
    start: _Start,
    dispatch: Dispatch,
    eval_step: Callable[..., Any],
    checkpoints: Checkpoints,
    log: MetricsLog,
    progress: Progress,
) -> tuple[TrainState, dict[str, dict[str, float]]]:
    """Runs the steps from start.step to the end, call by call; after each call, the train record, evaluation
    and checkpoint due at its last step. Returns the final state and the latest scores per split.

    A SIGINT or SIGTERM (StopSignals) ends it after the call in flight: its train record, the evaluation due
    then, a checkpoint of its last step, then Interrupted."""
    options, spe, total, cadence = setup.options, setup.spe, setup.total, setup.cadence
    # A call never runs past a step that logs, evaluates or checkpoints: those need its state.
    boundaries = (options.log_every, cadence.every_steps or 0, spe * options.eval_every)
    steps_per_call = options.steps_per_dispatch if setup.on_device else 1
    window = _Window(start.step, time.perf_counter())
    evals: dict[str, dict[str, float]] = {}  # split -> the latest {"accuracy", "loss"}
    compiled: set[int] = set()  # the call lengths (steps per call) compiled so far
    state, step = start.state, start.step
    advice = length_advice.FirstRunAdvice(options, setup.recipe, total, spe, accelerator=jax.default_backend() != "cpu",
                                          fresh=start.step == 0 and setup.lead)
    cadence.saved()  # the clock of --checkpoint-every's time starts with the loop
    with StopSignals(_preemption_sync_point(), say=progress.note) as stop:
        while step < total:
            done = call_end(step, steps_per_call, total, boundaries)
            compiles = done - step not in compiled
            if compiles:
                jax.block_until_ready(window.pending)  # the calls before are timed up to here
                compile_start = time.perf_counter()
            state, metrics = dispatch(state, step, done)
            window.pending.append(metrics)
            progress.dispatched(done - step, metrics)  # the bar counts the steps as they finish
            if compiles:  # leave compilation out of images/s
                jax.block_until_ready(metrics)
                window.tick += time.perf_counter() - compile_start
                window.untimed += done - step
                compiled.add(done - step)
            step = done
            stopping = stop.stop_at(done) and done < total
            want_eval = run.wants_eval(done, total, spe, options.eval_every, setup.data.validation is not None)
            # By time only at train-record steps, the same steps in every process, and by process 0's clock.
            timed = cadence.every_seconds is not None and done % options.log_every == 0
            want_checkpoint = stopping or cadence.due(done, total, timed and _agreed(cadence.time_due(done, options.log_every)))
            # A run's last step always logs, whatever --log-every: a short run gets its train record.
            if window.pending and (done % options.log_every == 0 or done == total or want_eval or want_checkpoint):
                window = _write_train_record(setup, window, done, checkpoints, log, progress)
                advice.after(log.records[-1], progress.note)
            if want_eval:
                evals.update(_evaluate_round(setup, eval_step, state.params, done, log, progress))
                window.tick = time.perf_counter()  # nor is evaluating
            if want_checkpoint:
                checkpoints.save(done, state, start.rng, setup.meta)
                cadence.saved()
                window.tick = time.perf_counter()  # saving is not training time
            if stopping:
                raise Interrupted(stop.signum, done)
    return state, evals


def _preemption_sync_point() -> Callable[[int], bool] | None:
    """In a multi-process run, the step every process stops and saves at after a SIGTERM (or SIGINT) reaches any
    of them: JAX's preemption service (train.interrupts)."""
    if jax.process_count() == 1:
        return None
    from jax.experimental import multihost_utils

    return multihost_utils.reached_preemption_sync_point


def _agreed(due: bool) -> bool:
    """A decision each process takes by its own clock, made the same everywhere: process 0's."""
    if jax.process_count() == 1:
        return due
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(due)))


def _write_train_record(
    setup: _Setup, window: _Window, done: int, checkpoints: Checkpoints, log: MetricsLog, progress: Progress
) -> _Window:
    """Writes the train record of the window's calls, once they have finished, and opens the next window at
    `done`. A non-finite loss or gradient among them ends the run: DivergedError names the checkpoints to
    go back to."""
    jax.block_until_ready(window.pending)  # steps run asynchronously: time them once finished
    progress.drain()
    record = _summarise(window.pending, done, setup.spe, setup.recipe.batch_size, time.perf_counter() - window.tick,
                        window.untimed)
    if not record.pop("finite"):
        good = checkpoints.steps()
        raise DivergedError(run.diverged_message(window.step, done, good, checkpoints.directory))
    log.write(record)
    progress.show(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.1%}",
                  img_s=f"{record['images_per_s'] or 0:.0f}", lr=f"{record['lr']:.2e}")
    return _Window(done, time.perf_counter())


def _evaluate_round(
    setup: _Setup, eval_step: Callable[..., Any], params: Any, step: int, log: MetricsLog, progress: Progress
) -> dict[str, dict[str, float]]:
    """One evaluation at `step`: each split scored, logged as an eval record and noted, then curves.png redrawn.
    Returns the scores by split."""
    score = lambda split: evaluate(eval_step, params, split, setup.mesh, setup.options.eval_batch_size)
    return run.evaluation_round(setup.data.validation, setup.data.test, step, setup.total, setup.spe, score, log,
                                progress, setup.workdir / "curves.png")


def _finish(
    setup: _Setup,
    state: TrainState,
    evals: dict[str, dict[str, float]],
    eval_step: Callable[..., Any],
    checkpoints: Checkpoints,
    log: MetricsLog,
) -> TrainResult:
    """The final save: model.safetensors (by the lead), then the run's result. The scores are the loop's last
    evaluation's; when it scored no test split (a finished run resumed), they are taken here."""
    data = setup.data
    if not evals:  # resumed a finished run: nothing trained, still report
        evals = dict(evals)
        for name, split in (("validation", data.validation), ("test", data.test)):
            if split is not None:
                evals[name] = evaluate(eval_step, state.params, split, setup.mesh, setup.options.eval_batch_size)
    host_params = jax_vit.unstack_blocks(sharding.to_host(state.params))  # the file's layout, whatever the run's
    if setup.lead:
        path = setup.workdir / "model.safetensors"
        with write_errors.writing("the trained weights", path, setup.workdir):
            jax_vit.save(path, setup.config, host_params, data.class_names)
    checkpoints.close()
    val = evals.get("validation", {})
    test = evals.get("test", {})
    return TrainResult(str(setup.workdir), setup.config, setup.total, test.get("accuracy"), test.get("loss"),
                       val.get("accuracy"), val.get("loss"), host_params, log.records)


def finetune_start(
    path: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    overrides: Mapping[str, Any] = (),
    variant: str | None = None,
) -> tuple[ViTConfig, Callable[[ViTConfig, Any], Any]]:
    """(config, initial_params) of the JAX trainer for fine-tuning the checkpoint at `path` (finetune_weights'
    arguments): the missing parameters (a new head) come from jax_vit.init_params."""
    config, initial_params, _ = _finetune(path, image_shape, num_classes, overrides, variant)
    return config, initial_params


def _finetune(
    path: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    overrides: Mapping[str, Any] = (),
    variant: str | None = None,
    class_names: tuple[str, ...] = (),
) -> tuple[ViTConfig, Callable[[ViTConfig, Any], Any], str]:
    """finetune_start's (config, initial_params), and the line that says what was loaded (class_names: the
    dataset's, which a new head gets where the file's own differ: train.finetune.finetune_checkpoint)."""
    start = finetune_checkpoint(path, image_shape, num_classes, overrides, variant, class_names)
    config, state_dict, missing = start.config, start.state_dict, start.missing

    def initial_params(cfg: ViTConfig, rng: Any) -> Any:
        full = dict(state_dict)
        if missing:
            fresh = jax_vit.state_dict_from_params(cfg, jax_vit.init_params(cfg, rng))
            full.update({name: np.asarray(fresh[name], np.float32) for name in missing})
        return jax_vit.params_from_state_dict(cfg, full)

    return config, initial_params, start.summary


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
