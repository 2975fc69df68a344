"""How far the JAX twin's tensors are from the PyTorch twin's: the maximum absolute difference, scaled by the
reference's (PyTorch's) maximum magnitude, against a tolerance. Framework-free (numpy)."""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from vit_spec import ViTConfig

# Scaled max-abs bounds. float32: Hugging Face's cross-framework bar; float64: any difference is real math.
FORWARD_TOL = {"float32": 1e-5, "float64": 1e-12}
GRAD_TOL = {"float32": 1e-4, "float64": 1e-12}
# Parameters after a few AdamW steps: Adam divides by sqrt(v), which magnifies float32 rounding where a
# gradient is near zero, so float32 gets the gradient bar.
STEP_TOL = {"float32": 1e-4, "float64": 1e-12}
# Gradients that are zero in exact arithmetic: the key norm's bias (qk_norm with LayerNorm) adds one vector to
# every key, so one number to every score of a row, which softmax ignores. What each twin computes is rounding
# noise that no scaled comparison can match: it is checked to be noise instead, at most NOISE_TOL of the model's
# largest gradient in both twins.
ZERO_GRADIENTS = (".attn.k_norm.bias",)
NOISE_TOL = {"float32": 1e-6, "float64": 1e-14}


@dataclasses.dataclass(frozen=True)
class Difference:
    """How far one tensor of the JAX twin is from the PyTorch twin's."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    ref_max: float
    tol: float

    @property
    def scaled(self) -> float:
        return self.max_abs / self.ref_max if self.ref_max > 0 else self.max_abs

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.scaled)) and self.scaled <= self.tol

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAIL"
        return (
            f"{self.name}: max |jax - torch| = {self.max_abs:.3g}, scaled by max |torch| ({self.ref_max:.3g}) "
            f"= {self.scaled:.3g} (tolerance {self.tol:g}) {verdict}"
        )


@dataclasses.dataclass(frozen=True)
class NoiseDifference(Difference):
    """A gradient that is zero in exact arithmetic (ZERO_GRADIENTS), judged by its size in both twins against
    the model's largest gradient (`largest`), not by the twins' difference: max |torch| + max |jax - torch|
    bounds both."""

    largest: float = 1.0

    @property
    def scaled(self) -> float:
        size = self.max_abs + self.ref_max
        return size / self.largest if self.largest > 0 else size

    def __str__(self) -> str:
        return (f"{self.name}: zero in exact arithmetic; its size in both twins ({self.max_abs + self.ref_max:.3g}) "
                f"scaled by the largest gradient ({self.largest:.3g}) = {self.scaled:.3g} (tolerance {self.tol:g}) "
                f"{'ok' if self.ok else 'FAIL'}")


def set_apart_zero_gradients(diffs: list[Difference], dtype: str) -> list[Difference]:
    """`diffs` of gradients with those of ZERO_GRADIENTS judged as rounding noise (NoiseDifference)."""
    largest = max((d.ref_max for d in diffs), default=0.0)
    return [NoiseDifference(d.name, d.shape, d.max_abs, d.ref_max, NOISE_TOL[dtype], largest)
            if d.name.endswith(ZERO_GRADIENTS) else d for d in diffs]


def compare(reference: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray], tol: float) -> list[Difference]:
    """One Difference per tensor of `reference` (PyTorch); `other` (JAX) must hold the same names and shapes."""
    missing = sorted(set(reference) ^ set(other))
    if missing:
        raise KeyError(f"the twins produced different tensors: {missing}")
    out = []
    for name, ref in reference.items():
        ref, got = np.asarray(ref, np.float64), np.asarray(other[name], np.float64)
        if ref.shape != got.shape:
            out.append(Difference(name, tuple(ref.shape), float("inf"), 1.0, tol))
            continue
        max_abs = float(np.max(np.abs(ref - got))) if ref.size else 0.0
        ref_max = float(np.max(np.abs(ref))) if ref.size else 0.0
        out.append(Difference(name, tuple(ref.shape), max_abs, ref_max, tol))
    return out


def format_table(diffs: list[Difference], title: str) -> str:
    width = max([len(d.name) for d in diffs] + [len("tensor")])
    lines = [title, f"{'tensor':<{width}}  {'shape':<22} {'max abs diff':>13} {'scaled':>10} {'tol':>7}  result"]
    for d in diffs:
        shape = "x".join(map(str, d.shape)) or "scalar"
        lines.append(
            f"{d.name:<{width}}  {shape:<22} {d.max_abs:>13.3e} {d.scaled:>10.2e} {d.tol:>7.0e}  {'ok' if d.ok else 'FAIL'}"
        )
    worst = max(diffs, key=lambda d: d.scaled / d.tol)
    lines.append(f"worst: {worst.name} at {worst.scaled:.2e} (tolerance {worst.tol:.0e})")
    return "\n".join(lines)


def scaled_difference(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max |out - ref|, that divided by max |ref|), as the parity suite scales."""
    max_abs = float(np.abs(out.astype(np.float64) - ref).max()) if out.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return max_abs, (max_abs / scale if scale > 0 else max_abs)


def largest_difference(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> tuple[str, float, float]:
    """(tensor, max |a - b|, that scaled by max |a|) of the tensor whose scaled difference is largest."""
    worst = ("", 0.0, 0.0)
    for name in a:
        diff = float(np.max(np.abs(np.asarray(a[name], np.float64) - np.asarray(b[name], np.float64))))
        scale = float(np.max(np.abs(a[name]))) or 1.0
        if diff / scale >= worst[2]:
            worst = (name, diff, diff / scale)
    return worst


def named_intermediates(inter: Mapping, config: ViTConfig) -> dict[str, np.ndarray]:
    """A twin's intermediates (patch_embed, embed, norm_pre, blocks[i], attn[i], encoded, pooled, pre_logits, the
    distilled heads' logits, logits) as the flat names both twins' tables use; those a config lacks are left out."""
    out = {"patch_embed": inter["patch_embed"], "embed": inter["embed"]}
    if config.pre_norm:
        out["norm_pre"] = inter["norm_pre"]
    for i, (block, attn) in enumerate(zip(inter["blocks"], inter["attn"])):
        out[f"blocks.{i}.attn_probs"] = attn
        out[f"blocks.{i}"] = block
    out["encoded"] = inter["encoded"]
    if config.pool == "map":
        out["attn_pool"] = inter["attn_pool"]
    out["pooled"] = inter["pooled"]
    if config.representation_size:
        out["pre_logits"] = inter["pre_logits"]
    if config.distilled and config.num_classes:
        out["head_logits"] = inter["head_logits"]
        out["head_dist_logits"] = inter["head_dist_logits"]
    out["logits"] = inter["logits"]
    return {k: np.asarray(v) for k, v in out.items()}


def cast(state_dict: Mapping[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """Every tensor in `dtype` ("float32" or "float64")."""
    return {k: np.asarray(v, dtype) for k, v in state_dict.items()}
