"""`--variant`: what a named model says about a checkpoint that does not record its own config.

Three kinds of names are understood:

- this project's variants, "Ti/16", "S/16", "B/32", ... (big_vision's table, ViTConfig.from_variant): sizes only;
- timm's plain ViT names, `vit_<size>_patch<P>_<image>[.<pretrained tag>]`, e.g. "vit_small_patch16_224"
  or "vit_base_patch16_224.augreg_in21k", from a table here (no timm needed). Their architecture is timm's
  defaults (LayerNorm eps 1e-6, exact GELU, [CLS] token, ...); the input normalisation is that of the pretrained
  tag (timm's pretrained_cfg: (0.5, 0.5, 0.5) for Google's augreg/orig/sam weights, ImageNet's mean/std for
  dino/mae);
- any other timm name ("vit_small_patch14_reg4_dinov2.lvd142m", "deit3_base_patch16_224", ...): timm builds the
  model on the meta device (vit_spec.formats.timm_models) and every field is read off its modules and pretrained_cfg;
  a model the twins cannot compute is refused with the reason.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from vit_spec.config import ConfigError, ViTConfig
from vit_spec.formats.errors import FormatError
from vit_spec.formats.flags import CONVERT_FLAGS, Flags

IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # [0, 1] -> [-1, 1], Google's convention
CLIP_MEAN_STD = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))

# timm's vision_transformer.py model functions: (embed_dim, depth, num_heads, mlp hidden dim).
TIMM_SIZES = {
    "tiny": (192, 12, 3, 768),
    "small": (384, 12, 6, 1536),
    "medium": (512, 12, 8, 2048),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
    "huge": (1280, 32, 16, 5120),
    "giant": (1408, 40, 16, 6144),  # mlp_ratio 48/11
}
# The first word of a pretrained tag -> its normalisation (timm's default_cfgs for these models).
TIMM_TAG_NORMALISATION = {
    "augreg": INCEPTION_MEAN_STD,
    "augreg2": INCEPTION_MEAN_STD,
    "orig": INCEPTION_MEAN_STD,
    "sam": INCEPTION_MEAN_STD,
    "untrained": INCEPTION_MEAN_STD,
    "dino": IMAGENET_MEAN_STD,
    "mae": IMAGENET_MEAN_STD,
    "bamboo": CLIP_MEAN_STD,
}
# Models whose default (first) pretrained tag is not Google's.
TIMM_DEFAULT_TAG = {"vit_small_patch8_224": "dino"}

_TIMM_NAME = re.compile(r"(vit_(" + "|".join(TIMM_SIZES) + r")_patch(\d+)_(\d+))(?:\.(\w+))?")


@dataclasses.dataclass(frozen=True)
class Variant:
    """ViTConfig fields a name fixes; `fields` holds only what the name determines."""

    name: str
    fields: dict[str, Any]
    source: str  # "this project's variant table", "timm's model name" or "timm's model, built on the meta device"
    notes: tuple[str, ...] = ()


def resolve_variant(name: str, flags: Flags = CONVERT_FLAGS, source: str = "FILE") -> Variant:
    """The fields a variant name fixes; FormatError if the name is not understood.

    `flags`: the calling command's flag names, for the messages; `source`: the checkpoint's path, for them too.
    """
    if _TIMM_NAME.fullmatch(name):
        return _timm_variant(name, flags, source)
    if name and "/" not in name and name != "tutorial":
        return _timm_model_variant(name, flags)
    try:
        config = ViTConfig.from_variant(name)
    except ConfigError as e:
        raise FormatError(f"{flags.variant}: {e}; or a timm name such as vit_small_patch16_224") from None
    keys = ("patch_size", "width", "depth", "heads", "mlp_dim")
    if name == "tutorial":
        keys += ("image_size",)
    return Variant(name, {k: getattr(config, k) for k in keys}, "this project's variant table")


def at_image_size(name: str, image_size: int) -> str | None:
    """`name` with another (square) image size, where the name fixes one and can say another: a timm name
    (vit_small_patch16_224 -> vit_small_patch16_64, its tag kept); None otherwise."""
    match = _TIMM_NAME.fullmatch(name)
    if not match:
        return None
    model, size, patch, _, tag = match.groups()
    tag = tag or TIMM_DEFAULT_TAG.get(model)  # the default tag is the name's: it keeps its normalisation
    return f"vit_{size}_patch{patch}_{image_size}" + (f".{tag}" if tag else "")


def _timm_variant(name: str, flags: Flags, source: str) -> Variant:
    match = _TIMM_NAME.fullmatch(name)
    assert match
    model, size, patch, image, tag = match.groups()
    tag = tag or TIMM_DEFAULT_TAG.get(model, "augreg")
    first = tag.split("_")[0]
    if first not in TIMM_TAG_NORMALISATION:
        known = f"known tags start with {sorted(TIMM_TAG_NORMALISATION)}"
        if flags.image_mean_std:
            fix = f"{known}, or give {flags.image_mean_std} with the tag left off ({flags.variant} {model})"
        else:
            args = f"--variant {model} --image-mean R,G,B --image-std R,G,B"
            fix = f"{known}, or {flags.convert_first(source, args, '--image-mean/--image-std')}"
        raise FormatError(
            f"{flags.variant} {name!r}: unknown pretrained tag {tag!r}, so its input normalisation is unknown; {fix}"
        )
    width, depth, heads, mlp_dim = TIMM_SIZES[size]
    mean, std = TIMM_TAG_NORMALISATION[first]
    fields = dict(
        image_size=int(image), patch_size=int(patch), width=width, depth=depth, heads=heads, mlp_dim=mlp_dim,
        gelu="exact", layer_norm_eps=1e-6, image_mean=mean, image_std=std,
    )
    fields.update(STANDARD_FEATURES)
    return Variant(name, fields, "timm's model name")


# What timm's plain ViT names build besides their sizes: the standard ViT of this project's defaults.
STANDARD_FEATURES: dict[str, Any] = dict(
    qkv_bias=True, pool="cls", layer_scale_init=None, class_token=True, reg_tokens=0, pos_embed_covers_prefix=True,
    final_norm="tokens", pre_norm=False, patch_bias=True, activation="gelu", mlp="plain", mlp_norm=False, norm="layer",
    qk_norm=False, distilled=False, patch_norm=False, attn_norm=False, proj_bias=True, pool_include_prefix=False,
)


def _timm_model_variant(name: str, flags: Flags) -> Variant:
    """Any other timm name: the model built on the meta device, its fields read off the modules."""
    from vit_spec.formats.errors import UnsupportedModelError
    from vit_spec.formats.timm_models import name_fields

    try:
        fields, notes = name_fields(name)
    except UnsupportedModelError as e:
        raise UnsupportedModelError(f"{flags.variant} {name}: {e}") from None
    except FormatError as e:
        raise FormatError(f"{flags.variant}: {e}; or this project's variant (S/16, B/16, ...)") from None
    return Variant(name, fields, "timm's model, built on the meta device", tuple(notes))
