"""The JAX twin as a function of weights and images: logits and per-layer attention, in float32 with exact
matmuls. What `vit predict`, `vit attention`, the export check and the parity suite run; torch_vit.inference
is its twin, function for function."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Mapping

import jax
import numpy as np

from jax_vit.model import ViT
from jax_vit.weights import load, params_from_state_dict
from vit_spec import ViTConfig
from vit_spec.attention_maps import Attention
from vit_spec.image_files import normalise

BATCH_SIZE = 64


@contextlib.contextmanager
def matmul_precision(dtype: str = "float32") -> Iterator[None]:
    """Exact float32 matmuls (no TF32 on GPUs) and, for "float64", jax_enable_x64."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(jax.default_matmul_precision("highest"))
        if dtype == "float64":
            stack.enter_context(jax.enable_x64(True))
        yield


def logits(config: ViTConfig, weights: Mapping[str, np.ndarray], x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """The float32 logits of normalised NHWC images `x`, with exact float32 matmuls.

    Args:
        config: the model.
        weights: its state dict (timm names, the shared layout).
        x: (N, H, W, C) float32 images, normalised with the config's image_mean / image_std.
        batch_size: images per jitted call.
    """
    model = ViT(config)
    forward = jax.jit(lambda params, x: model.apply({"params": params}, x))
    with matmul_precision("float32"):
        params = jax.device_put(params_from_state_dict(config, weights))
        return np.concatenate([np.asarray(forward(params, x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


def attention(path: str | Path, images: np.ndarray, batch_size: int = BATCH_SIZE) -> Attention:
    """The logits and every layer's attention probabilities of the weights file at `path` on (N, H, W, C) uint8
    images, in float32 with exact matmuls."""
    config, params = load(path)
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
    model = ViT(config)

    @jax.jit
    def forward(params, x):
        out, inter = model.apply({"params": params}, x, return_intermediates=True)
        return out, inter["attn"], inter.get("attn_pool")

    all_logits, layers, pools = [], [], []
    with matmul_precision("float32"):
        for i in range(0, len(images), batch_size):
            out, attn, pool = forward(params, normalise(images[i: i + batch_size], config))
            all_logits.append(np.asarray(out))
            layers.append([np.asarray(a) for a in attn])
            pools.append(None if pool is None else np.asarray(pool))
    pool = None if pools[0] is None else np.concatenate(pools)
    return Attention(np.concatenate(all_logits), [np.concatenate(per) for per in zip(*layers)], pool)


def features(config: ViTConfig, weights: Mapping[str, np.ndarray], x: np.ndarray,
             batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, np.ndarray | None]:
    """(final tokens (N, T, D), pooled feature (N, features_dim), None for pool="none") of normalised NHWC images,
    in float32 with exact matmuls: ViT.forward_features, then ViT.forward_head(pre_logits=True).

    Args:
        config: the model.
        weights: its state dict (timm names, the shared layout).
        x: (N, H, W, C) float32 images, normalised with the config's image_mean / image_std.
        batch_size: images per jitted call.
    """
    model = ViT(config)

    @jax.jit
    def forward(params, x):
        tokens = model.apply({"params": params}, x, method=ViT.forward_features)
        pooled = None if config.pool == "none" else model.apply({"params": params}, tokens, method=ViT.forward_head,
                                                                pre_logits=True)
        return tokens, pooled

    tokens, pooled = [], []
    with matmul_precision("float32"):
        params = jax.device_put(params_from_state_dict(config, weights))
        for i in range(0, len(x), batch_size):
            t, p = forward(params, x[i:i + batch_size])
            tokens.append(np.asarray(t))
            pooled.append(None if p is None else np.asarray(p))
    return np.concatenate(tokens), (None if config.pool == "none" else np.concatenate(pooled))
