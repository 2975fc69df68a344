"""Which mesh axis splits which dimension of each parameter (and each optimizer moment of its shape).

The rules read the weight layout's names (timm's, which jax_vit's Flax modules share) and the shape:

- model (Megatron-style tensor parallelism): the matmuls that fan out (attn.qkv, attn_pool.q / kv, mlp.fc1,
  fc1_g, fc1_x) split their output features, kernel and bias; the ones that fan back in (attn.proj,
  attn_pool.proj, mlp.fc2) split their input features (the bias, added after the sum, stays whole). A layer's
  two matmuls then need one all-reduce between them and none inside.
- fsdp (big_vision's rule): every tensor of at least `min_bytes` splits its largest dimension that divides by
  the axis and that the model rule left free; smaller ones (norms, biases, the class token) stay whole, their
  gathering would cost more than their memory.

A dimension that does not divide by its axis stays whole; `describe` says how much of the state each rule
split. Framework-free: train.jax_loop.sharding turns the specs into jax.sharding.NamedSharding.
"""

from __future__ import annotations

from typing import Sequence

from train.byte_sizes import size_text
from train.mesh_shape import MeshShape

# big_vision's fsdp rule leaves tensors of at most min_size_to_shard_mb=4 whole.
MIN_SHARD_BYTES = 4 * 2**20

# The modules whose matmul fans out (split by output features) and fans back in (split by input features), with
# the parent modules that make them the attention's and the MLP's (the patch embedding's "proj" is neither).
_FAN_OUT = {"attn": {"qkv"}, "attn_pool": {"q", "kv"}, "mlp": {"fc1", "fc1_g", "fc1_x"}}
_FAN_IN = {"attn": {"proj"}, "attn_pool": {"proj"}, "mlp": {"fc2"}}

Spec = tuple  # one entry per dimension: a mesh axis name or None (whole)


def _model_dim(names: Sequence[str], ndim: int) -> int | None:
    """The dimension the model axis splits (negative, from the end: scanned blocks lead with depth), or None."""
    if len(names) < 3 or names[-1] not in ("kernel", "bias"):
        return None
    parent, module, leaf = names[-3], names[-2], names[-1]
    if module in _FAN_OUT.get(parent, ()):
        return -1
    if module in _FAN_IN.get(parent, ()) and leaf == "kernel" and ndim >= 2:
        return -2
    return None


def spec(names: Sequence[str], shape: Sequence[int], itemsize: int, mesh: MeshShape,
         min_bytes: int = MIN_SHARD_BYTES) -> Spec:
    """The partition of one tensor: for each dimension, the mesh axis that splits it or None.

    Args:
        names: the tensor's path of names, e.g. ("blocks_3", "attn", "qkv", "kernel"); an optimizer moment's
            path holds its parameter's at the end (("mu", "blocks_3", "attn", "qkv", "kernel")), so it
            splits as its parameter does.
        shape, itemsize: the tensor's shape and bytes per element.
        mesh: the axis sizes; an axis of size 1 splits nothing.
        min_bytes: tensors smaller than this stay whole under fsdp.
    """
    out: list[str | None] = [None] * len(shape)
    if mesh.model > 1:
        dim = _model_dim(names, len(shape))
        if dim is not None and len(shape) >= -dim and shape[dim] % mesh.model == 0:
            out[dim] = "model"
    size = itemsize
    for n in shape:
        size *= n
    if mesh.fsdp > 1 and size >= min_bytes:
        # The largest free dimension that divides; ties go to the later one (the output features).
        for i in sorted(range(len(shape)), key=lambda i: (shape[i], i), reverse=True):
            if out[i] is None and shape[i] % mesh.fsdp == 0:
                out[i] = "fsdp"
                break
    return tuple(out)


def shard_bytes(shape: Sequence[int], itemsize: int, partition: Spec, mesh: MeshShape) -> int:
    """Bytes one device holds of a tensor so split."""
    sizes = mesh.sizes()
    total = itemsize
    for n, axis in zip(shape, partition):
        total *= n // sizes[axis] if axis else n
    return total


def describe(tensors: Sequence[tuple[Sequence[str], Sequence[int], int]], mesh: MeshShape,
             min_bytes: int = MIN_SHARD_BYTES) -> str:
    """One line on how the rules split `tensors` ((names, shape, itemsize) each) over `mesh`: how many are
    split, and the bytes each device holds against the whole."""
    whole = held = split = 0
    for names, shape, itemsize in tensors:
        partition = spec(names, shape, itemsize, mesh, min_bytes)
        size = itemsize
        for n in shape:
            size *= n
        whole += size
        held += shard_bytes(shape, itemsize, partition, mesh)
        split += any(partition)
    return (f"mesh {mesh}: {split} of {len(tensors)} tensors split; each device holds {size_text(held)} of their "
            f"{size_text(whole)}")
