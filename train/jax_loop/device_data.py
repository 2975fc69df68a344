"""The training split resident on the accelerator: put there once, batches gathered on the device.

With `vit train --steps-per-dispatch K` (or `--data-on-device`) the host sends only the rows of each
batch ((K, B) int32: 4 bytes per example, against 3,072 for a CIFAR image), and `train.jax_loop.step.
make_multi_step` gathers the batches on the device from the resident split.

The split is replicated: every device holds all of it (CIFAR-10's training split is 154 MB of uint8,
against 16-141 GB on a current accelerator). Each device then gathers its own share of every batch
from its own copy, with no communication. Sharding the split over the devices instead would divide
its memory by the device count, but a random batch draws its examples from every shard, so each
step would move the whole batch between devices (an all-to-all), the transfer this path removes.
For data too large to replicate, keep the host path (or `--streaming`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from train import mesh_shape
from train.data import BatchOrder, Split
from train.jax_loop import sharding

# The resident split may take at most this share of a device's memory; the model and its activations
# need the rest.
MAX_MEMORY_FRACTION = 0.5


class DeviceDataError(ValueError):
    """A split that does not fit on the device next to the model."""


class DeviceSplit(NamedTuple):
    """A split on the devices (a pytree: pass it to a jitted step as (images, labels))."""

    images: jax.Array  # (N, H, W, C) uint8, a full copy on every device of the mesh
    labels: jax.Array  # (N,) int32, likewise

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def rows_sharding(mesh: Mesh) -> NamedSharding:
    """(K, B) batch rows: steps unsharded, each step's batch sharded as the batches themselves."""
    return NamedSharding(mesh, P(None, mesh_shape.BATCH_AXES))


def device_memory_limit() -> int | None:
    """Bytes of memory of the first local device, where the backend says (GPU, TPU; not the CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("bytes_limit")


def put_split(split: Split, mesh: Mesh) -> DeviceSplit:
    """Copies `split` (the whole of it, every process passing the same one) onto every device of the mesh.

    Raises DeviceDataError where the split would take more than MAX_MEMORY_FRACTION of a device.
    """
    nbytes = split.images.nbytes + split.labels.nbytes
    limit = device_memory_limit()
    if limit is not None and nbytes > MAX_MEMORY_FRACTION * limit:
        raise DeviceDataError(
            f"the training split takes {nbytes / 2**30:.1f} GiB, more than {MAX_MEMORY_FRACTION:.0%} of a device's "
            f"{limit / 2**30:.1f} GiB: drop --steps-per-dispatch / --data-on-device (batches then come from the host)"
        )
    images, labels = sharding.replicate(mesh, (split.images, split.labels.astype(np.int32)))
    return DeviceSplit(images, labels)


def chunk_rows(order: BatchOrder, start: int, count: int, process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """This process's rows of global batches start..start+count-1: (count, B / process_count) int32."""
    return np.stack([order.indices(step, process_index, process_count) for step in range(start, start + count)]).astype(
        np.int32
    )


def global_rows(mesh: Mesh, local_rows: np.ndarray) -> jax.Array:
    """This process's (K, B_local) rows -> the global (K, B) array, sharded along the batch."""
    return jax.make_array_from_process_local_data(rows_sharding(mesh), np.ascontiguousarray(local_rows, np.int32))
