"""The one weight layout: timm's names and shapes, checked against a ViTConfig."""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from vit_spec.config import ViTConfig


class WeightsError(ValueError):
    """Weights that do not fit the config they came with."""


# Tensors that weight decay leaves alone besides biases and norm scales, as timm's no_weight_decay() and
# big_vision: each entry is a whole timm name or its last component(s) ("gamma": every layer-scale gain).
NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "dist_token", "attn_pool.latent", "gamma")


def exempt_from_decay(name: str) -> bool:
    """Whether the tensor `name` (timm's dotted name) is one of NO_DECAY_NAMES, whatever its shape."""
    return any(name == n or name.endswith("." + n) for n in NO_DECAY_NAMES)


def _norm_shapes(config: ViTConfig, prefix: str, dim: int) -> dict[str, tuple[int, ...]]:
    # LayerNorm: weight and bias; timm's RmsNorm: weight only.
    if config.norm == "rms":
        return {prefix + "weight": (dim,)}
    return {prefix + "weight": (dim,), prefix + "bias": (dim,)}


def _mlp_shapes(config: ViTConfig, prefix: str) -> dict[str, tuple[int, ...]]:
    d, m = config.width, config.mlp_dim
    shapes: dict[str, tuple[int, ...]] = {}
    if config.mlp == "swiglu":
        for part in ("fc1_g", "fc1_x"):
            shapes[f"{prefix}{part}.weight"] = (m, d)
            if config.proj_bias:
                shapes[f"{prefix}{part}.bias"] = (m,)
    else:
        shapes[prefix + "fc1.weight"] = (config.mlp_fc1_dim, d)
        if config.proj_bias:
            shapes[prefix + "fc1.bias"] = (config.mlp_fc1_dim,)
    if config.mlp_norm:
        shapes.update(_norm_shapes(config, prefix + "norm.", m))
    shapes[prefix + "fc2.weight"] = (d, m)
    if config.proj_bias:
        shapes[prefix + "fc2.bias"] = (d,)
    return shapes


def _map_head_shapes(config: ViTConfig) -> dict[str, tuple[int, ...]]:
    """timm's AttentionPoolLatent as VisionTransformer(global_pool="map") builds it: one latent query, q/kv/proj
    with biases, a norm and a plain MLP of timm's hidden width (the blocks' fc1 width)."""
    d, h = config.width, config.mlp_fc1_dim
    p = "attn_pool."
    shapes = {p + "latent": (1, 1, d), p + "q.weight": (d, d), p + "q.bias": (d,), p + "kv.weight": (2 * d, d),
              p + "kv.bias": (2 * d,), p + "proj.weight": (d, d), p + "proj.bias": (d,)}
    shapes.update(_norm_shapes(config, p + "norm.", d))
    shapes.update({p + "mlp.fc1.weight": (h, d), p + "mlp.fc1.bias": (h,), p + "mlp.fc2.weight": (d, h),
                   p + "mlp.fc2.bias": (d,)})
    return shapes


def param_shapes(config: ViTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the model, in timm's `VisionTransformer.state_dict()` names, layouts and order.

    Linear weights are (out, in), the patch projection is a Conv2d weight (out, in, kh, kw).
    `pos_embed` holds the prefix tokens' slots first ([CLS], distillation token, registers) unless
    pos_embed_covers_prefix=False; with pos_embed="sincos2d" it is the fixed table (zero in those slots),
    kept so that timm loads the file with strict=True.
    """
    d = config.width
    ph, pw = config.patch_hw
    shapes: dict[str, tuple[int, ...]] = {}
    if config.has_class_token:
        shapes["cls_token"] = (1, 1, d)
    if config.reg_tokens:
        shapes["reg_token"] = (1, config.reg_tokens, d)
    shapes["pos_embed"] = (1, config.num_pos_embed_tokens, d)
    if config.distilled:
        shapes["dist_token"] = (1, 1, d)
    shapes["patch_embed.proj.weight"] = (d, config.channels, ph, pw)
    if config.patch_bias:
        shapes["patch_embed.proj.bias"] = (d,)
    if config.patch_norm:
        shapes.update(_norm_shapes(config, "patch_embed.norm.", d))
    if config.pre_norm:
        shapes.update(_norm_shapes(config, "norm_pre.", d))
    for i in range(config.depth):
        p = f"blocks.{i}."
        shapes.update(_norm_shapes(config, p + "norm1.", d))
        shapes[p + "attn.qkv.weight"] = (3 * d, d)
        if config.qkv_bias:
            shapes[p + "attn.qkv.bias"] = (3 * d,)
        if config.qk_norm:
            shapes.update(_norm_shapes(config, p + "attn.q_norm.", config.head_dim))
            shapes.update(_norm_shapes(config, p + "attn.k_norm.", config.head_dim))
        if config.attn_norm:
            shapes.update(_norm_shapes(config, p + "attn.norm.", d))
        shapes[p + "attn.proj.weight"] = (d, d)
        if config.proj_bias:
            shapes[p + "attn.proj.bias"] = (d,)
        if config.layer_scale_init:
            shapes[p + "ls1.gamma"] = (d,)
        shapes.update(_norm_shapes(config, p + "norm2.", d))
        shapes.update(_mlp_shapes(config, p + "mlp."))
        if config.layer_scale_init:
            shapes[p + "ls2.gamma"] = (d,)
    if config.final_norm == "tokens":
        shapes.update(_norm_shapes(config, "norm.", d))
    if config.pool == "map":
        shapes.update(_map_head_shapes(config))
    if config.final_norm == "pooled":
        shapes.update(_norm_shapes(config, "fc_norm.", d))
    if config.representation_size:
        shapes["pre_logits.fc.weight"] = (config.representation_size, d)
        shapes["pre_logits.fc.bias"] = (config.representation_size,)
    if config.num_classes:
        shapes["head.weight"] = (config.num_classes, config.features_dim)
        shapes["head.bias"] = (config.num_classes,)
        if config.distilled:
            shapes["head_dist.weight"] = (config.num_classes, d)
            shapes["head_dist.bias"] = (config.num_classes,)
    return shapes


def num_params(config: ViTConfig) -> int:
    """Trainable parameters (a fixed sin-cos position table is not one)."""
    shapes = param_shapes(config)
    if config.pos_embed == "sincos2d":
        del shapes["pos_embed"]
    return int(sum(np.prod(s) for s in shapes.values()))


def check_weights(config: ViTConfig, weights: Mapping[str, np.ndarray], source: str = "the weights") -> None:
    """Raises WeightsError naming the first missing, unexpected or misshapen tensor."""
    expected = param_shapes(config)
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        raise WeightsError(
            f"{source} do not fit the config (width={config.width}, depth={config.depth}, pool={config.pool!r}, "
            f"qkv_bias={config.qkv_bias}, representation_size={config.representation_size}, "
            f"num_classes={config.num_classes}{_features(config)}): {'; '.join(parts)}"
        )
    for name, shape in expected.items():
        found = tuple(np.shape(weights[name]))
        if found != shape:
            raise WeightsError(
                f"{source}: parameter {name!r} has shape {found}, but the config expects {shape} "
                f"(image_size={config.image_size}, patch_size={config.patch_size}, width={config.width}, "
                f"mlp_dim={config.mlp_dim}, num_classes={config.num_classes})"
            )
    for name in expected:
        dtype = np.asarray(weights[name]).dtype
        if not _is_float(dtype):
            raise WeightsError(f"{source}: parameter {name!r} has dtype {dtype}, a floating type was expected")


def _features(config: ViTConfig) -> str:
    """The architecture features that differ from their defaults, for messages: ", reg_tokens=4, ..."."""
    from vit_spec.config import _DEFAULTS, FEATURE_FIELDS

    changed = [f"{n}={getattr(config, n)!r}" for n in FEATURE_FIELDS if getattr(config, n) != _DEFAULTS[n]]
    return "".join(", " + c for c in changed)


def check_finite(weights: Mapping[str, np.ndarray], source: str = "the weights") -> None:
    """Raises WeightsError naming every floating tensor that holds NaN or infinity, with how many of each.

    One pass of np.isfinite per tensor; counts are taken only for the tensors that fail it. Integer and
    bool tensors are skipped (they cannot hold either).
    """
    bad: list[tuple[str, str, int]] = []
    for name, value in weights.items():
        array = np.asarray(value)
        if not _is_float(array.dtype) or np.isfinite(array).all():
            continue
        counts = {
            "NaN": np.count_nonzero(np.isnan(array)),
            "+inf": np.count_nonzero(np.isposinf(array)),
            "-inf": np.count_nonzero(np.isneginf(array)),
        }
        bad.append((name, ", ".join(f"{n} {kind}" for kind, n in counts.items() if n), array.size))
    if not bad:
        return
    if len(bad) == 1:
        name, found, size = bad[0]
        what = f"tensor {name!r} holds {found} of its {size} values"
    else:
        listed = [f"{name!r} ({found} of {size} values)" for name, found, size in bad]
        what = f"{len(bad)} tensors hold NaN or infinite values: {_few(listed, show=str)}"
    raise WeightsError(
        f"{source}: {what}: the weights cannot be right (a diverged run?); "
        "retrain, or use an earlier checkpoint"
    )


def _is_float(dtype: np.dtype) -> bool:
    # numpy has no bfloat16; ml_dtypes' (which safetensors returns for BF16 tensors) is not np.floating.
    return np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16"


def _few(names: list[str], show: Callable[[str], str] = repr) -> str:
    shown = ", ".join(show(n) for n in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def sincos_2d(config: ViTConfig, temperature: float = 10_000.0) -> np.ndarray:
    """big_vision's fixed 2-D sin-cos position table, (1, num_pos_embed_tokens, width), float32.

    The prefix tokens' slots ([CLS] etc., where the table covers them) are zero, as in MAE: they carry no position.
    Computed here once, in numpy, so that both frameworks add bit-identical values.
    """
    gh, gw = config.grid
    y, x = np.mgrid[:gh, :gw]
    quarter = config.width // 4
    omega = np.arange(quarter, dtype=np.float64) / max(quarter - 1, 1)
    omega = 1.0 / temperature**omega
    y = np.einsum("m,d->md", y.reshape(-1).astype(np.float64), omega)
    x = np.einsum("m,d->md", x.reshape(-1).astype(np.float64), omega)
    table = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
    prefix = config.num_pos_embed_tokens - config.num_patches
    if prefix:
        table = np.concatenate([np.zeros((prefix, config.width)), table], axis=0)
    return table[None].astype(np.float32)


# Norm scales and layer-scale gains of the architecture features (kept apart from the standard tensors' rule so
# that the standard ViT's draws, and the parity suite's weights, stay as they were).
_FEATURE_SCALES = ("norm_pre.weight", "fc_norm.weight", "q_norm.weight", "k_norm.weight", "mlp.norm.weight",
                   "attn_pool.norm.weight", ".gamma", "patch_embed.norm.weight", "attn.norm.weight")


def random_weights(config: ViTConfig, seed: int = 0, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Non-trivial random weights for tests and parity checks: every tensor perturbed.

    No zero bias, unit norm scale or zero [CLS] token is left to hide a mistake; matrices are scaled
    by 1/sqrt(fan_in) so activations stay in range at any depth.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in param_shapes(config).items():
        if name == "pos_embed" and config.pos_embed == "sincos2d":
            value = sincos_2d(config)
        elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name.endswith(_FEATURE_SCALES):  # near one, so that they neither vanish nor explode
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name.endswith(".weight"):
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) / np.sqrt(fan_in)
        else:  # biases, cls_token, learned pos_embed
            value = 0.2 * rng.standard_normal(shape)
        out[name] = np.asarray(value, dtype=dtype)
    return out
