"""What the train step needs of each device's memory, known before anything is allocated (`vit train --dry-run`).

The step is the trainer's own (train.jax_loop.step.make_train_step), on the run's mesh, with its state split by
train.partition_rules: it is lowered and compiled for shapes only (`jax.ShapeDtypeStruct`s carrying their
shardings), and XLA's buffer assignment (`compiled.memory_analysis()`) gives each device's bytes:

- arguments: the state's slices (parameters, optimizer state), the batch's slice and the key;
- outputs: the new state and the metrics; the state's are written over the donated arguments (alias);
- temporaries: the activations kept for the backward pass, gathered parameters and gradients, workspace.

Peak = arguments + outputs - aliased + temporaries. A model of any size can be planned on any machine, a mesh
of any size on simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N); the CPU compiler's
fusion and scheduling differ from a GPU's or TPU's, so the temporaries there differ somewhat (the arguments
do not).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_vit import ViT
from train import partition_rules
from train.byte_sizes import size_text
from train.augment_config import AugmentConfig
from train.jax_loop import sharding
from train.jax_loop.step import TrainState, make_train_step

@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """One device's bytes for the train step (every device of the mesh holds the same amounts)."""

    mesh: str
    devices: int
    global_batch: int
    batch_per_device: int
    parameters: int  # this device's slices of the parameters
    optimizer: int  # ... of the optimizer state
    arguments: int
    outputs: int
    aliased: int  # outputs written in place of donated arguments (the state)
    temporaries: int
    code: int

    @property
    def peak(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries

    def fits(self, device_bytes: int) -> bool:
        return self.peak <= device_bytes

    def lines(self, device_bytes: int | None = None) -> list[str]:
        """The report `vit train --dry-run` prints."""
        out = [
            f"mesh {self.mesh} ({self.devices} devices), {self.batch_per_device} examples per device; per device:",
            f"  parameters    {size_text(self.parameters)}",
            f"  optimizer     {size_text(self.optimizer)}",
            f"  arguments     {size_text(self.arguments)} (parameters, optimizer state, batch)",
            f"  temporaries   {size_text(self.temporaries)} (activations kept for the backward pass, gathered "
            "parameters, gradients)",
            f"  outputs       {size_text(self.outputs)} ({size_text(self.aliased)} of them over the donated state)",
            f"  peak          {size_text(self.peak)}",
        ]
        if device_bytes is not None:
            verdict = "fits" if self.fits(device_bytes) else "does NOT fit"
            out.append(f"  {verdict} a device of {size_text(device_bytes)} ({self.peak / device_bytes:.0%} of it)")
        return out


def abstract_params(model: ViT, image_shape: tuple[int, int, int]) -> Any:
    """The shapes and dtypes of `model`'s parameters (its layout: stacked blocks under scan_blocks)."""
    images = jnp.zeros((1, *image_shape), jnp.float32)
    return jax.eval_shape(lambda key: model.init(key, images)["params"], jax.random.key(0))


def plan(
    model: ViT,
    tx: Any,
    schedule: Any,
    augment: AugmentConfig,
    num_classes: int,
    image_shape: tuple[int, int, int],
    global_batch: int,
    mesh: jax.sharding.Mesh,
    freeze: str | None = None,
    min_bytes: int = partition_rules.MIN_SHARD_BYTES,
) -> MemoryPlan:
    """Compiles the train step for shapes only and reads each device's bytes from XLA's buffer assignment.

    Args:
        model, tx, schedule, augment, num_classes: as make_train_step's.
        image_shape: (H, W, C) of the uint8 images the step receives.
        global_batch: examples per step over the whole mesh (divides over data x fsdp).
        mesh: the run's mesh; freeze, min_bytes: as the trainer's.
    """
    sharding.check_batch_size(global_batch, mesh)
    params = abstract_params(model, image_shape)
    state = jax.eval_shape(lambda p: TrainState.create(p, tx, freeze), params)
    shardings = sharding.state_shardings(state, mesh, min_bytes)
    state_in = jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
    batch = sharding.batch_sharding(mesh)
    images = jax.ShapeDtypeStruct((global_batch, *image_shape), jnp.uint8, sharding=batch)
    labels = jax.ShapeDtypeStruct((global_batch,), jnp.int32, sharding=batch)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=sharding.replicated(mesh))
    step = make_train_step(model, tx, schedule, augment, num_classes, mesh, shardings)
    memory = step.lower(state_in, (images, labels), key).compile().memory_analysis()

    def held(tree: Any) -> int:
        return sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))

    shape = sharding.shape_of(mesh)
    return MemoryPlan(
        mesh=str(shape), devices=shape.devices, global_batch=global_batch, batch_per_device=global_batch // shape.batch_devices,
        parameters=held(state_in.params), optimizer=held(state_in.opt_state),
        arguments=int(memory.argument_size_in_bytes), outputs=int(memory.output_size_in_bytes),
        aliased=int(memory.alias_size_in_bytes), temporaries=int(memory.temp_size_in_bytes),
        code=int(memory.generated_code_size_in_bytes),
    )
