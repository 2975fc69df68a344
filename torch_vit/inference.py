"""The PyTorch twin as a function of weights and images: logits and per-layer attention, in float32. The twin of
jax_vit.inference, function for function."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from torch_vit.weights import load, model_from_state_dict
from vit_spec import ViTConfig
from vit_spec.attention_maps import Attention
from vit_spec.image_files import normalise

BATCH_SIZE = 64


def logits(config: ViTConfig, weights: Mapping[str, np.ndarray], x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """The float32 logits of normalised NHWC images `x` (as jax_vit.inference.logits takes them).

    Args:
        config: the model.
        weights: its state dict (timm names, the shared layout).
        x: (N, H, W, C) float32 images, normalised with the config's image_mean / image_std.
        batch_size: images per forward pass.
    """
    model = model_from_state_dict(config, weights).float().eval()
    with torch.no_grad():
        return np.concatenate([
            model(torch.from_numpy(x[i:i + batch_size]).permute(0, 3, 1, 2)).numpy() for i in range(0, len(x), batch_size)
        ])


def attention(path: str | Path, images: np.ndarray, batch_size: int = BATCH_SIZE) -> Attention:
    """The logits and every layer's attention probabilities of the weights file at `path` on (N, H, W, C) uint8
    images, in float32."""
    model = load(path).float().eval()
    all_logits, layers, pools = [], [], []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(normalise(images[i: i + batch_size], model.config)).permute(0, 3, 1, 2)
            out, inter = model(x, return_intermediates=True)
            all_logits.append(out.numpy())
            layers.append([a.numpy() for a in inter["attn"]])
            pools.append(inter["attn_pool"].numpy() if "attn_pool" in inter else None)
    pool = None if pools[0] is None else np.concatenate(pools)
    return Attention(np.concatenate(all_logits), [np.concatenate(per) for per in zip(*layers)], pool)


def features(config: ViTConfig, weights: Mapping[str, np.ndarray], x: np.ndarray,
             batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, np.ndarray | None]:
    """(final tokens (N, T, D), pooled feature (N, features_dim), None for pool="none") of normalised NHWC images
    (as jax_vit.inference.features takes them), in float32: ViT.forward_features, then forward_head(pre_logits=True)."""
    model = model_from_state_dict(config, weights).float().eval()
    tokens, pooled = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            t = model.forward_features(torch.from_numpy(x[i:i + batch_size]).permute(0, 3, 1, 2))
            tokens.append(t.numpy())
            if config.pool != "none":
                pooled.append(model.forward_head(t, pre_logits=True).numpy())
    return np.concatenate(tokens), (np.concatenate(pooled) if pooled else None)
