"""`vit summary VARIANT|FILE`: per-layer output shapes and parameter counts, from both twins.

Nothing is computed: JAX traces with jax.eval_shape and PyTorch runs on the meta device, so even
ViT-H/14 is summarised in seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from vit_spec import ViTConfig, num_params

# PyTorch modules without parameters or a JAX counterpart module: left out of the table.
_TORCH_SKIPPED = ("Dropout", "DropPath", "GELU", "Tanh", "Identity", "ModuleList", "Sequential")


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


def _timm_name(flax_path: tuple[str, ...]) -> str:
    parts = []
    for p in flax_path:
        parts += p.split("_", 1) if p.startswith("blocks_") else [p]
    name = ".".join(parts)
    return "pre_logits.fc" if name == "pre_logits" else name


def _count(tree) -> int:
    import jax
    import numpy as np

    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def jax_rows(config: ViTConfig) -> dict[str, Row]:
    """Output shape and parameter count of every Flax module (and top-level parameter)."""
    import jax
    import jax.numpy as jnp

    from jax_vit import ViT

    h, w = config.image_hw
    images = jax.ShapeDtypeStruct((1, h, w, config.channels), jnp.float32)
    model = ViT(config)
    params = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
    _, state = jax.eval_shape(
        lambda p, x: model.apply({"params": p}, x, capture_intermediates=True, mutable=["intermediates"]), params, images
    )
    rows: dict[str, Row] = {}

    def walk(captured: dict, param_tree: dict, path: tuple[str, ...]) -> None:
        for key, value in captured.items():
            if key == "__call__":
                continue
            sub_params = param_tree.get(key, {})
            out = jax.tree.leaves(value.get("__call__", ()))
            name = _timm_name(path + (key,))
            rows[name] = Row(name, "module", jax_shape=tuple(out[0].shape) if out else None, jax_params=_count(sub_params))
            walk(value, sub_params, path + (key,))

    walk(state["intermediates"], params, ())
    for key in ("cls_token", "pos_embed"):
        if key in params:
            rows[key] = Row(key, "parameter", jax_shape=tuple(params[key].shape), jax_params=_count(params[key]))
    rows["(model)"] = Row("(model)", "ViT", jax_shape=(1, config.num_classes or config.features_dim), jax_params=_count(params))
    return rows


def torch_rows(config: ViTConfig) -> dict[str, tuple[str, tuple, int]]:
    """name -> (class name, output shape, parameter count) of every PyTorch module, on the meta device."""
    import torch

    from torch_vit import ViT

    with torch.device("meta"):
        model = ViT(config)
    found: dict[str, tuple[str, tuple, int]] = {}
    hooks = []
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind in _TORCH_SKIPPED:
            continue

        def hook(mod, args, out, name=name or "(model)", kind=kind):
            out = out[0] if isinstance(out, tuple) else out
            found[name] = (kind, tuple(out.shape), sum(p.numel() for p in mod.parameters()))

        hooks.append(module.register_forward_hook(hook))
    h, w = config.image_hw
    with torch.no_grad():
        model(torch.empty(1, config.channels, h, w, device="meta"))
    for hook in hooks:
        hook.remove()
    for key in ("cls_token", "pos_embed"):
        tensor = getattr(model, key, None)
        if isinstance(tensor, torch.nn.Parameter):
            found[key] = ("parameter", tuple(tensor.shape), tensor.numel())
    return found


def summarize(config: ViTConfig, depth: int = 2) -> tuple[list[Row], int, int]:
    """Rows of both twins up to `depth` dotted levels (blocks.0.attn is 2), and each twin's total."""
    rows = jax_rows(config)
    for name, (kind, shape, count) in torch_rows(config).items():
        row = rows.setdefault(name, Row(name, kind))
        row.kind = kind if row.kind in ("module", kind) else row.kind
        row.torch_shape, row.torch_params = shape, count
    total = rows.pop("(model)")
    # Flax names its parameter-free Dropout modules itself; PyTorch's are left out above.
    rows = {n: r for n, r in rows.items() if not (r.torch_shape is None and r.jax_params == 0)}
    order = {name: i for i, name in enumerate(_torch_order(config))}
    shown = [r for r in rows.values() if _level(r.name) <= depth]
    shown.sort(key=lambda r: order.get(r.name, len(order)))
    return shown, total.jax_params, total.torch_params


def _level(name: str) -> int:
    return name.count(".")


def _torch_order(config: ViTConfig) -> list[str]:
    import torch

    from torch_vit import ViT

    with torch.device("meta"):
        model = ViT(config)
    names = [n for n, _ in model.named_modules() if n]
    # Parameters go where timm's forward uses them: after the patch embedding.
    i = names.index("patch_embed.proj") + 1
    return names[:i] + ["cls_token", "pos_embed"] + names[i:]


def format_summary(config: ViTConfig, rows: list[Row], jax_total: int, torch_total: int, title: str) -> str:
    fmt = lambda s: "x".join(map(str, s)) if s else "-"
    lines = [
        f"{title}: image {config.image_hw[0]}x{config.image_hw[1]}, patch {config.patch_hw[0]}x{config.patch_hw[1]}, "
        f"width {config.width}, depth {config.depth}, heads {config.heads}, mlp {config.mlp_dim}, "
        f"{config.num_classes} classes, pool {config.pool}, pos_embed {config.pos_embed}",
        f"{'layer':<22} {'type':<13} {'output (JAX, NHWC)':<20} {'output (PyTorch, NCHW)':<23} {'params':>12}",
    ]
    for r in rows:
        if r.agrees:
            params = f"{r.jax_params:,}"
        else:
            params = f"JAX {r.jax_params if r.jax_params is not None else '-'} / PyTorch {r.torch_params if r.torch_params is not None else '-'}"
        lines.append(f"{r.name:<22} {r.kind:<13} {fmt(r.jax_shape):<20} {fmt(r.torch_shape):<23} {params:>12}")
    lines.append(f"total parameters: {jax_total:,} (JAX), {torch_total:,} (PyTorch)")
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "summary",
        help="per-layer parameter and shape table of a variant or weights file, from both twins",
        description="Prints each layer's output shape and parameter count as the JAX and the PyTorch model see "
        "them, and the totals; exits 1 if the twins disagree.",
    )
    p.add_argument("model", help="a variant (tutorial, Ti/16, S/16, B/16, L/16, H/14, ...) or a .safetensors weights file")
    p.add_argument("--depth", type=int, default=2, help="how deep to list modules (blocks.0.attn is 2; default 2)")
    p.add_argument("--num-classes", type=int, help="override the variant's number of classes")
    p.add_argument("--image-size", type=int, help="override the variant's image size")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from vit_spec import read_metadata
    from vit_spec.layout import WeightsError

    overrides = {k: v for k, v in (("num_classes", args.num_classes), ("image_size", args.image_size)) if v is not None}
    if Path(args.model).suffix == ".safetensors" or Path(args.model).is_file():
        metadata = read_metadata(args.model)
        if "vit_config" not in metadata:
            raise WeightsError(f"{args.model} holds no ViT config: convert it first with `vit convert`")
        config = ViTConfig.from_json(metadata["vit_config"]).replace(**overrides)
    else:
        config = ViTConfig.from_variant(args.model, **overrides)
    rows, jax_total, torch_total = summarize(config, args.depth)
    print(format_summary(config, rows, jax_total, torch_total, f"ViT {args.model}"))
    expected = num_params(config)
    if not (jax_total == torch_total == expected) or not all(r.agrees for r in rows):
        print(f"FAIL: the twins disagree (the shared layout counts {expected:,})")
        return 1
    return 0
