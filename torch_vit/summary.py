"""The PyTorch twin's per-layer table: each module's output shape and parameter count, run on the meta device
(nothing computed). The twin of jax_vit.summary; twins.summary puts the two side by side."""

from __future__ import annotations

import torch

from torch_vit.model import ViT
from vit_spec import ViTConfig

Layer = tuple[str, tuple, int]  # (kind, output shape, parameter count)

# Modules without parameters or a JAX counterpart module: left out of the table.
SKIPPED = ("Dropout", "DropPath", "GELU", "QuickGELU", "SiLU", "Tanh", "Identity", "ModuleList", "Sequential")
# The model's own tensors (not a module's), in timm's order.
TOP_LEVEL = ("cls_token", "reg_token", "pos_embed", "dist_token")


def layers(config: ViTConfig) -> dict[str, Layer]:
    """timm name -> (class name, output shape, parameter count) of every PyTorch module (the whole model as
    "(model)") and top-level parameter ("parameter")."""
    with torch.device("meta"):
        model = ViT(config)
    found: dict[str, Layer] = {}
    hooks = []
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind in SKIPPED:
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
    for key in TOP_LEVEL:
        tensor = getattr(model, key, None)
        if isinstance(tensor, torch.nn.Parameter):
            found[key] = ("parameter", tuple(tensor.shape), tensor.numel())
    return found


def module_order(config: ViTConfig) -> list[str]:
    """Module names in the order the model runs them, the top-level parameters where timm's forward uses them."""
    with torch.device("meta"):
        model = ViT(config)
    names = [n for n, _ in model.named_modules() if n]
    # Parameters go where timm's forward uses them: after the patch embedding (its projection, and norm if any).
    i = max(j for j, n in enumerate(names) if n.startswith("patch_embed.")) + 1
    return names[:i] + [k for k in TOP_LEVEL if isinstance(getattr(model, k, None), torch.nn.Parameter)] + names[i:]
