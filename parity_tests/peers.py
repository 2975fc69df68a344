"""What the tests against the peers (timm, transformers, Google's code) share: perturbed peer models,
our two models' logits on a converted file, and the "peer-diff" report lines.

Print them with: pytest parity_tests -k peers -s | grep peer-diff
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import torch

import jax_vit
import torch_vit
from vit_cli.main import main
from vit_spec import ViTConfig

# Scaled max-abs difference of logits against a peer, float32.
TOL = 1e-5


def unfused(model: torch.nn.Module) -> torch.nn.Module:
    """timm's attention computed step by step, not by F.scaled_dot_product_attention; eval mode."""
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return model.eval()


def perturb(model: torch.nn.Module, seed: int, scale: float = 0.1) -> torch.nn.Module:
    """Every parameter moved off its init, so no zero bias or unit scale hides a mistake; fused attention off."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return unfused(model)


def images_nchw(hw: tuple[int, int], seed: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, *hw)).astype(np.float32)


def our_logits(path, images_nchw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(JAX, PyTorch) outputs of our models loaded from `path`, on NCHW images."""
    config, params = jax_vit.load(path)
    with jax.default_matmul_precision("highest"):
        out_jax = np.asarray(jax_vit.ViT(config).apply({"params": params}, images_nchw.transpose(0, 2, 3, 1)))
    with torch.no_grad():
        out_torch = torch_vit.load(path)(torch.from_numpy(images_nchw)).numpy()
    return out_jax, out_torch


def scaled_diff(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def report(what: str, tol: float = TOL, **diffs: float) -> None:
    print("peer-diff | " + what + " | " + " | ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    for k, v in diffs.items():
        assert v <= tol, f"{what}: {k} differs by {v:.2e} (scaled) > {tol}"


def convert(*args) -> None:
    """`vit convert ARGS`, which must succeed."""
    rc = main(["convert", *map(str, args)])
    assert rc == 0, f"vit convert {' '.join(map(str, args))} failed"


def timm_kwargs(config: ViTConfig) -> dict[str, Any]:
    """timm's keyword arguments for `config` as objects (vit_spec.formats.timm.timm_constructor's, evaluated)."""
    from vit_spec.formats.timm import timm_constructor

    _, kw, imports = timm_constructor(config)
    namespace: dict[str, Any] = {}
    exec("\n".join(imports), namespace)  # noqa: S102 (our own import lines)
    return {name: eval(source, namespace) for name, source in kw}  # noqa: S307 (our own literals)


def timm_class(config: ViTConfig) -> Any:
    """timm's VisionTransformer, or VisionTransformerDistilled (needs timm)."""
    if config.distilled:
        from timm.models.deit import VisionTransformerDistilled

        return VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer
