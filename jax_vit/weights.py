"""Flax parameters <-> the shared timm-named layout, and the project's weight file."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from jax_vit.block_layout import stack_blocks, unstack_blocks
from vit_spec import ViTConfig, check_weights, load_weights, param_shapes, save_weights, sincos_2d
from vit_spec.layout import WeightsError


def _flax_path(name: str) -> tuple[tuple[str, ...], str]:
    """timm name -> (flax module path, flax leaf name)."""
    parts = name.split(".")
    if parts[0] == "blocks":  # blocks.3.attn.qkv.weight -> blocks_3/attn/qkv
        parts = [f"blocks_{parts[1]}"] + parts[2:]
    if parts[:2] == ["pre_logits", "fc"]:
        parts = ["pre_logits"] + parts[2:]
    if len(parts) == 1:  # cls_token, pos_embed
        return (), parts[0]
    return tuple(parts[:-1]), parts[-1]


def _to_flax(name: str, leaf: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    if leaf != "weight":
        return leaf, array
    if array.ndim == 4:  # Conv2d (out, in, kh, kw) -> HWIO
        return "kernel", array.transpose(2, 3, 1, 0)
    if array.ndim == 2:  # Linear (out, in) -> (in, out)
        return "kernel", array.T
    return "scale", array  # LayerNorm


def _from_flax(leaf: str, array: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    if leaf == "kernel":
        return array.T
    return array


def params_from_state_dict(config: ViTConfig, state_dict: Mapping[str, Any], *, scan_blocks: bool = False) -> dict:
    """The shared layout (timm names, numpy arrays) -> Flax params. Exact: transposes only.

    Args:
        config: the architecture the weights are checked against.
        state_dict: timm-named arrays.
        scan_blocks: give the layout of ViT(scan_blocks=True) (blocks stacked under "blocks").
    """
    arrays = {k: np.asarray(v) for k, v in state_dict.items()}
    check_weights(config, arrays)
    params: dict = {}
    for name, array in arrays.items():
        if name == "pos_embed" and config.pos_embed == "sincos2d":
            continue  # fixed, computed by the model
        path, leaf = _flax_path(name)
        leaf, array = _to_flax(name, leaf, array)
        node = params
        for key in path:
            node = node.setdefault(key, {})
        node[leaf] = np.ascontiguousarray(array)
    return stack_blocks(params) if scan_blocks else params


def state_dict_from_params(config: ViTConfig, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flax params (either layout: per block or stacked by scan) -> the shared layout, in timm's order.
    Exact: transposes only, so both layouts of the same weights give the same arrays (and files)."""
    flat = {
        tuple(getattr(k, "key", k) for k in path): np.asarray(jax.device_get(v))
        for path, v in jax.tree_util.tree_flatten_with_path(unstack_blocks(jax.device_get(dict(params))))[0]
    }
    out: dict[str, np.ndarray] = {}
    for name in param_shapes(config):
        if name == "pos_embed" and config.pos_embed == "sincos2d":
            out[name] = sincos_2d(config)
            continue
        path, leaf = _flax_path(name)
        # A timm "weight" is a Flax "kernel" (Linear, Conv) or "scale" (LayerNorm).
        candidates = ["kernel", "scale"] if leaf == "weight" else [leaf]
        for candidate in candidates:
            if path + (candidate,) in flat:
                out[name] = np.ascontiguousarray(_from_flax(candidate, flat.pop(path + (candidate,))))
                break
        else:
            raise WeightsError(f"the Flax params have no {'/'.join(path + (candidates[0],))} (for {name!r})")
    if flat:
        extra = ["/".join(k) for k in flat]
        raise WeightsError(f"the Flax params hold entries the config does not describe: {extra[:5]}")
    return out


def save(
    path: str | os.PathLike, config: ViTConfig, params: Mapping[str, Any], class_names: Sequence[str] | None = None
) -> None:
    """Writes `params` (either layout) with `config`, and the class names if given, to a .safetensors file (atomic)."""
    save_weights(path, config, state_dict_from_params(config, params), class_names)


def load(path: str | os.PathLike, *, scan_blocks: bool = False) -> tuple[ViTConfig, dict]:
    """Reads a .safetensors file written by either framework: (config, Flax params as numpy arrays).

    Args:
        path: the file.
        scan_blocks: give the layout of ViT(scan_blocks=True) instead of the per-block one.
    """
    config, arrays = load_weights(path)
    return config, params_from_state_dict(config, arrays, scan_blocks=scan_blocks)
