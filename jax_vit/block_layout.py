"""The two layouts of the blocks' parameters: one subtree per block (blocks_0 ... blocks_{L-1}, what the weight
file maps) and ViT(scan_blocks=True)'s, every leaf stacked along a leading depth axis under "blocks"."""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vit_spec.layout import WeightsError

# Where ViT(scan_blocks=True) keeps its blocks' parameters, stacked along a leading depth axis.
SCANNED_BLOCKS = "blocks"
_BLOCK_KEY = re.compile(r"blocks_(\d+)")


def stack_blocks(params: Mapping[str, Any]) -> dict:
    """The per-block layout (blocks_0 ... blocks_{L-1}) -> ViT(scan_blocks=True)'s: params["blocks"],
    every leaf stacked along a new leading depth axis. A stacked tree is returned as it is.

    numpy leaves stay numpy (exact copies); device arrays are stacked on the device.
    """
    params = dict(params)
    indices = sorted(int(m.group(1)) for k in params if (m := _BLOCK_KEY.fullmatch(k)))
    if not indices:
        return params
    if SCANNED_BLOCKS in params:
        raise WeightsError(f"the params hold both {SCANNED_BLOCKS!r} and blocks_N entries: not one layout")
    if indices != list(range(len(indices))):
        raise WeightsError(f"the params' blocks are not numbered 0..N-1: {indices}")
    per_block = [params.pop(f"blocks_{i}") for i in indices]
    numpy_only = all(isinstance(x, np.ndarray) for x in jax.tree_util.tree_leaves(per_block))
    stack = np.stack if numpy_only else jnp.stack
    params[SCANNED_BLOCKS] = jax.tree_util.tree_map(lambda *xs: stack(xs), *per_block)
    return params


def unstack_blocks(params: Mapping[str, Any]) -> dict:
    """ViT(scan_blocks=True)'s layout -> the per-block one (blocks_0 ... blocks_{L-1}), in that order.
    A per-block tree is returned as it is. Slices are exact: the values are the stacked ones."""
    params = dict(params)
    if SCANNED_BLOCKS not in params:
        return params
    stacked = params.pop(SCANNED_BLOCKS)
    depths = {int(x.shape[0]) for x in jax.tree_util.tree_leaves(stacked)}
    if len(depths) != 1:
        raise WeightsError(f"params[{SCANNED_BLOCKS!r}] leaves disagree on the depth axis: {sorted(depths)}")
    rest = params
    params = {k: v for k, v in rest.items() if not k.startswith("blocks_")}
    if len(params) != len(rest):
        raise WeightsError(f"the params hold both {SCANNED_BLOCKS!r} and blocks_N entries: not one layout")
    for i in range(depths.pop()):
        params[f"blocks_{i}"] = jax.tree_util.tree_map(lambda x: x[i], stacked)
    return params
