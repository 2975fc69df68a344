"""big_vision's ViT checkpoints (big_vision/models/vit.py) <-> the shared layout, SigLIP's image tower included.

Differences from google-research/vision_transformer's layout:
- `pos_embedding` sits at the top of the tree (not under Transformer/posembed_input) and never has a
  [CLS] slot: with pool_type="tok" the token is concatenated after the position embedding, so it has
  no position. The shared layout puts the slot in pos_embed: a zero there computes the same.
- no `pos_embedding` at all means posemb="sincos2d" (fixed): this project's pos_embed="sincos2d" is
  the same table (big_vision's posemb_sincos_2d). The image size is then not recorded anywhere.
- blocks use linen numbering (LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0),
  either one subtree per block or, with scan=True, one stacked `Transformer/encoderblock/` subtree.
- the tree may sit under "params/", "params/img/" (two-tower models: SigLIP, LiT), "img/" or "opt/target/";
  what lies outside it (a two-tower model's text tower params/txt/..., its temperature and bias params/t,
  params/b) is left out, and named.
- `pool_type` is not in the parameters: "tok" when there is a `cls`, "map" when there is a MAPHead_0,
  otherwise big_vision's default "gap" (mean after the final norm), unless given. "0" (the first patch
  token) and "none" have no counterpart in this project's ViT and are refused.
- "map" is MAPHead (SigLIP's image tower): a learned `probe` query attends over the normed tokens
  (MultiHeadDotProductAttention_0: q from the probe, k and v from the tokens, Flax's (D, heads, head_dim)
  kernels), then x + MlpBlock_0(LayerNorm_0(x)): the shared layout's attn_pool.* (timm's
  AttentionPoolLatent: latent, q, kv = [k; v], proj, norm, mlp), pool="map", no class token.
Flax's conventions (tanh GELU, eps 1e-6) and inputs in [-1, 1] are assumed, as for Google's npz.
Writing (to_big_vision) is the inverse, bit for bit: scanned blocks (Transformer/encoderblock/, as SigLIP's
checkpoints; big_vision's vit.load converts to its model's scan setting) under "params/img/" for a MAP-pooled
model without [CLS] (a SigLIP image tower), under "params/" otherwise.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from vit_spec.formats.checkpoint import Checkpoint, build_config, check_layout, layout_fields
from vit_spec.formats.errors import FormatError, UnsupportedModelError
from vit_spec.formats.flags import CONVERT_FLAGS, Flags
from vit_spec.formats.google_npz import (
    LINEN,
    FlaxTree,
    block_from_flax,
    block_to_flax,
    embedding_from_flax,
    find_prefix,
    grid_of,
    head_from_flax,
    head_to_flax,
    heads_of,
    npz_mismatches,
    refuse_hybrid,
)
from vit_spec.layout import sincos_2d

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
    if (pool_type == "map") != has_map:
        raise FormatError(
            f"pool_type={pool_type!r} {'needs a MAPHead_0' if pool_type == 'map' else 'pools without a MAPHead_0'}, but "
            f"{source} {'has one' if has_map else 'has none'}"
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
    if has_map:
        sd.update(_map_head_from_flax(tree, heads, source))
        notes.append("MAPHead (attention pooling with a learned probe) read as attn_pool (pool='map', no class token)")
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
    left = [k for k in tree.leftover() if k.startswith(prefix)]
    outside = [k for k in tree.leftover() if not k.startswith(prefix)]
    if outside:
        groups = sorted({"/".join(k.split("/")[:2]) for k in outside})
        notes.append(f"left out {len(outside)} arrays outside {prefix!r} ({', '.join(groups[:6])}"
                     f"{', ...' if len(groups) > 6 else ''}): only the image tower is read")
    if left:
        raise UnsupportedModelError(
            f"{source} holds parameters a plain big_vision ViT does not: {left[:5]}{' and more' if len(left) > 5 else ''}"
        )
    fields: dict[str, Any] = dict(layout_fields(sd, grid, depth, heads), pos_embed=pos_kind)
    if has_map:
        fields.update(pool="map", class_token=False)
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


_MAP = "MAPHead_0/"
_MAP_MHA = _MAP + "MultiHeadDotProductAttention_0/"


def _map_head_from_flax(tree: FlaxTree, heads: int, source: str) -> dict[str, np.ndarray]:
    """big_vision's MAPHead -> attn_pool.* (timm's AttentionPoolLatent names)."""
    needed = [_MAP + "probe", _MAP_MHA + "query/kernel", _MAP + "LayerNorm_0/scale", _MAP + "MlpBlock_0/Dense_0/kernel"]
    missing = [k for k in needed if not tree.has(k)]
    if missing:
        found = sorted(k[len(tree.prefix):] for k in tree.arrays if k.startswith(tree.prefix + _MAP))
        raise UnsupportedModelError(
            f"{source} has a MAPHead_0 without {missing[0]!r} (found {found[:4]}): not big_vision's MAPHead (probe, "
            "MultiHeadDotProductAttention_0, LayerNorm_0, MlpBlock_0), the one attention-pooling head this ViT computes"
        )
    kernels = [tree.take(_MAP_MHA + f"{p}/kernel", 3) for p in ("query", "key", "value")]
    d, h, dh = kernels[0].shape
    if h != heads:
        raise UnsupportedModelError(f"{source}: the MAPHead has {h} heads, the encoder {heads}; this ViT's MAP head has the encoder's")
    biases = [tree.take(_MAP_MHA + f"{p}/bias", 2).reshape(-1) for p in ("query", "key", "value")]
    w = [k.reshape(d, h * dh).T for k in kernels]
    out = {
        "attn_pool.latent": tree.take(_MAP + "probe", 3),
        "attn_pool.q.weight": w[0], "attn_pool.q.bias": biases[0],
        "attn_pool.kv.weight": np.concatenate(w[1:], axis=0), "attn_pool.kv.bias": np.concatenate(biases[1:]),
        "attn_pool.proj.weight": tree.take(_MAP_MHA + "out/kernel", 3).reshape(h * dh, -1).T,
        "attn_pool.proj.bias": tree.take(_MAP_MHA + "out/bias", 1),
        "attn_pool.norm.weight": tree.take(_MAP + "LayerNorm_0/scale", 1),
        "attn_pool.norm.bias": tree.take(_MAP + "LayerNorm_0/bias", 1),
    }
    for i in (0, 1):
        out[f"attn_pool.mlp.fc{i + 1}.weight"] = tree.take(_MAP + f"MlpBlock_0/Dense_{i}/kernel", 2).T
        out[f"attn_pool.mlp.fc{i + 1}.bias"] = tree.take(_MAP + f"MlpBlock_0/Dense_{i}/bias", 1)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _map_head_to_flax(sd: Mapping[str, np.ndarray], heads: int) -> dict[str, np.ndarray]:
    d = sd["attn_pool.q.weight"].shape[0]
    dh = d // heads
    k_w, v_w = np.split(sd["attn_pool.kv.weight"], 2, axis=0)
    k_b, v_b = np.split(sd["attn_pool.kv.bias"], 2)
    out = {_MAP + "probe": sd["attn_pool.latent"]}
    for part, w, b in (("query", sd["attn_pool.q.weight"], sd["attn_pool.q.bias"]), ("key", k_w, k_b), ("value", v_w, v_b)):
        out[_MAP_MHA + f"{part}/kernel"] = w.T.reshape(d, heads, dh)
        out[_MAP_MHA + f"{part}/bias"] = b.reshape(heads, dh)
    out[_MAP_MHA + "out/kernel"] = sd["attn_pool.proj.weight"].T.reshape(heads, dh, d)
    out[_MAP_MHA + "out/bias"] = sd["attn_pool.proj.bias"]
    out[_MAP + "LayerNorm_0/scale"], out[_MAP + "LayerNorm_0/bias"] = sd["attn_pool.norm.weight"], sd["attn_pool.norm.bias"]
    for i in (0, 1):
        out[_MAP + f"MlpBlock_0/Dense_{i}/kernel"] = sd[f"attn_pool.mlp.fc{i + 1}.weight"].T
        out[_MAP + f"MlpBlock_0/Dense_{i}/bias"] = sd[f"attn_pool.mlp.fc{i + 1}.bias"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


# The architecture features a big_vision ViT expresses, with the values it has them at.
_BIG_VISION_FEATURES = {"class_token", "pos_embed_covers_prefix"}


def to_big_vision(
    checkpoint: Checkpoint, accept_mismatch: bool = False, prefix: str | None = None, scan: bool = True,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Checkpoint -> (big_vision npz arrays, sorted by key; notes). The inverse of from_big_vision.

    prefix: where the tree goes; None: "params/img/" for a MAP-pooled model without [CLS] (SigLIP's image tower),
    "params/" otherwise. scan: stacked blocks (Transformer/encoderblock/) or one subtree per block.
    """
    config, sd = checkpoint.config, checkpoint.state_dict
    notes: list[str] = []
    other = [f"{f}={v!r}" for f, v in config.features().items() if f not in _BIG_VISION_FEATURES]
    if other or config.pool == "none":
        raise UnsupportedModelError(
            f"big_vision's ViT cannot express {', '.join(other) or 'pool=none'}: it is a plain pre-norm ViT with pool_type "
            "tok, gap or map"
        )
    if config.pool == "map" and config.has_class_token:
        raise UnsupportedModelError("big_vision's MAP pooling (pool_type='map') has no [CLS] token, but this model has one")
    if config.pool == "mean" and config.has_class_token:
        raise UnsupportedModelError("big_vision's mean pooling (pool_type='gap') has no [CLS] token, but this model has one")
    mismatches = npz_mismatches(config, "big_vision")
    if mismatches:
        message = f"this model computes {' and '.join(mismatches)}; the npz cannot record that, so big_vision would compute something else"
        if not accept_mismatch:
            raise FormatError(message + "; pass --accept-mismatch to write it anyway")
        notes.append("written despite the mismatch: " + message)
    if (config.image_mean, config.image_std) != ((0.5,) * 3, (0.5,) * 3):
        notes.append(f"the npz does not record input normalisation; this model expects (x - {config.image_mean}) / "
                     f"{config.image_std}, while big_vision's configs feed [-1, 1]")
    if not config.qkv_bias:
        notes.append("qkv_bias=False: written as zero query/key/value biases, which compute the same")
    if config.pos_embed == "sincos2d":
        notes.append("the fixed sin-cos position table is written as a (learned) pos_embedding; it computes the same")
    out: dict[str, np.ndarray] = {}
    pos = sd["pos_embed"]
    if config.has_class_token:
        cls = sd["cls_token"]
        if config.pos_embed_covers_prefix:
            slot, pos = pos[:, :1], pos[:, 1:]
            if np.any(slot):
                cls = cls + slot
                notes.append("big_vision gives [CLS] no position: its pos_embed slot was added to the cls token, which "
                             "computes the same")
        out["cls"] = cls
    out["pos_embedding"] = np.ascontiguousarray(pos)
    out["embedding/kernel"] = np.ascontiguousarray(sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0))
    out["embedding/bias"] = sd["patch_embed.proj.bias"]
    blocks = []
    for i in range(config.depth):
        p = f"blocks.{i}."
        blocks.append(block_to_flax({k[len(p):]: v for k, v in sd.items() if k.startswith(p)}, config.heads, LINEN))
    if scan:
        out.update({_SCANNED + k: np.stack([b[k] for b in blocks]) for k in blocks[0]})
    else:
        for i, b in enumerate(blocks):
            out.update({f"Transformer/encoderblock_{i}/{k}": v for k, v in b.items()})
    out["Transformer/encoder_norm/scale"], out["Transformer/encoder_norm/bias"] = sd["norm.weight"], sd["norm.bias"]
    if config.pool == "map":
        out.update(_map_head_to_flax(sd, config.heads))
    head_to_flax(sd, out)
    if prefix is None:
        prefix = "params/img/" if config.pool == "map" and not config.has_class_token else "params/"
    pool_type = {"cls": "tok", "mean": "gap", "map": "map"}[config.pool]
    notes.append(f"written under {prefix!r}{', blocks scanned (Transformer/encoderblock/)' if scan else ''}; "
                 f"big_vision config: pool_type={pool_type!r}, posemb='learn', width {config.width}, depth {config.depth}, "
                 f"mlp_dim {config.mlp_dim}, num_heads {config.heads}")
    return {prefix + k: out[k] for k in sorted(out)}, notes
