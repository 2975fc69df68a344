"""The Flax (linen) ViT. Mirrors torch_vit/model.py class for class; images are NHWC.

Parameter names follow timm's (patch_embed.proj, cls_token, pos_embed, blocks_N.norm1, attn.qkv, ...)
so that jax_vit.weights maps them to the shared layout by transposes alone.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jax_vit.attention import packed_attention
from jax_vit.block_layout import SCANNED_BLOCKS, stack_blocks
from jax_vit.gelu import gelu, quick_gelu
from jax_vit.layer_norm import LayerNorm
from jax_vit.rms_norm import RmsNorm
from vit_spec import ViTConfig, sincos_2d
from vit_spec.inputs import check_images

# The logical axes of the tokens between blocks (B, T, D), for nn.with_logical_constraint: a trainer's
# nn.logical_axis_rules maps them onto its mesh; without rules they constrain nothing.
ACTIVATION_AXES = ("batch", "tokens", "embed")

Dtype = Any


def _activation(config: ViTConfig):
    if config.activation == "quick_gelu":
        return quick_gelu
    if config.activation == "silu":
        return jax.nn.silu
    approximate = config.gelu == "tanh"
    return lambda x: gelu(x, approximate)


def _norm(config: ViTConfig, name: str, dtype: Dtype) -> nn.Module:
    if config.norm == "rms":
        return RmsNorm(epsilon=config.layer_norm_eps, dtype=dtype, name=name)
    # Two-pass variance, as torch computes it: the fast E[x^2]-E[x]^2 form costs parity digits.
    return LayerNorm(epsilon=config.layer_norm_eps, dtype=dtype, name=name)


class PatchEmbed(nn.Module):
    """Cuts NHWC images into patches and projects each to `width`: (B, H, W, C) -> (B, N, D); patch_norm: then a norm
    (timm's PatchEmbed with embed_norm_layer)."""

    config: ViTConfig
    dtype: Dtype = None

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        patch = self.config.patch_hw
        x = nn.Conv(self.config.width, patch, strides=patch, padding="VALID", use_bias=self.config.patch_bias,
                    dtype=self.dtype, name="proj")(images)
        b, gh, gw, d = x.shape
        x = x.reshape(b, gh * gw, d)
        if self.config.patch_norm:
            x = _norm(self.config, "norm", self.dtype)(x)
        return x


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
        if cfg.qk_norm:
            # Each head's query and key normed over head_dim before the product (timm); the packed layout is kept
            # so that the fused path below serves qk-norm too.
            q = _norm(cfg, "q_norm", self.dtype)(qkv[:, :, 0])
            k = _norm(cfg, "k_norm", self.dtype)(qkv[:, :, 1])
            qkv = jnp.stack([q, k, qkv[:, :, 2]], axis=2)
        attn_dropout = not deterministic and cfg.attention_dropout > 0
        probs = None
        if return_probs or attn_dropout:
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, T, heads, head_dim)
            q = q * cfg.head_dim**-0.5
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k)
            # Softmax in at least float32, also under bfloat16 compute.
            probs = jax.nn.softmax(scores.astype(jnp.promote_types(scores.dtype, jnp.float32)), axis=-1)
            probs = probs.astype(v.dtype)
            dropped = nn.Dropout(cfg.attention_dropout)(probs, deterministic=deterministic)
            out = jnp.einsum("bhqk,bkhd->bqhd", dropped, v)
        else:
            # cuDNN's fused kernel on GPUs (bf16/f16), elsewhere XLA with a hand-written gradient.
            out = packed_attention(qkv, cfg.head_dim**-0.5)
        out = out.reshape(b, t, d)
        if cfg.attn_norm:  # the heads' concatenated output normed before the projection (timm scale_attn_norm)
            out = _norm(cfg, "norm", self.dtype)(out)
        out = nn.Dense(d, use_bias=cfg.proj_bias, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
                       name="proj")(out)
        out = nn.Dropout(cfg.dropout)(out, deterministic=deterministic)
        return out, (probs if return_probs else None)


def _dense(features: int, name: str, dtype: Dtype, use_bias: bool = True) -> nn.Dense:
    # big_vision's MlpBlock init: Xavier-uniform kernels, biases normal(1e-6).
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=nn.initializers.xavier_uniform(),
        bias_init=nn.initializers.normal(stddev=1e-6),
        name=name,
    )


class MlpBlock(nn.Module):
    """fc1 -> activation -> dropout -> (norm) -> fc2 -> dropout (timm's Mlp).

    `hidden`, `dropout` and `inner_norm` default to the config's blocks' (mlp_dim, dropout, mlp_norm); the MAP
    head's MLP sets its own.
    """

    config: ViTConfig
    dtype: Dtype = None
    hidden: int | None = None
    dropout: float | None = None
    inner_norm: bool | None = None
    bias: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
        cfg = self.config
        rate = cfg.dropout if self.dropout is None else self.dropout
        bias = cfg.proj_bias if self.bias is None else self.bias
        x = _dense(self.hidden or cfg.mlp_dim, "fc1", self.dtype, bias)(x)
        x = _activation(cfg)(x)
        x = nn.Dropout(rate)(x, deterministic=deterministic)
        if cfg.mlp_norm if self.inner_norm is None else self.inner_norm:
            x = _norm(cfg, "norm", self.dtype)(x)
        x = _dense(cfg.width, "fc2", self.dtype, bias)(x)
        return nn.Dropout(rate)(x, deterministic=deterministic)


class GluMlp(nn.Module):
    """Gated MLP with one packed fc1 of 2*mlp_dim (timm's GluMlp): its halves are value and gate.

    mlp="swiglu_packed" (timm SwiGLUPacked): act(first half) * second half; mlp="geglu" (timm GluMlp, gate last):
    first half * act(second half). Then dropout -> (norm) -> fc2 -> dropout.
    """

    config: ViTConfig
    dtype: Dtype = None

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
        cfg = self.config
        x1, x2 = jnp.split(_dense(2 * cfg.mlp_dim, "fc1", self.dtype, cfg.proj_bias)(x), 2, axis=-1)
        act = _activation(cfg)
        x = act(x1) * x2 if cfg.mlp == "swiglu_packed" else x1 * act(x2)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        if cfg.mlp_norm:
            x = _norm(cfg, "norm", self.dtype)(x)
        x = _dense(cfg.width, "fc2", self.dtype, cfg.proj_bias)(x)
        return nn.Dropout(cfg.dropout)(x, deterministic=deterministic)


class SwiGLU(nn.Module):
    """Gated MLP with separate gate and value projections (timm's SwiGLU): act(fc1_g(x)) * fc1_x(x) -> dropout ->
    (norm) -> fc2 -> dropout."""

    config: ViTConfig
    dtype: Dtype = None

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
        cfg = self.config
        gate = _dense(cfg.mlp_dim, "fc1_g", self.dtype, cfg.proj_bias)(x)
        x = _activation(cfg)(gate) * _dense(cfg.mlp_dim, "fc1_x", self.dtype, cfg.proj_bias)(x)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        if cfg.mlp_norm:
            x = _norm(cfg, "norm", self.dtype)(x)
        x = _dense(cfg.width, "fc2", self.dtype, cfg.proj_bias)(x)
        return nn.Dropout(cfg.dropout)(x, deterministic=deterministic)


def _mlp(config: ViTConfig, dtype: Dtype) -> nn.Module:
    """The block's MLP, by config.mlp, named "mlp" as timm's."""
    if config.mlp == "plain":
        return MlpBlock(config, dtype, name="mlp")
    if config.mlp == "swiglu":
        return SwiGLU(config, dtype, name="mlp")
    return GluMlp(config, dtype, name="mlp")


class LayerScale(nn.Module):
    """Per-channel gains on a residual branch (timm's LayerScale, CaiT/DeiT III), initialised to layer_scale_init."""

    config: ViTConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gamma = self.param("gamma", nn.initializers.constant(self.config.layer_scale_init), (self.config.width,))
        return x * gamma.astype(x.dtype)


class EncoderBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)), each branch under stochastic depth.

    `drop_path` is the block's stochastic depth rate; `drop_path_rate=` (a traced scalar) overrides it
    where the rate is data rather than a constant: under `ViT(scan_blocks=True)` each layer's rate is a
    scanned input.
    """

    config: ViTConfig
    drop_path: float = 0.0
    dtype: Dtype = None

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        deterministic: bool = True,
        return_probs: bool = False,
        drop_path_rate: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array | None]:
        cfg = self.config
        # Stochastic depth: one keep/drop decision per sample, broadcast over tokens and features.
        if drop_path_rate is None:
            drop_path = nn.Dropout(self.drop_path, broadcast_dims=(1, 2))
        else:

            def drop_path(y: jax.Array, deterministic: bool) -> jax.Array:
                if deterministic or cfg.drop_path == 0:  # no stochastic depth anywhere: draw nothing
                    return y
                return drop_path_by_rate(y, drop_path_rate, self.make_rng("dropout"))
        y = _norm(cfg, "norm1", self.dtype)(x)
        y, probs = Attention(cfg, self.dtype, name="attn")(y, deterministic=deterministic, return_probs=return_probs)
        if cfg.layer_scale_init:
            y = LayerScale(cfg, name="ls1")(y)
        x = x + drop_path(y, deterministic=deterministic)
        y = _norm(cfg, "norm2", self.dtype)(x)
        y = _mlp(cfg, self.dtype)(y, deterministic=deterministic)
        if cfg.layer_scale_init:
            y = LayerScale(cfg, name="ls2")(y)
        x = x + drop_path(y, deterministic=deterministic)
        return x, probs


def drop_path_by_rate(y: jax.Array, rate: jax.Array, rng: jax.Array) -> jax.Array:
    """Stochastic depth of a (B, T, D) branch at a traced rate: nn.Dropout(rate, broadcast_dims=(1, 2)),
    whose rate must be a Python float, computed the same way from the same key (the same samples
    dropped; XLA multiplies the kept ones by 1 / keep where nn.Dropout divides by a constant keep,
    which can differ in the last bit).

    Args:
        y: the branch output.
        rate: the drop probability, a scalar array (0 keeps every sample).
        rng: the key of the draw.
    """
    keep = 1.0 - jnp.asarray(rate, jnp.float32)
    mask = jax.random.bernoulli(rng, keep, (y.shape[0], 1, 1))
    # y / keep in y's dtype, as nn.Dropout's y / keep_prob (a Python float) under bfloat16 compute.
    return jax.lax.select(jnp.broadcast_to(mask, y.shape), y / keep.astype(y.dtype), jnp.zeros_like(y))


class MAPHead(nn.Module):
    """Multihead attention pooling (big_vision's MAPHead, timm's AttentionPoolLatent as VisionTransformer builds it):
    one learned latent query attends over the tokens, then a residual MLP on its normed output: (B, T, D) -> (B, D).

    The query is a single token, so the (1, T) probabilities are computed directly; no fused kernel is needed.
    """

    config: ViTConfig
    dtype: Dtype = None

    @nn.compact
    def __call__(self, x: jax.Array, *, return_probs: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
        """The pooled (B, D); with return_probs, also the latent's attention over the tokens, (B, heads, 1, T)."""
        cfg = self.config
        b, t, d = x.shape
        dense = lambda features, name: nn.Dense(features, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name=name)
        latent = self.param("latent", nn.initializers.xavier_uniform(), (1, 1, d))
        q = dense(d, "q")(jnp.broadcast_to(latent.astype(x.dtype), (b, 1, d))).reshape(b, 1, cfg.heads, cfg.head_dim)
        kv = dense(2 * d, "kv")(x).reshape(b, t, 2, cfg.heads, cfg.head_dim)  # (2, heads, head_dim), as timm's reshape
        k, v = kv[:, :, 0], kv[:, :, 1]
        scores = jnp.einsum("bqhd,bkhd->bhqk", q * cfg.head_dim**-0.5, k)
        probs = jax.nn.softmax(scores.astype(jnp.promote_types(scores.dtype, jnp.float32)), axis=-1).astype(v.dtype)
        out = dense(d, "proj")(jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, 1, d))
        # timm's AttentionPoolLatent MLP: plain, of the blocks' fc1 width (its hidden = width * mlp_ratio), no dropout.
        y = MlpBlock(cfg, self.dtype, hidden=cfg.mlp_fc1_dim, dropout=0.0, inner_norm=False, bias=True, name="mlp")
        out = out + y(_norm(cfg, "norm", self.dtype)(out))
        return (out[:, 0], probs) if return_probs else out[:, 0]


class ViT(nn.Module):
    """Vision Transformer on NHWC float images.

    Attributes:
        config: the architecture.
        dtype: compute dtype (e.g. jnp.bfloat16); parameters keep their own dtype. None: from the inputs.
        scan_blocks: run the encoder blocks as one `nn.scan` over depth: their parameters are stacked
            along a leading depth axis under params["blocks"] (instead of blocks_0 ... blocks_{depth-1};
            `jax_vit.stack_blocks` / `unstack_blocks` convert), and the program holds one block, so
            compile time stays flat as depth grows. The same function of the same weights (to float32
            rounding: XLA compiles the scanned block apart, and fuses it differently); under train=True
            the dropout and stochastic-depth draws come from other, equally distributed, keys: scan
            splits the "dropout" stream per layer where the loop folds in each block's name.
        remat: recompute each block's activations in the backward pass instead of keeping them
            (`nn.remat`): less memory for about one more forward pass. Use it with scan_blocks: there
            the loop pins each recomputation to its layer's backward step; measured on XLA:CPU, the
            unscanned program's peak memory does not drop (`python -m vit_bench.compile`).

    `apply(variables, images)` returns logits. Features, as timm's `forward_features` / `forward_head`:
    `apply(variables, images, method=ViT.forward_features)` gives the final tokens (B, T, D: prefix tokens, then the
    patches; after the final token norm, if any), `apply(variables, tokens, method=ViT.forward_head)` the logits of
    such tokens, and with `pre_logits=True` what the head reads (the pooled feature, B x features_dim). `train=True` turns on dropout and stochastic depth
    (pass rngs={"dropout": key}). `return_intermediates=True` returns (logits, intermediates) with
    "patch_embed" (B, N, D, before the position embedding), "embed" (B, T, D, after it and the prefix
    tokens), "norm_pre" (pre_norm only: after the norm on the embeddings), "blocks" (each block's output),
    "attn" (each layer's probabilities, (B, heads, T, T)), "encoded" (after the final token norm, if any),
    "pooled" (B, D: the [CLS] token, the mean of the patch tokens or the MAP head's output, after fc_norm
    where final_norm="pooled"; pool="none": every token), "attn_pool" (pool="map": the MAP head's attention of its
    latent over the patch tokens, (B, heads, 1, patches); pool_include_prefix: its patch columns), "pre_logits"
    (B, features_dim), "logits".
    distilled=True: "pooled" is the mean of the [CLS] and distillation tokens (timm's pre_logits), "head_logits"
    and "head_dist_logits" are the two heads' outputs, and "logits" their mean, in training as in inference
    (timm's VisionTransformerDistilled with distilled_training=False; a distillation trainer reads the heads
    from the intermediates).
    """

    config: ViTConfig
    dtype: Dtype = None
    scan_blocks: bool = False
    remat: bool = False

    def forward_features(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """The final tokens (B, T, D): prefix tokens ([CLS], distillation, registers), then the patches, after the
        final token norm where final_norm="tokens" (timm's forward_features). vit_spec.tokens.split_tokens parts them."""
        return self(images, train=train, _part="features")

    def forward_head(self, tokens: jax.Array, *, pre_logits: bool = False) -> jax.Array:
        """forward_features' tokens -> logits; pre_logits=True: what the head reads, the pooled feature after fc_norm
        and the representation layer, (B, features_dim) (timm's forward_head). pool="none": the tokens."""
        return self(tokens, _part="pre_logits" if pre_logits else "head")

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False, return_intermediates: bool = False, _part: str = "all"):
        cfg = self.config
        if _part != "all" and _part != "features":  # forward_head: `images` are forward_features' tokens
            return self._head(images, {}, False, pre_logits=_part == "pre_logits")
        check_images(cfg, images.shape, str(images.dtype), jnp.issubdtype(images.dtype, jnp.floating), "NHWC")
        deterministic = not train
        inter: dict[str, Any] = {}

        x = PatchEmbed(cfg, self.dtype, name="patch_embed")(images)
        inter["patch_embed"] = x
        b, _, d = x.shape
        # Prefix tokens in timm's order: [CLS], the distillation token, the registers.
        prefix = []
        if cfg.has_class_token:
            prefix.append(self.param("cls_token", nn.initializers.zeros, (1, 1, d)))
        if cfg.distilled:
            prefix.append(self.param("dist_token", nn.initializers.truncated_normal(stddev=0.02), (1, 1, d)))
        if cfg.reg_tokens:
            prefix.append(self.param("reg_token", nn.initializers.normal(stddev=1e-6), (1, cfg.reg_tokens, d)))
        prefix = [jnp.broadcast_to(p.astype(x.dtype), (b,) + p.shape[1:]) for p in prefix]
        if cfg.pos_embed == "learned":
            pos_embed = self.param("pos_embed", nn.initializers.normal(stddev=0.02), (1, cfg.num_pos_embed_tokens, d))
        else:
            pos_embed = jnp.asarray(sincos_2d(cfg))
        if cfg.pos_embed_covers_prefix:
            # The prefix slots are part of the position embedding (timm, Google's vision_transformer).
            x = jnp.concatenate(prefix + [x], axis=1) if prefix else x
            x = x + pos_embed.astype(x.dtype)
        else:
            # Patches only (timm no_embed_class: DeiT III, big_vision): add, then prepend.
            x = x + pos_embed.astype(x.dtype)
            x = jnp.concatenate(prefix + [x], axis=1) if prefix else x
        inter["embed"] = x
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        if cfg.pre_norm:
            x = _norm(cfg, "norm_pre", self.dtype)(x)
            inter["norm_pre"] = x

        def run_block(block: EncoderBlock, x: jax.Array, rate: jax.Array | None):
            # Under a mesh and logical-axis rules (a trainer's: train.jax_loop.sharding.under_mesh) the tokens stay
            # split along the batch in every block, whatever split the parameters have; otherwise the identity.
            x = nn.with_logical_constraint(x, ACTIVATION_AXES)
            x, probs = block(x, deterministic=deterministic, return_probs=return_intermediates, drop_path_rate=rate)
            return x, (x, probs)

        if self.remat:
            # The flags are closed over (static); under scan the loop already keeps XLA from merging the
            # recomputation with the forward pass (CSE), so prevent_cse only costs there.
            run_block = nn.remat(run_block, prevent_cse=not self.scan_blocks)
        if self.scan_blocks:
            # One block's program, its parameters stacked over depth; each layer's stochastic-depth rate
            # is a scanned input, and each layer gets its own init and dropout keys.
            scan = nn.scan(
                run_block,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=0,
                length=cfg.depth,
            )
            rates = jnp.asarray(cfg.drop_path_rates(), jnp.float32)
            x, (outs, probs) = scan(EncoderBlock(cfg, dtype=self.dtype, name=SCANNED_BLOCKS), x, rates)
            blocks = [outs[i] for i in range(cfg.depth)]
            attn = [probs[i] if return_intermediates else None for i in range(cfg.depth)]
        else:
            blocks, attn = [], []
            for i, rate in enumerate(cfg.drop_path_rates()):
                x, (_, probs) = run_block(EncoderBlock(cfg, rate, self.dtype, name=f"blocks_{i}"), x, None)
                blocks.append(x)
                attn.append(probs)
        inter["blocks"], inter["attn"] = tuple(blocks), tuple(attn)

        if cfg.final_norm == "tokens":
            x = _norm(cfg, "norm", self.dtype)(x)
        inter["encoded"] = x
        if _part == "features":
            return x
        return self._head(x, inter, return_intermediates)

    def _head(self, x: jax.Array, inter: dict[str, Any], return_intermediates: bool, pre_logits: bool = False):
        """Final tokens -> pooled -> (fc_norm) -> (pre-logits layer) -> logits; pre_logits: stop before the head."""
        cfg = self.config
        if cfg.distilled:
            return self._distilled_heads(x, inter, return_intermediates, pre_logits)
        x = self._pool(x, inter)
        if cfg.final_norm == "pooled":
            x = _norm(cfg, "fc_norm", self.dtype)(x)
        inter["pooled"] = x
        if cfg.representation_size:
            x = nn.tanh(nn.Dense(cfg.representation_size, dtype=self.dtype, name="pre_logits")(x))
        inter["pre_logits"] = x
        if pre_logits:
            return x
        if cfg.num_classes:
            x = nn.Dense(cfg.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="head")(x)
        inter["logits"] = x
        return (x, inter) if return_intermediates else x

    def _pool(self, x: jax.Array, inter: dict[str, Any]) -> jax.Array:
        cfg = self.config
        if cfg.pool == "cls":
            return x[:, 0]
        # timm pools the patch tokens, or every token (pool_include_prefix)
        patches = x[:, cfg.num_prefix_tokens :] if cfg.num_prefix_tokens and not cfg.pool_include_prefix else x
        if cfg.pool == "mean":
            # With final_norm="tokens", every token is normed first (Google's "gap", timm's fc_norm=False).
            return patches.mean(axis=1)
        if cfg.pool == "map":
            x, probs = MAPHead(cfg, self.dtype, name="attn_pool")(patches, return_probs=True)
            # The patch columns (pool_include_prefix: the prefix tokens' are left out, as from every attention map).
            inter["attn_pool"] = probs[..., cfg.num_prefix_tokens :] if cfg.pool_include_prefix else probs
            return x
        return x  # "none": every token

    def _distilled_heads(self, x: jax.Array, inter: dict[str, Any], return_intermediates: bool, pre_logits: bool = False):
        """DeiT: one head on the [CLS] token, one on the distillation token, their logits averaged."""
        cfg = self.config
        cls, dist = x[:, 0], x[:, 1]
        inter["pooled"] = inter["pre_logits"] = (cls + dist) / 2
        if pre_logits:
            return inter["pre_logits"]
        if cfg.num_classes:
            head = lambda name: nn.Dense(cfg.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros, name=name)
            inter["head_logits"], inter["head_dist_logits"] = head("head")(cls), head("head_dist")(dist)
            x = (inter["head_logits"] + inter["head_dist_logits"]) / 2
        else:
            x = inter["pooled"]
        inter["logits"] = x
        return (x, inter) if return_intermediates else x


def init_params(config: ViTConfig, rng: jax.Array | int = 0, *, scan_blocks: bool = False) -> dict:
    """Fresh parameters for `config` (float32), as a nested dict.

    Args:
        config: the architecture.
        rng: a key or a seed.
        scan_blocks: the layout of `ViT(scan_blocks=True)` (blocks stacked under "blocks"). The same
            values as the per-block layout from the same rng, stacked: a run starts from the same
            weights in either layout.
    """
    if isinstance(rng, int):
        rng = jax.random.key(rng)
    h, w = config.image_hw
    images = jnp.zeros((1, h, w, config.channels), jnp.float32)
    params = jax.jit(ViT(config).init)(rng, images)["params"]
    return stack_blocks(params) if scan_blocks else params
