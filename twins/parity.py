"""Runs the same weights through both twins and compares them tensor by tensor.

Shared by `vit parity FILE` and the parity_tests suite. Differences are reported as the maximum
absolute difference scaled by the reference's (PyTorch's) maximum magnitude.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from typing import Iterator, Mapping

import numpy as np

from vit_spec import ViTConfig

# Scaled max-abs bounds. float32: Hugging Face's cross-framework bar; float64: any difference is real math.
FORWARD_TOL = {"float32": 1e-5, "float64": 1e-12}
GRAD_TOL = {"float32": 1e-4, "float64": 1e-12}
# Parameters after a few AdamW steps: Adam divides by sqrt(v), which magnifies float32 rounding where a
# gradient is near zero, so float32 gets the gradient bar.
STEP_TOL = {"float32": 1e-4, "float64": 1e-12}


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


@contextlib.contextmanager
def jax_precision(dtype: str) -> Iterator[None]:
    """Exact float32 matmuls (no TF32 on GPUs) and, for float64, jax_enable_x64."""
    import jax

    with contextlib.ExitStack() as stack:
        stack.enter_context(jax.default_matmul_precision("highest"))
        if dtype == "float64":
            stack.enter_context(jax.enable_x64(True))
        yield


def _flatten(inter: Mapping, config: ViTConfig) -> dict[str, np.ndarray]:
    out = {"patch_embed": inter["patch_embed"], "embed": inter["embed"]}
    for i, (block, attn) in enumerate(zip(inter["blocks"], inter["attn"])):
        out[f"blocks.{i}.attn_probs"] = attn
        out[f"blocks.{i}"] = block
    out["encoded"] = inter["encoded"]
    out["pooled"] = inter["pooled"]
    if config.representation_size:
        out["pre_logits"] = inter["pre_logits"]
    out["logits"] = inter["logits"]
    return {k: np.asarray(v) for k, v in out.items()}


def _cast(state_dict: Mapping[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype) for k, v in state_dict.items()}


def _loss_labels(config: ViTConfig, batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 1).integers(0, max(config.num_classes, 1), size=batch)


def jax_forward(config: ViTConfig, state_dict: Mapping[str, np.ndarray], images_nhwc: np.ndarray, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Every compared tensor of the JAX twin: intermediates, and the logits again through fused attention."""
    import jax

    from jax_vit import ViT, params_from_state_dict

    with jax_precision(dtype):
        params = jax.tree.map(jax.numpy.asarray, params_from_state_dict(config, _cast(state_dict, dtype)))
        images = jax.numpy.asarray(images_nhwc, dtype)
        model = ViT(config)
        _, inter = jax.jit(lambda p, x: model.apply({"params": p}, x, return_intermediates=True))(params, images)
        out = _flatten(inter, config)
        out["logits (fused attention)"] = np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, x))(params, images))
    return out


def torch_forward(config: ViTConfig, state_dict: Mapping[str, np.ndarray], images_nhwc: np.ndarray, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Every compared tensor of the PyTorch twin, under the same names as jax_forward's."""
    import torch

    from torch_vit import model_from_state_dict

    model = model_from_state_dict(config, _cast(state_dict, dtype))
    images = torch.from_numpy(np.asarray(images_nhwc, dtype)).permute(0, 3, 1, 2)
    with torch.no_grad():
        _, inter = model(images, return_intermediates=True)
        out = _flatten({k: _to_numpy(v) for k, v in inter.items()}, config)
        out["logits (fused attention)"] = model(images).numpy()
    return out


def _to_numpy(value):
    if isinstance(value, tuple):
        return tuple(_to_numpy(v) for v in value)
    return value.detach().numpy()


def _jax_loss(model, params, images, labels):
    import jax.numpy as jnp
    import optax

    logits = model.apply({"params": params}, images)
    if model.config.num_classes:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return 0.5 * jnp.mean(logits**2)


def _torch_loss(model, images, labels):
    import torch.nn.functional as F

    logits = model(images)
    if model.config.num_classes:
        return F.cross_entropy(logits, labels)
    return 0.5 * (logits**2).mean()


def jax_gradients(config: ViTConfig, state_dict: Mapping[str, np.ndarray], images_nhwc: np.ndarray, labels: np.ndarray, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Gradients of the mean cross-entropy w.r.t. every parameter (timm names) and the input ("input", NHWC)."""
    import jax

    from jax_vit import ViT, params_from_state_dict, state_dict_from_params

    model = ViT(config)
    with jax_precision(dtype):
        params = jax.tree.map(jax.numpy.asarray, params_from_state_dict(config, _cast(state_dict, dtype)))
        images = jax.numpy.asarray(images_nhwc, dtype)
        grad_fn = jax.jit(jax.grad(lambda p, x: _jax_loss(model, p, x, labels), argnums=(0, 1)))
        grad_params, grad_images = grad_fn(params, images)
        grads = state_dict_from_params(config, grad_params)
    if config.pos_embed == "sincos2d":
        del grads["pos_embed"]  # fixed, not a parameter
    grads["input"] = np.asarray(grad_images)
    return grads


def torch_gradients(config: ViTConfig, state_dict: Mapping[str, np.ndarray], images_nhwc: np.ndarray, labels: np.ndarray, dtype: str = "float32") -> dict[str, np.ndarray]:
    """The PyTorch twin's gradients, under the same names and layouts as jax_gradients'."""
    import torch

    from torch_vit import model_from_state_dict

    model = model_from_state_dict(config, _cast(state_dict, dtype))
    images = torch.from_numpy(np.asarray(images_nhwc, dtype)).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    _torch_loss(model, images, torch.from_numpy(labels)).backward()
    grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
    grads["input"] = images.grad.permute(0, 2, 3, 1).numpy()
    return grads


def jax_adamw_steps(config: ViTConfig, state_dict: Mapping[str, np.ndarray], images_nhwc: np.ndarray, labels: np.ndarray, steps: int, lr: float, weight_decay: float, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Parameters after `steps` optax.adamw steps on one batch (timm names)."""
    import jax
    import optax

    from jax_vit import ViT, params_from_state_dict, state_dict_from_params

    model = ViT(config)
    with jax_precision(dtype):
        params = jax.tree.map(jax.numpy.asarray, params_from_state_dict(config, _cast(state_dict, dtype)))
        images = jax.numpy.asarray(images_nhwc, dtype)
        tx = optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay)
        opt_state = tx.init(params)

        @jax.jit
        def step(params, opt_state):
            grads = jax.grad(lambda p: _jax_loss(model, p, images, labels))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        for _ in range(steps):
            params, opt_state = step(params, opt_state)
        return state_dict_from_params(config, params)


def torch_adamw_steps(config: ViTConfig, state_dict: Mapping[str, np.ndarray], images_nhwc: np.ndarray, labels: np.ndarray, steps: int, lr: float, weight_decay: float, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Parameters after `steps` torch.optim.AdamW steps on one batch (timm names)."""
    import torch

    from torch_vit import model_from_state_dict, state_dict_numpy

    model = model_from_state_dict(config, _cast(state_dict, dtype))
    images = torch.from_numpy(np.asarray(images_nhwc, dtype)).permute(0, 3, 1, 2)
    labels_t = torch.from_numpy(labels)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay, foreach=False)
    for _ in range(steps):
        opt.zero_grad()
        _torch_loss(model, images, labels_t).backward()
        opt.step()
    return state_dict_numpy(model)


@dataclasses.dataclass
class ParityReport:
    forward: list[Difference]
    gradients: list[Difference]

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.forward + self.gradients)


def run_parity(config: ViTConfig, state_dict: Mapping[str, np.ndarray], images_nhwc: np.ndarray, dtype: str = "float32", seed: int = 0, gradients: bool = True) -> ParityReport:
    """Forward (and gradient) comparison of the twins on one batch."""
    forward = compare(
        torch_forward(config, state_dict, images_nhwc, dtype), jax_forward(config, state_dict, images_nhwc, dtype), FORWARD_TOL[dtype]
    )
    grads: list[Difference] = []
    if gradients:
        labels = _loss_labels(config, images_nhwc.shape[0], seed)
        grads = compare(
            torch_gradients(config, state_dict, images_nhwc, labels, dtype),
            jax_gradients(config, state_dict, images_nhwc, labels, dtype),
            GRAD_TOL[dtype],
        )
    return ParityReport(forward, grads)


def random_images(config: ViTConfig, batch: int, seed: int = 0) -> np.ndarray:
    """A normalised-looking NHWC float32 batch."""
    h, w = config.image_hw
    return np.random.default_rng(seed).standard_normal((batch, h, w, config.channels)).astype(np.float32)


def read_images(config: ViTConfig, paths: list[str]) -> np.ndarray:
    """Image files as the model sees them (vit_spec.image_files: centre crop, resize, its image_mean / image_std), NHWC float32."""
    from vit_spec.image_files import normalise, read_image

    return normalise(np.stack([read_image(path, config) for path in paths]), config)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "parity",
        help="load one weights file into both twins and compare them layer by layer",
        description="Loads FILE into the JAX and the PyTorch model, runs a batch through both, prints a per-layer "
        "table of differences and exits 1 past tolerance.",
    )
    p.add_argument("file", help="a .safetensors weights file written by this project")
    p.add_argument("--images", nargs="+", metavar="IMAGE", help="image files to run (default: a random batch)")
    p.add_argument("--batch-size", type=int, default=2, help="size of the random batch (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="precision of both twins")
    p.add_argument("--no-gradients", action="store_true", help="compare the forward pass only")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from vit_spec import load_weights

    config, state_dict = load_weights(args.file)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    images = read_images(config, args.images) if args.images else random_images(config, args.batch_size, args.seed)
    report = run_parity(config, state_dict, images, args.dtype, args.seed, gradients=not args.no_gradients)
    print(format_table(report.forward, f"forward, {args.dtype}, batch {images.shape[0]} ({args.file})"))
    if report.gradients:
        print()
        print(format_table(report.gradients, f"gradients of the cross-entropy, {args.dtype}"))
    print()
    print("PASS: the twins agree" if report.ok else "FAIL: the twins differ past tolerance")
    return 0 if report.ok else 1
