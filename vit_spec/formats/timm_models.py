"""timm's models themselves: the ViTConfig of a timm `VisionTransformer` / `VisionTransformerDistilled` module,
or the reason the twins cannot compute it, and timm names built on the meta device (shapes only: no weights, no
download).

What a timm state dict does not record (heads, activation and GELU form, norm epsilon, whether a packed GLU is
SwiGLU or GeGLU, which pooling, image size, input normalisation) a timm name does: `--variant NAME` builds NAME
here and reads it off the modules. timm (and with it torch) is imported when a name is built, never at import:
like reading a .pth pickle (tensor_files), reading a timm name is the converter's one use of a framework.
"""

from __future__ import annotations

import functools
from typing import Any

from vit_spec.formats.errors import FormatError, UnsupportedModelError

_POOL = {"token": "cls", "avg": "mean", "map": "map", "": "none"}


def timm_missing_message(name: str) -> str:
    return (f"{name!r} is a timm model name other than the plain ViT's (vit_<size>_patch<P>_<image>): reading it needs "
            "timm, which is not installed (pip install timm)")


@functools.lru_cache(maxsize=256)
def meta_model(name: str) -> Any:
    """timm.create_model(name, pretrained=False) on the meta device: shapes and modules, no weights (cached)."""
    try:
        import timm  # (and so torch): only here, when a timm name is to be read
    except ImportError:
        raise FormatError(timm_missing_message(name)) from None
    arch = name.split(".")[0]
    if not timm.is_model(arch):
        raise FormatError(f"{name!r} is neither this project's variant nor a timm model name (timm.list_models())")
    return timm.create_model(name, pretrained=False, device="meta")


def _unsupported(name: str, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"timm's {name} {why}; this project's ViT cannot compute that")


def _activation(act: Any, name: str) -> tuple[str, str]:
    """(activation, gelu) of a timm activation module."""
    kind = type(act).__name__
    if kind == "GELU":  # torch's nn.GELU or timm's GELU
        return "gelu", "tanh" if getattr(act, "approximate", "none") == "tanh" else "exact"
    if kind == "GELUTanh":
        return "gelu", "tanh"
    if kind == "QuickGELU":
        return "quick_gelu", "exact"
    if kind in ("SiLU", "Swish"):
        return "silu", "exact"
    raise _unsupported(name, f"uses the activation {kind}")


def _norm(module: Any, name: str, where: str) -> tuple[str, float]:
    """("layer" or "rms", eps) of a timm norm module."""
    kind = type(module).__name__
    if kind in ("LayerNorm", "LayerNormFp32"):
        if module.weight is None or module.bias is None:
            raise _unsupported(name, f"has a LayerNorm without {'scale' if module.weight is None else 'bias'} ({where})")
        return "layer", float(module.eps)
    if kind in ("RmsNorm", "RMSNorm", "RmsNormFp32"):
        if getattr(module, "weight", None) is None:
            raise _unsupported(name, f"has an RMSNorm without scale ({where})")
        eps = module.eps if module.eps is not None else 1e-6
        return "rms", float(eps)
    raise _unsupported(name, f"uses the norm {kind} ({where})")


def _is_identity(module: Any) -> bool:
    return module is None or type(module).__name__ == "Identity"


def model_fields(model: Any, name: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """(ViTConfig fields, notes) of a timm VisionTransformer module; UnsupportedModelError naming the missing
    feature where the twins cannot compute it."""
    name = name or type(model).__name__
    cls = type(model).__name__
    if cls not in ("VisionTransformer", "VisionTransformerDistilled"):
        raise _unsupported(name, f"is a {cls}, not a VisionTransformer")
    notes: list[str] = []
    embed = model.patch_embed
    if type(embed).__name__ != "PatchEmbed":
        backbone = getattr(embed, "backbone", None)
        stem = f" (a {type(backbone).__name__} stem)" if backbone is not None else ""
        raise _unsupported(name, f"embeds patches with {type(embed).__name__}{stem}, a CNN before the patch projection")
    if model.pos_embed is None:
        raise _unsupported(name, "has no position embedding (pos_embed='none')")
    block = model.blocks[0]
    if type(block).__name__ != "Block":
        what = {"ParallelScalingBlock": "parallel attention and MLP blocks",
                "ParallelThingsBlock": "parallel attention and MLP blocks",
                "DiffParallelScalingBlock": "parallel blocks with differential attention",
                "ResPostBlock": "post-norm blocks"}.get(type(block).__name__, "blocks")
        raise _unsupported(name, f"has {what} ({type(block).__name__})")
    attn = block.attn
    if type(attn).__name__ != "Attention":
        raise _unsupported(name, f"has {type(attn).__name__} attention")
    pool = model.global_pool
    if pool not in _POOL:
        raise _unsupported(name, f"pools with global_pool={pool!r}")
    norm, eps = _norm(block.norm1, name, "blocks")
    # The norms of the features timm builds with norm_layer (or, for the patch embeddings, embed_norm_layer): the
    # twins build them as the blocks' norm.
    for module, where in ((getattr(embed, "norm", None), "the patch embeddings (embed_norm_layer)"),
                          (getattr(attn, "norm", None), "the attention output (scale_attn_norm)")):
        if not _is_identity(module) and _norm(module, name, where) != (norm, eps):
            kind, other = _norm(module, name, where)
            raise _unsupported(name, f"norms {where} with {kind} norm eps {other}, its blocks with {norm} norm eps {eps}")
    proj_bias = attn.proj.bias is not None
    activation, gelu = _activation(getattr(block.mlp, "act", None), name)
    mlp = block.mlp
    kind = type(mlp).__name__
    if kind == "Mlp":
        mlp_kind = "plain"
    elif kind == "GluMlp" and not mlp.gate_last and activation == "silu":
        mlp_kind = "swiglu_packed"
    elif kind == "GluMlp" and mlp.gate_last and activation == "gelu":
        mlp_kind = "geglu"
    elif kind == "SwiGLU" and activation == "silu":
        mlp_kind = "swiglu"
    else:
        gate = f", gate_last={mlp.gate_last}" if hasattr(mlp, "gate_last") else ""
        raise _unsupported(name, f"has a {kind} MLP with {activation}{gate}")
    fcs = [mlp.fc1_g, mlp.fc1_x, mlp.fc2] if mlp_kind == "swiglu" else [mlp.fc1, mlp.fc2]
    if any((fc.bias is not None) != proj_bias for fc in fcs):
        raise _unsupported(name, f"has MLP layers {'without' if proj_bias else 'with'} bias but an attention projection "
                                 f"{'with' if proj_bias else 'without'} (proj_bias)")
    if model.attn_pool is not None:
        ap = model.attn_pool
        if (type(ap).__name__ != "AttentionPoolLatent" or ap.latent_len != 1 or getattr(ap, "pos_embed", None) is not None
                or not _is_identity(ap.q_norm) or _is_identity(ap.q) or ap.mlp is None or ap.q.bias is None):
            raise _unsupported(name, f"pools with an attention pool other than VisionTransformer's MAP head ({type(ap).__name__})")
    final_norm = "pooled" if not _is_identity(model.fc_norm) else "tokens" if not _is_identity(model.norm) else "none"
    distilled = cls == "VisionTransformerDistilled"
    ls = getattr(block, "ls1", None)
    layer_scale = None if _is_identity(ls) else float(getattr(ls, "init_values", 1e-5) or 1e-5)
    image, patch = tuple(embed.img_size), tuple(embed.patch_size)
    if image[0] % patch[0] or image[1] % patch[1]:  # timm's stride-patch conv drops the remainder
        grid = tuple(embed.grid_size)
        cropped = (grid[0] * patch[0], grid[1] * patch[1])
        notes.append(f"timm's {name} takes {image[0]}x{image[1]} images but its {patch[0]}-px patches cover "
                     f"{cropped[0]}x{cropped[1]} of them (the rest is dropped): the image size here is {cropped[0]}x"
                     f"{cropped[1]}, the top-left crop it computes on")
        image = cropped
    cfg = getattr(model, "pretrained_cfg", None) or {}
    fields: dict[str, Any] = dict(
        image_size=image[0] if image[0] == image[1] else image,
        patch_size=patch[0] if patch[0] == patch[1] else patch,
        channels=int(embed.proj.in_channels),
        num_classes=int(model.num_classes),
        width=int(model.embed_dim),
        depth=len(model.blocks),
        heads=int(attn.num_heads),
        mlp_dim=int(mlp.fc2.in_features),
        qkv_bias=attn.qkv.bias is not None,
        pool=_POOL[pool],
        layer_norm_eps=eps,
        gelu=gelu,
        layer_scale_init=layer_scale,
        class_token=model.cls_token is not None,
        reg_tokens=int(model.num_reg_tokens),
        pos_embed_covers_prefix=not model.no_embed_class,
        final_norm=final_norm,
        pre_norm=not _is_identity(model.norm_pre),
        patch_bias=embed.proj.bias is not None,
        activation=activation,
        mlp=mlp_kind,
        mlp_norm=not _is_identity(getattr(mlp, "norm", None)),
        norm=norm,
        qk_norm=not _is_identity(attn.q_norm),
        distilled=distilled,
        patch_norm=not _is_identity(getattr(embed, "norm", None)),
        attn_norm=not _is_identity(getattr(attn, "norm", None)),
        proj_bias=proj_bias,
        # timm's flag counts only where mean/MAP pooling has prefix tokens to include
        pool_include_prefix=bool(model.pool_include_prefix and model.num_prefix_tokens and _POOL[pool] in ("mean", "map")),
    )
    if "mean" in cfg and "std" in cfg:
        fields["image_mean"] = tuple(float(v) for v in cfg["mean"])
        fields["image_std"] = tuple(float(v) for v in cfg["std"])
    if model.dynamic_img_size:
        notes.append(f"timm's {name} resamples its position table for other input sizes (dynamic_img_size); at its "
                     "image size it computes the same")
    return fields, notes


def name_fields(name: str) -> tuple[dict[str, Any], list[str]]:
    """model_fields of the timm model `name` (a tag picks its image size and normalisation), built on the meta device."""
    return model_fields(meta_model(name), name)
