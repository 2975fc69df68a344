"""The Flax (linen) ViT. Mirrors torch_vit/model.py class for class; images are NHWC.

Parameter names follow timm's (patch_embed.proj, cls_token, pos_embed, blocks_N.norm1, attn.qkv, ...)
so that jax_vit.weights maps them to the shared layout by transposes alone.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_spec import ViTConfig, sincos_2d
from vit_spec.inputs import check_images

Dtype = Any


def _gelu(config: ViTConfig):
    approximate = config.gelu == "tanh"
    return lambda x: nn.gelu(x, approximate=approximate)


def _layer_norm(config: ViTConfig, name: str, dtype: Dtype) -> nn.LayerNorm:
    # Two-pass variance, as torch computes it: the fast E[x^2]-E[x]^2 form costs parity digits.
    return nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False, dtype=dtype, name=name)


class PatchEmbed(nn.Module):
    """Cuts NHWC images into patches and projects each to `width`: (B, H, W, C) -> (B, N, D)."""

    config: ViTConfig
    dtype: Dtype = None

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        patch = self.config.patch_hw
        x = nn.Conv(self.config.width, patch, strides=patch, padding="VALID", dtype=self.dtype, name="proj")(images)
        b, gh, gw, d = x.shape
        return x.reshape(b, gh * gw, d)


class Attention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection (timm's layout)."""

    config: ViTConfig
    dtype: Dtype = None

    @nn.compact
    def __call__(
        self, x: jax.Array, *, deterministic: bool = True, return_probs: bool = False
    ) -> tuple[jax.Array, jax.Array | None]:
        cfg = self.config
        b, t, d = x.shape
        qkv = nn.Dense(3 * d, use_bias=cfg.qkv_bias, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name="qkv")(x)
        # Features are laid out (3, heads, head_dim), as timm's reshape reads them.
        qkv = qkv.reshape(b, t, 3, cfg.heads, cfg.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, T, heads, head_dim)
        attn_dropout = not deterministic and cfg.attention_dropout > 0
        probs = None
        # jax.nn.dot_product_attention takes its softmax in float32, which would cap float64 at float32 precision.
        if return_probs or attn_dropout or q.dtype == jnp.float64:
            q = q * cfg.head_dim**-0.5
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k)
            # Softmax in at least float32, also under bfloat16 compute.
            probs = jax.nn.softmax(scores.astype(jnp.promote_types(scores.dtype, jnp.float32)), axis=-1)
            probs = probs.astype(v.dtype)
            dropped = nn.Dropout(cfg.attention_dropout)(probs, deterministic=deterministic)
            out = jnp.einsum("bhqk,bkhd->bqhd", dropped, v)
        else:
            # Fused kernel where the backend has one; the (T, T) probabilities need not exist.
            out = jax.nn.dot_product_attention(q, k, v, scale=cfg.head_dim**-0.5)
        out = out.reshape(b, t, d)
        out = nn.Dense(d, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name="proj")(out)
        out = nn.Dropout(cfg.dropout)(out, deterministic=deterministic)
        return out, (probs if return_probs else None)


class MlpBlock(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout."""

    config: ViTConfig
    dtype: Dtype = None

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
        cfg = self.config
        dense = lambda features, name: nn.Dense(
            features,
            dtype=self.dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.normal(stddev=1e-6),
            name=name,
        )
        x = dense(cfg.mlp_dim, "fc1")(x)
        x = _gelu(cfg)(x)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        x = dense(cfg.width, "fc2")(x)
        return nn.Dropout(cfg.dropout)(x, deterministic=deterministic)


class EncoderBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)), each branch under stochastic depth."""

    config: ViTConfig
    drop_path: float = 0.0
    dtype: Dtype = None

    @nn.compact
    def __call__(
        self, x: jax.Array, *, deterministic: bool = True, return_probs: bool = False
    ) -> tuple[jax.Array, jax.Array | None]:
        cfg = self.config
        # Stochastic depth: one keep/drop decision per sample, broadcast over tokens and features.
        drop_path = nn.Dropout(self.drop_path, broadcast_dims=(1, 2))
        y = _layer_norm(cfg, "norm1", self.dtype)(x)
        y, probs = Attention(cfg, self.dtype, name="attn")(y, deterministic=deterministic, return_probs=return_probs)
        x = x + drop_path(y, deterministic=deterministic)
        y = _layer_norm(cfg, "norm2", self.dtype)(x)
        y = MlpBlock(cfg, self.dtype, name="mlp")(y, deterministic=deterministic)
        x = x + drop_path(y, deterministic=deterministic)
        return x, probs


class ViT(nn.Module):
    """Vision Transformer on NHWC float images.

    Attributes:
        config: the architecture.
        dtype: compute dtype (e.g. jnp.bfloat16); parameters keep their own dtype. None: from the inputs.

    `apply(variables, images)` returns logits. `train=True` turns on dropout and stochastic depth
    (pass rngs={"dropout": key}). `return_intermediates=True` returns (logits, intermediates) with
    "patch_embed" (B, N, D, before the position embedding), "embed" (B, T, D, after it and the [CLS]
    token), "blocks" (each block's output), "attn" (each layer's probabilities, (B, heads, T, T)),
    "encoded" (after the final norm), "pooled" (B, D), "pre_logits" (B, features_dim), "logits".
    """

    config: ViTConfig
    dtype: Dtype = None

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False, return_intermediates: bool = False):
        cfg = self.config
        check_images(cfg, images.shape, str(images.dtype), jnp.issubdtype(images.dtype, jnp.floating), "NHWC")
        deterministic = not train
        inter: dict[str, Any] = {}

        x = PatchEmbed(cfg, self.dtype, name="patch_embed")(images)
        inter["patch_embed"] = x
        b, _, d = x.shape
        if cfg.pool == "cls":
            cls_token = self.param("cls_token", nn.initializers.zeros, (1, 1, d))
            x = jnp.concatenate([jnp.broadcast_to(cls_token.astype(x.dtype), (b, 1, d)), x], axis=1)
        # The [CLS] slot is part of the position embedding (timm, Google's vision_transformer).
        if cfg.pos_embed == "learned":
            pos_embed = self.param("pos_embed", nn.initializers.normal(stddev=0.02), (1, cfg.num_tokens, d))
        else:
            pos_embed = jnp.asarray(sincos_2d(cfg))
        x = x + pos_embed.astype(x.dtype)
        inter["embed"] = x
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)

        blocks, attn = [], []
        for i, rate in enumerate(cfg.drop_path_rates()):
            x, probs = EncoderBlock(cfg, rate, self.dtype, name=f"blocks_{i}")(
                x, deterministic=deterministic, return_probs=return_intermediates
            )
            blocks.append(x)
            attn.append(probs)
        inter["blocks"], inter["attn"] = tuple(blocks), tuple(attn)

        x = _layer_norm(cfg, "norm", self.dtype)(x)
        inter["encoded"] = x
        # Mean pooling normalises every token first (Google's "gap", timm's fc_norm=False).
        x = x[:, 0] if cfg.pool == "cls" else x.mean(axis=1)
        inter["pooled"] = x
        if cfg.representation_size:
            x = nn.tanh(nn.Dense(cfg.representation_size, dtype=self.dtype, name="pre_logits")(x))
        inter["pre_logits"] = x
        if cfg.num_classes:
            x = nn.Dense(cfg.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="head")(x)
        inter["logits"] = x
        return (x, inter) if return_intermediates else x


def init_params(config: ViTConfig, rng: jax.Array | int = 0) -> dict:
    """Fresh parameters for `config` (float32), as a nested dict."""
    if isinstance(rng, int):
        rng = jax.random.key(rng)
    h, w = config.image_hw
    images = jnp.zeros((1, h, w, config.channels), jnp.float32)
    return jax.jit(ViT(config).init)(rng, images)["params"]
