"""`vit train --mesh data=D,fsdp=F,model=M`: how the devices are arranged, on named axes.

- data:  each device of the axis holds every parameter and a slice of the batch (data parallelism);
- fsdp:  the batch is sliced over it too, and the parameters and optimizer state are split over it
         (fully sharded data parallelism: each tensor gathered as a layer needs it, big_vision's default);
- model: the matmuls are split over it (Megatron-style tensor parallelism), the batch is not.

Framework-free: the JAX trainer builds its jax.sharding.Mesh from a MeshShape (train.jax_loop.sharding).
"""

from __future__ import annotations

import re
from typing import NamedTuple

AXES = ("data", "fsdp", "model")
# The axes the batch is sliced over: every device of them sees other examples.
BATCH_AXES = ("data", "fsdp")

_ITEM = re.compile(r"\s*(\w+)\s*=\s*(-?\d+)\s*")


class MeshError(ValueError):
    """A --mesh that names an unknown axis, or does not cover the devices there are."""


class MeshShape(NamedTuple):
    data: int = 1
    fsdp: int = 1
    model: int = 1

    @property
    def devices(self) -> int:
        return self.data * self.fsdp * self.model

    @property
    def batch_devices(self) -> int:
        """Devices the batch is sliced over (data x fsdp): the global batch must divide by it."""
        return self.data * self.fsdp

    def sizes(self) -> dict[str, int]:
        return dict(zip(AXES, self))

    def __str__(self) -> str:
        return ",".join(f"{axis}={size}" for axis, size in zip(AXES, self))


def parse(text: str) -> dict[str, int]:
    """"data=2,fsdp=4" -> {"data": 2, "fsdp": 4}; one axis may be -1 (the devices the others leave).

    Raises MeshError naming the bad part."""
    sizes: dict[str, int] = {}
    for part in text.split(","):
        match = _ITEM.fullmatch(part)
        if not match:
            raise MeshError(f"--mesh {text!r}: {part.strip()!r} is not AXIS=SIZE (e.g. --mesh data=2,fsdp=4)")
        axis, size = match.group(1), int(match.group(2))
        if axis not in AXES:
            raise MeshError(f"--mesh {text!r}: unknown axis {axis!r}; the axes are {', '.join(AXES)}")
        if axis in sizes:
            raise MeshError(f"--mesh {text!r}: {axis} is given twice")
        if size == 0 or size < -1:
            raise MeshError(f"--mesh {text!r}: {axis}={size}: a size is at least 1 (or -1: the devices left)")
        sizes[axis] = size
    if list(sizes.values()).count(-1) > 1:
        raise MeshError(f"--mesh {text!r}: only one axis may be -1")
    return sizes


def resolve(text: str | None, devices: int) -> MeshShape:
    """The mesh `text` (--mesh) describes over `devices` devices; None: all of them on data (plain data
    parallelism). Axes not named are 1. Raises MeshError where the sizes do not multiply to `devices`."""
    if text is None:
        return MeshShape(data=devices)
    sizes = parse(text)
    known = 1
    for size in sizes.values():
        known *= size if size > 0 else 1
    rest = [axis for axis, size in sizes.items() if size == -1]
    if rest:
        if devices % known:
            raise MeshError(f"--mesh {text}: the other axes take {known} devices, which does not divide the "
                            f"{devices} devices here")
        sizes[rest[0]] = devices // known
    shape = MeshShape(**sizes)
    if shape.devices != devices:
        raise MeshError(
            f"--mesh {text} takes {shape.devices} devices, but there are {devices}: make the sizes multiply to "
            f"{devices} (e.g. --mesh fsdp={devices}, or fsdp=-1 for the devices the other axes leave)"
        )
    return shape
