"""The one weight layout: timm's names and shapes, checked against a ViTConfig."""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from vit_spec.config import ViTConfig


class WeightsError(ValueError):
    """Weights that do not fit the config they came with."""


def param_shapes(config: ViTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the model, in timm's `VisionTransformer.state_dict()` names, layouts and order.

    Linear weights are (out, in), the patch projection is a Conv2d weight (out, in, kh, kw).
    `pos_embed` holds the [CLS] slot first when pool == "cls"; with pos_embed="sincos2d" it is the
    fixed table (zero in the [CLS] slot), kept so that timm loads the file with strict=True.
    """
    d, m = config.width, config.mlp_dim
    ph, pw = config.patch_hw
    shapes: dict[str, tuple[int, ...]] = {}
    if config.pool == "cls":
        shapes["cls_token"] = (1, 1, d)
    shapes["pos_embed"] = (1, config.num_tokens, d)
    shapes["patch_embed.proj.weight"] = (d, config.channels, ph, pw)
    shapes["patch_embed.proj.bias"] = (d,)
    for i in range(config.depth):
        p = f"blocks.{i}."
        shapes[p + "norm1.weight"] = (d,)
        shapes[p + "norm1.bias"] = (d,)
        shapes[p + "attn.qkv.weight"] = (3 * d, d)
        if config.qkv_bias:
            shapes[p + "attn.qkv.bias"] = (3 * d,)
        shapes[p + "attn.proj.weight"] = (d, d)
        shapes[p + "attn.proj.bias"] = (d,)
        shapes[p + "norm2.weight"] = (d,)
        shapes[p + "norm2.bias"] = (d,)
        shapes[p + "mlp.fc1.weight"] = (m, d)
        shapes[p + "mlp.fc1.bias"] = (m,)
        shapes[p + "mlp.fc2.weight"] = (d, m)
        shapes[p + "mlp.fc2.bias"] = (d,)
    shapes["norm.weight"] = (d,)
    shapes["norm.bias"] = (d,)
    if config.representation_size:
        shapes["pre_logits.fc.weight"] = (config.representation_size, d)
        shapes["pre_logits.fc.bias"] = (config.representation_size,)
    if config.num_classes:
        shapes["head.weight"] = (config.num_classes, config.features_dim)
        shapes["head.bias"] = (config.num_classes,)
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
            f"num_classes={config.num_classes}): {'; '.join(parts)}"
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
    """big_vision's fixed 2-D sin-cos position table, (1, num_tokens, width), float32.

    The [CLS] slot (pool="cls") is zero, as in MAE: the token carries no position.
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
    if config.pool == "cls":
        table = np.concatenate([np.zeros((1, config.width)), table], axis=0)
    return table[None].astype(np.float32)


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
        elif name.endswith(".weight"):
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) / np.sqrt(fan_in)
        else:  # biases, cls_token, learned pos_embed
            value = 0.2 * rng.standard_normal(shape)
        out[name] = np.asarray(value, dtype=dtype)
    return out
