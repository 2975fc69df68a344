"""big_vision's ViT checkpoints (big_vision/models/vit.py) -> the shared layout (reading only).

Differences from google-research/vision_transformer's layout:
- `pos_embedding` sits at the top of the tree (not under Transformer/posembed_input) and never has a
  [CLS] slot: with pool_type="tok" the token is concatenated after the position embedding, so it has
  no position. The shared layout puts the slot in pos_embed: a zero there computes the same.
- no `pos_embedding` at all means posemb="sincos2d" (fixed): this project's pos_embed="sincos2d" is
  the same table (big_vision's posemb_sincos_2d). The image size is then not recorded anywhere.
- blocks use linen numbering (LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0),
  either one subtree per block or, with scan=True, one stacked `Transformer/encoderblock/` subtree.
- the tree may sit under "params/", "params/img/" (two-tower models), "img/" or "opt/target/".
- `pool_type` is not in the parameters: "tok" when there is a `cls`, "map" when there is a MAPHead_0,
  otherwise big_vision's default "gap" (mean after the final norm), unless given. "map" (attention
  pooling), "0" (the first patch token) and "none" have no counterpart in this project's ViT and
  are refused.
Flax's conventions (tanh GELU, eps 1e-6) and inputs in [-1, 1] are assumed, as for Google's npz.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from vit_spec.formats.checkpoint import Checkpoint, build_config, check_layout, layout_fields
from vit_spec.formats.errors import FormatError, UnsupportedModelError
from vit_spec.formats.flags import CONVERT_FLAGS, Flags
from vit_spec.layout import sincos_2d
from vit_spec.formats.google_npz import (
    LINEN,
    FlaxTree,
    block_from_flax,
    embedding_from_flax,
    find_prefix,
    grid_of,
    head_from_flax,
    heads_of,
    refuse_hybrid,
)

PREFIXES = ("params/img/", "params/", "opt/target/", "img/", "")
BIG_VISION_CONVENTIONS = {
    "gelu": ("tanh", "not recorded in a big_vision checkpoint; big_vision's MlpBlock uses Flax's nn.gelu, the tanh approximation"),
    "layer_norm_eps": (1e-6, "not recorded in a big_vision checkpoint; Flax's LayerNorm default, which big_vision uses"),
    "image_mean": ((0.5, 0.5, 0.5), "not recorded in a big_vision checkpoint; big_vision's configs scale pixels to [-1, 1]"),
    "image_std": ((0.5, 0.5, 0.5), "not recorded in a big_vision checkpoint; big_vision's configs scale pixels to [-1, 1]"),
}
POOL_TYPES = ("gap", "tok", "map", "0", "none")
_SCANNED = "Transformer/encoderblock/"


def is_big_vision(arrays: Mapping[str, np.ndarray]) -> bool:
    prefix = find_prefix(arrays, PREFIXES)
    if prefix is None:
        return False
    return (
        prefix.startswith("params/")
        or prefix + "pos_embedding" in arrays
        or prefix + _SCANNED + "LayerNorm_0/scale" in arrays
        or (prefix + "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel" in arrays
            and prefix + "Transformer/posembed_input/pos_embedding" not in arrays)
    )


def from_big_vision(
    arrays: Mapping[str, np.ndarray],
    source: str,
    *,
    pool_type: str | None = None,
    source_image_size: int | tuple[int, int] | None = None,
    sincos_image_size: int | tuple[int, int] | None = None,
    flags: Flags = CONVERT_FLAGS,
) -> Checkpoint:
    """A big_vision ViT parameter tree (flat "/" keys) -> Checkpoint.

    Args:
        pool_type: big_vision's pool_type, when the file's own evidence is not to be trusted (see above).
        source_image_size: the image size it was trained at; needed for a non-square learned grid, and
            used for a sincos2d checkpoint, whose grid no parameter records.
        sincos_image_size: the size to build a sincos2d checkpoint at when source_image_size is not given
            (the fixed table fits any size; read_checkpoint passes the requested image size).
        flags: the calling command's flag names, for the messages.
    """
    refuse_hybrid(arrays, source)
    prefix = find_prefix(arrays, PREFIXES)
    if prefix is None:
        raise FormatError(f"{source} is not a big_vision ViT: no embedding/kernel under any of {PREFIXES}")
    tree = FlaxTree(arrays, prefix, source)
    notes = [f"read the tree under {prefix!r}"] if prefix else []
    assumed: dict[str, str] = {}

    has_cls, has_map = tree.has("cls"), any(k.startswith(prefix + "MAPHead_0/") for k in arrays)
    evidence = "tok" if has_cls else "map" if has_map else None
    if pool_type is None:
        pool_type = evidence or "gap"
        if evidence is None:
            notes.append("pool_type is not recorded in the parameters: big_vision's default 'gap' (mean pooling) was assumed")
    if pool_type not in POOL_TYPES:
        raise FormatError(f"unknown big_vision pool_type {pool_type!r}: one of {POOL_TYPES}")
    if pool_type == "map" or has_map:
        raise UnsupportedModelError(
            f"{source} pools with a MAPHead (pool_type='map', attention pooling with a learned probe); this project's "
            "ViT has no attention-pooling head, so it cannot compute this model"
        )
    if pool_type in ("0", "none"):
        raise UnsupportedModelError(
            f"big_vision pool_type={pool_type!r} ({'the first patch token' if pool_type == '0' else 'no pooling'}) has "
            "no counterpart in this project's ViT (pool 'cls' or 'mean')"
        )
    if (pool_type == "tok") != has_cls:
        raise FormatError(
            f"pool_type={pool_type!r} {'needs' if pool_type == 'tok' else 'has no'} a cls parameter, but {source} "
            f"{'has one' if has_cls else 'has none'}"
        )

    sd: dict[str, np.ndarray] = {}
    if has_cls:
        sd["cls_token"] = tree.take("cls", 3)
    sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"] = embedding_from_flax(tree)
    width, channels, ph, pw = sd["patch_embed.proj.weight"].shape

    scanned = tree.has(_SCANNED + "LayerNorm_0/scale")
    if scanned:
        depth = int(arrays[prefix + _SCANNED + "LayerNorm_0/scale"].shape[0])
        heads = heads_of(tree, _SCANNED, LINEN, scanned=True)
        blocks = [block_from_flax(tree, _SCANNED, LINEN, index=i) for i in range(depth)]
        notes.append(f"unstacked the scanned encoder ({depth} blocks)")
    else:
        depth = 0
        while tree.has(f"Transformer/encoderblock_{depth}/LayerNorm_0/scale"):
            depth += 1
        if depth == 0:
            raise FormatError(f"{source} has no Transformer/encoderblock_0/ or {_SCANNED}; found {list(arrays)[:6]}")
        heads = heads_of(tree, "Transformer/encoderblock_0/", LINEN)
        blocks = [block_from_flax(tree, f"Transformer/encoderblock_{i}/", LINEN) for i in range(depth)]
    for i, block in enumerate(blocks):
        sd.update({f"blocks.{i}.{k}": v for k, v in block.items()})
    sd["norm.weight"], sd["norm.bias"] = tree.take("Transformer/encoder_norm/scale", 1), tree.take("Transformer/encoder_norm/bias", 1)
    head_from_flax(tree, sd)

    if tree.has("pos_embedding"):
        posemb = tree.take("pos_embedding", 3)
        grid = grid_of(posemb.shape[1], (ph, pw), source_image_size, f"{source}: pos_embedding", flags, source)
        if has_cls:
            posemb = np.concatenate([np.zeros((1, 1, width), posemb.dtype), posemb], axis=1)
            notes.append("big_vision adds no position to the [CLS] token; a zero slot was added to pos_embed, which computes the same")
        sd["pos_embed"] = posemb
        pos_kind = "learned"
    else:
        image_size = source_image_size or sincos_image_size
        if image_size is None:
            raise FormatError(
                f"{source} has no pos_embedding, so it uses big_vision's fixed sincos2d table and records no image size; "
                + (f"give one ({flags.image_size})" if flags.image_size
                   else flags.convert_first(source, "--image-size HxW", "--image-size"))
            )
        grid = _grid(image_size, (ph, pw))
        pos_kind = "sincos2d"
        notes.append(
            f"no pos_embedding: big_vision's fixed 2-D sin-cos table (pos_embed='sincos2d'), built for image size "
            f"{image_size}{'' if source_image_size else ' (the requested size: the table fits any)'}"
        )
    left = tree.leftover()
    if left:
        raise UnsupportedModelError(
            f"{source} holds parameters a plain big_vision ViT does not: {left[:5]}{' and more' if len(left) > 5 else ''}"
        )
    fields: dict[str, Any] = dict(layout_fields(sd, grid, depth, heads), pos_embed=pos_kind)
    for name, (value, why) in BIG_VISION_CONVENTIONS.items():
        fields[name] = value
        assumed[name] = why
    config = build_config(fields, source)
    if pos_kind == "sincos2d":
        sd["pos_embed"] = sincos_2d(config).astype(sd["patch_embed.proj.weight"].dtype)
    check_layout(config, sd, source)
    return Checkpoint(config, sd, "big_vision", assumed, notes)


def _grid(image_size: int | tuple[int, int], patch: tuple[int, int]) -> tuple[int, int]:
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if h % patch[0] or w % patch[1]:
        raise FormatError(f"image size {image_size} is not a multiple of the patch size {patch}")
    return h // patch[0], w // patch[1]
