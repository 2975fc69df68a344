"""Data parallelism with jax.sharding: a 1-D mesh over every device, batch sharded, parameters replicated.

One CPU, one GPU/TPU host or many hosts run the same program; with several processes each feeds
its own slice of every global batch (`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"


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


def make_mesh() -> Mesh:
    """Every device of every process on the one data axis."""
    return Mesh(np.asarray(jax.devices()), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
    """Raises BatchSizeError unless every device gets the same whole number of examples."""
    devices, processes = mesh.devices.size, jax.process_count()
    if global_batch % devices or global_batch % processes:
        lo = max(devices, global_batch - global_batch % devices)
        raise BatchSizeError(
            f"batch size {global_batch} does not divide over the {devices} devices ({processes} processes): "
            f"use a multiple of {devices}, e.g. --batch-size {lo} or {lo + devices}"
        )


def global_batch(mesh: Mesh, *local: np.ndarray) -> tuple[jax.Array, ...]:
    """This process's rows of a global batch -> global arrays sharded along the batch."""
    sharding = batch_sharding(mesh)
    return tuple(jax.make_array_from_process_local_data(sharding, x) for x in local)


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Host values -> arrays replicated on every device (same value given on each process)."""
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def to_host(tree: Any) -> Any:
    """Replicated (or single-device) arrays -> numpy, also where other processes hold copies."""

    def one(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(jax.device_get(x))

    return jax.tree_util.tree_map(one, tree)
