"""`vit summary`: both twins' per-layer output shapes and parameter counts in one table (jax_vit.summary,
torch_vit.summary), and whether they agree with each other and with the shared layout's count."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from twins.frameworks import install_hint, installed, twin_module
from vit_spec import ViTConfig, num_params, param_shapes


@dataclasses.dataclass
class Row:
    name: str
    kind: str
    jax_shape: tuple | None = None
    torch_shape: tuple | None = None
    jax_params: int | None = None
    torch_params: int | None = None

    @property
    def agrees(self) -> bool:
        return self.jax_params == self.torch_params


def summarize(config: ViTConfig, depth: int = 2) -> tuple[list[Row], int, int | None]:
    """Rows of both twins up to `depth` dotted levels (blocks.0.attn is 2), and each twin's total.

    Without torch installed, the PyTorch side is left out (its total is None): JAX alone needs no torch.
    """
    jax_summary = twin_module("jax", "summary")
    torch_summary = twin_module("torch", "summary") if installed("torch") else None
    rows = {name: Row(name, kind, jax_shape=shape, jax_params=count)
            for name, (kind, shape, count) in jax_summary.layers(config).items()}
    if torch_summary is not None:
        for name, (kind, shape, count) in torch_summary.layers(config).items():
            row = rows.setdefault(name, Row(name, kind))
            row.kind = kind if row.kind in ("module", kind) else row.kind
            row.torch_shape, row.torch_params = shape, count
    total = rows.pop("(model)")
    if torch_summary is not None:
        # Flax names its parameter-free Dropout modules itself; PyTorch's are left out (torch_vit.summary.SKIPPED).
        rows = {n: r for n, r in rows.items() if not (r.torch_shape is None and r.jax_params == 0)}
        order = {name: i for i, name in enumerate(torch_summary.module_order(config))}
    else:  # the shared layout's order, which is PyTorch's module order; Flax's Dropout_N modules left out as above
        rows = {n: r for n, r in rows.items() if not (n.rsplit(".", 1)[-1].startswith("Dropout") and r.jax_params == 0)}
        params = list(param_shapes(config))
        first = lambda name: next((i for i, p in enumerate(params) if p == name or p.startswith(name + ".")), len(params))
        order = {name: first(name) for name in rows}
    shown = [r for r in rows.values() if r.name.count(".") <= depth]
    shown.sort(key=lambda r: order.get(r.name, len(order)))
    return shown, total.jax_params, total.torch_params


def format_summary(config: ViTConfig, rows: list[Row], jax_total: int, torch_total: int | None, title: str) -> str:
    fmt = lambda s: "x".join(map(str, s)) if s else "-"
    lines = [
        f"{title}: image {config.image_hw[0]}x{config.image_hw[1]}, patch {config.patch_hw[0]}x{config.patch_hw[1]}, "
        f"width {config.width}, depth {config.depth}, heads {config.heads}, mlp {config.mlp_dim}, "
        f"{config.num_classes} classes, pool {config.pool}, pos_embed {config.pos_embed}",
        f"{'layer':<22} {'type':<13} {'output (JAX, NHWC)':<20} {'output (PyTorch, NCHW)':<23} {'params':>12}",
    ]
    for r in rows:
        if r.agrees or torch_total is None:
            params = f"{r.jax_params:,}"
        else:
            params = f"JAX {r.jax_params if r.jax_params is not None else '-'} / PyTorch {r.torch_params if r.torch_params is not None else '-'}"
        lines.append(f"{r.name:<22} {r.kind:<13} {fmt(r.jax_shape):<20} {fmt(r.torch_shape):<23} {params:>12}")
    if torch_total is None:
        lines.append(f"total parameters: {jax_total:,} (JAX); the PyTorch twin is not installed, so it is left out "
                     f"({install_hint('torch')} adds it)")
    else:
        lines.append(f"total parameters: {jax_total:,} (JAX), {torch_total:,} (PyTorch)")
    return "\n".join(lines)


def config_of(model: str, **overrides) -> ViTConfig:
    """The config of a variant name or of a weights file, with `overrides` applied.

    A file is checked as every other command checks it (vit_spec.load_weights: its tensors against its
    recorded config), so that a file the others refuse is not summarised from its metadata alone.
    """
    from vit_spec import load_weights

    if Path(model).suffix == ".safetensors" or Path(model).exists():
        config, _ = load_weights(model)
        return config.replace(**overrides)
    return ViTConfig.from_variant(model, **overrides)


def agree(config: ViTConfig, rows: list[Row], jax_total: int, torch_total: int | None) -> bool:
    """Whether both totals equal the shared layout's count and every row's counts agree (without torch: whether
    JAX's total equals the layout's)."""
    if torch_total is None:
        return jax_total == num_params(config)
    return jax_total == torch_total == num_params(config) and all(r.agrees for r in rows)
