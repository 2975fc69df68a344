"""The run's devices as a jax.sharding.Mesh on the axes data, fsdp and model (train.mesh_shape), and where
each array lives on it: the batch sliced over data x fsdp, the parameters and optimizer state split by
train.partition_rules (replicated under plain data parallelism, the default).

One CPU, one GPU/TPU host or many hosts run the same program; with several processes each feeds
its own slice of every global batch (`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from train import mesh_shape, partition_rules
from train.mesh_shape import MeshShape


class BatchSizeError(ValueError):
    """A global batch that does not split evenly over the devices or processes."""


def initialize_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Joins a multi-process run (jax.distributed.initialize); must run before anything touches a device.

    coordinator: None (a single process), "auto" (jax's own detection: Cloud TPU, SLURM, Open MPI, ...),
    or "host:port" of process 0 with num_processes and process_id. On CPU, collectives use gloo.
    """
    if coordinator is None:
        return
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator == "auto":
        jax.distributed.initialize()
        return
    if num_processes is None or process_id is None:
        raise ValueError("--coordinator HOST:PORT needs --num-processes and --process-id too (or use --coordinator auto)")
    jax.distributed.initialize(coordinator, num_processes, process_id)


def is_lead() -> bool:
    """Whether this process leads the run (process 0): the one that writes files and reports."""
    return jax.process_index() == 0


def make_mesh(text: str | None = None) -> Mesh:
    """Every device of every process on the axes data, fsdp and model, as --mesh `text` sizes them (None: all on
    data). Devices go in jax.devices()'s order, model innermost: a model group's devices are neighbours (one
    host's, where it can be), whose links the per-layer all-reduces use."""
    devices = jax.devices()
    shape = mesh_shape.resolve(text, len(devices))
    return Mesh(np.asarray(devices).reshape(tuple(shape)), mesh_shape.AXES)


def shape_of(mesh: Mesh) -> MeshShape:
    return MeshShape(**{axis: int(mesh.shape[axis]) for axis in mesh_shape.AXES})


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """A batch's leading dimension sliced over data x fsdp (replicated over model)."""
    return NamedSharding(mesh, P(mesh_shape.BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
    """Raises BatchSizeError unless every device gets the same whole number of examples."""
    devices, processes = shape_of(mesh).batch_devices, jax.process_count()
    step = int(np.lcm(devices, processes))
    if global_batch % step:
        lo = max(step, global_batch - global_batch % step)
        over = f"the {devices} devices of data x fsdp" if devices != mesh.devices.size else f"the {devices} devices"
        raise BatchSizeError(
            f"batch size {global_batch} does not divide over {over} ({processes} processes): "
            f"use a multiple of {step}, e.g. --batch-size {lo} or {lo + step}"
        )


def path_names(path: tuple) -> tuple[str, ...]:
    """A pytree path's names: dict keys and attribute names (an optimizer state's "mu", then its parameter's)."""
    names = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            names.append(str(key.key))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            names.append(key.name)
    return tuple(names)


def state_shardings(tree: Any, mesh: Mesh, min_bytes: int = partition_rules.MIN_SHARD_BYTES) -> Any:
    """A NamedSharding for every array of `tree` (parameters, a TrainState: anything with shapes, abstract or
    not) by train.partition_rules: the same tree of shardings. Scalars and small tensors are replicated."""
    shape = shape_of(mesh)

    def one(path: tuple, x: Any) -> NamedSharding:
        partition = partition_rules.spec(path_names(path), x.shape, np.dtype(x.dtype).itemsize, shape, min_bytes)
        return NamedSharding(mesh, P(*partition))

    return jax.tree_util.tree_map_with_path(one, tree)


def describe(params: Any, mesh: Mesh, min_bytes: int = partition_rules.MIN_SHARD_BYTES) -> str:
    """partition_rules.describe of the parameters' tensors on `mesh`."""
    tensors = [(path_names(path), x.shape, np.dtype(x.dtype).itemsize)
               for path, x in jax.tree_util.tree_leaves_with_path(params)]
    return partition_rules.describe(tensors, shape_of(mesh), min_bytes)


def put(tree: Any, shardings: Any) -> Any:
    """Host values (numpy, the same on every process) -> global arrays split as `shardings` says: each device
    receives only its own slice."""

    def one(x: Any, s: NamedSharding) -> jax.Array:
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda index: x[index])

    return jax.tree_util.tree_map(one, tree, shardings)


def global_batch(mesh: Mesh, *local: np.ndarray) -> tuple[jax.Array, ...]:
    """This process's rows of a global batch -> global arrays sharded along the batch."""
    sharding = batch_sharding(mesh)
    return tuple(jax.make_array_from_process_local_data(sharding, x) for x in local)


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Host values -> arrays replicated on every device (same value given on each process)."""
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def to_host(tree: Any) -> Any:
    """Arrays -> whole numpy arrays on every process, one array at a time: replicated ones from a local copy,
    split ones gathered (from other processes' devices too, where they hold part of them)."""

    def one(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.sharding.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree_util.tree_map(one, tree)


# The model's activations name their axes (nn.with_logical_constraint: ("batch", "tokens", "embed")); under a
# mesh these rules keep them sliced along the batch as the batch is, whatever the parameters' split.
LOGICAL_RULES = (("batch", mesh_shape.BATCH_AXES), ("tokens", None), ("embed", None), ("mlp", None))


def under_mesh(fn: Any, mesh: Mesh) -> Any:
    """`fn` traced with `mesh` and LOGICAL_RULES in force, so the model's activation constraints apply."""
    import functools

    import flax.linen as nn

    @functools.wraps(fn)
    def traced(*args: Any, **kwargs: Any) -> Any:
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(LOGICAL_RULES):
            return fn(*args, **kwargs)

    return traced
