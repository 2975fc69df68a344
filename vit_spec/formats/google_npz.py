"""Google's published ViT checkpoints (google-research/vision_transformer, `models_vit.py`) <-> the shared layout.

The .npz holds the Flax parameter tree with keys joined by "/":

    embedding/kernel              (kh, kw, C, D)   HWIO; the shared layout's Conv2d weight is OIHW
    embedding/bias, cls           cls (1, 1, D) only with classifier="token"
    Transformer/posembed_input/pos_embedding   (1, [1 +] N, D), the [CLS] slot first, as the shared layout
    Transformer/encoderblock_i/LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3
        (the pre-linen module numbering of the published files; linen's LayerNorm_0,
        MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0 is read too)
        query/key/value kernels (D, H, Dh) and biases (H, Dh): fused into qkv (3D, D) in q, k, v order
        out kernel (H, Dh, D): the shared layout's attn.proj (D, D)
    Transformer/encoder_norm, pre_logits (optional Dense + tanh), head

What the file does not record is the code's convention, assumed and reported: Flax's default GELU
(the tanh approximation), LayerNorm epsilon 1e-6, and inputs scaled to [-1, 1] (mean = std = 0.5).
classifier="gap" (no `cls`) is mean pooling after the final norm, this project's pool="mean".
Every conversion is a transpose or reshape, so npz -> shared -> npz gives back identical arrays.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from vit_spec.config import ViTConfig
from vit_spec.formats.checkpoint import Checkpoint, build_config, check_layout, layout_fields
from vit_spec.formats.errors import FormatError, UnsupportedModelError
from vit_spec.formats.flags import CONVERT_FLAGS, Flags

# Per block: (first LayerNorm, attention, second LayerNorm, MLP) module names.
PRE_LINEN = ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
LINEN = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")

GOOGLE_CONVENTIONS = {
    "gelu": ("tanh", "not recorded in the npz; Google's code uses Flax's default nn.gelu, the tanh approximation"),
    "layer_norm_eps": (1e-6, "not recorded in the npz; Flax's LayerNorm default, as Google's code"),
    "image_mean": ((0.5, 0.5, 0.5), "not recorded in the npz; Google's input pipeline scales pixels to [-1, 1]"),
    "image_std": ((0.5, 0.5, 0.5), "not recorded in the npz; Google's input pipeline scales pixels to [-1, 1]"),
}
_POSEMB = "Transformer/posembed_input/pos_embedding"


class FlaxTree:
    """Flat "/"-joined arrays under a prefix; remembers which were read, to report the rest."""

    def __init__(self, arrays: Mapping[str, np.ndarray], prefix: str, source: str):
        self.arrays, self.prefix, self.source = arrays, prefix, source
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return self.prefix + key in self.arrays

    def take(self, key: str, ndim: int | None = None) -> np.ndarray:
        full = self.prefix + key
        if full not in self.arrays:
            raise FormatError(f"{self.source} has no {full!r}, which this layout needs; found {_few(self.arrays)}")
        self.used.add(full)
        array = self.arrays[full]
        if ndim is not None and array.ndim != ndim:
            raise FormatError(f"{self.source}: {full!r} has shape {array.shape}; {ndim} dimensions were expected")
        if not np.issubdtype(array.dtype, np.floating):
            raise FormatError(f"{self.source}: {full!r} has dtype {array.dtype}; a floating type was expected")
        return array

    def leftover(self) -> list[str]:
        return [k for k in self.arrays if k not in self.used]


def _few(arrays: Mapping[str, Any], n: int = 6) -> str:
    keys = list(arrays)
    return f"{len(keys)} arrays: " + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def block_from_flax(tree: FlaxTree, base: str, names: tuple[str, ...], index: int | None = None) -> dict[str, np.ndarray]:
    """One Flax encoder block -> shared names (without the "blocks.i." prefix).

    `index` picks the block from a scanned (stacked, leading depth axis) tree, as big_vision's scan=True.
    """
    ln1, mha, ln2, mlp = names
    extra = 0 if index is None else 1

    def get(key: str, ndim: int) -> np.ndarray:
        array = tree.take(base + key, ndim + extra)
        return array if index is None else array[index]

    out: dict[str, np.ndarray] = {}
    out["norm1.weight"], out["norm1.bias"] = get(f"{ln1}/scale", 1), get(f"{ln1}/bias", 1)
    kernels = [get(f"{mha}/{p}/kernel", 3) for p in ("query", "key", "value")]
    d, h, dh = kernels[0].shape
    out["attn.qkv.weight"] = np.concatenate([k.reshape(d, h * dh).T for k in kernels], axis=0)
    if tree.has(base + f"{mha}/query/bias"):
        out["attn.qkv.bias"] = np.concatenate([get(f"{mha}/{p}/bias", 2).reshape(-1) for p in ("query", "key", "value")])
    out["attn.proj.weight"] = get(f"{mha}/out/kernel", 3).reshape(h * dh, -1).T
    out["attn.proj.bias"] = get(f"{mha}/out/bias", 1)
    out["norm2.weight"], out["norm2.bias"] = get(f"{ln2}/scale", 1), get(f"{ln2}/bias", 1)
    out["mlp.fc1.weight"], out["mlp.fc1.bias"] = get(f"{mlp}/Dense_0/kernel", 2).T, get(f"{mlp}/Dense_0/bias", 1)
    out["mlp.fc2.weight"], out["mlp.fc2.bias"] = get(f"{mlp}/Dense_1/kernel", 2).T, get(f"{mlp}/Dense_1/bias", 1)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def heads_of(tree: FlaxTree, base: str, names: tuple[str, ...], scanned: bool = False) -> int:
    shape = tree.arrays[tree.prefix + base + f"{names[1]}/query/kernel"].shape
    return int(shape[2 if scanned else 1])


def block_to_flax(block: Mapping[str, np.ndarray], heads: int, names: tuple[str, ...] = PRE_LINEN) -> dict[str, np.ndarray]:
    """Inverse of block_from_flax (shared names without "blocks.i." -> Flax keys under the block)."""
    ln1, mha, ln2, mlp = names
    d = block["attn.proj.weight"].shape[0]
    dh = d // heads
    out: dict[str, np.ndarray] = {}
    out[f"{ln1}/bias"], out[f"{ln1}/scale"] = block["norm1.bias"], block["norm1.weight"]
    out[f"{ln2}/bias"], out[f"{ln2}/scale"] = block["norm2.bias"], block["norm2.weight"]
    out[f"{mlp}/Dense_0/bias"], out[f"{mlp}/Dense_0/kernel"] = block["mlp.fc1.bias"], block["mlp.fc1.weight"].T
    out[f"{mlp}/Dense_1/bias"], out[f"{mlp}/Dense_1/kernel"] = block["mlp.fc2.bias"], block["mlp.fc2.weight"].T
    weights = np.split(block["attn.qkv.weight"], 3, axis=0)
    biases = np.split(block["attn.qkv.bias"], 3) if "attn.qkv.bias" in block else [None] * 3
    for part, w, b in zip(("query", "key", "value"), weights, biases):
        out[f"{mha}/{part}/kernel"] = w.T.reshape(d, heads, dh)
        # Flax's attention always has biases: zeros compute what qkv_bias=False computes.
        out[f"{mha}/{part}/bias"] = b.reshape(heads, dh) if b is not None else np.zeros((heads, dh), w.dtype)
    out[f"{mha}/out/bias"] = block["attn.proj.bias"]
    out[f"{mha}/out/kernel"] = block["attn.proj.weight"].T.reshape(heads, dh, d)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def find_prefix(arrays: Mapping[str, np.ndarray], prefixes: tuple[str, ...]) -> str | None:
    for prefix in prefixes:
        if prefix + "embedding/kernel" in arrays:
            return prefix
    return None


def is_google_npz(arrays: Mapping[str, np.ndarray]) -> bool:
    prefix = find_prefix(arrays, ("", "opt/target/"))
    return prefix is not None and prefix + _POSEMB in arrays


def refuse_hybrid(arrays: Mapping[str, np.ndarray], source: str) -> None:
    if any(k.endswith("conv_root/kernel") or "/block1/unit1/" in k or k.startswith("block1/") for k in arrays):
        raise UnsupportedModelError(
            f"{source} is a hybrid ResNet + ViT checkpoint (conv_root, block1/unit1, ...); only plain ViTs are supported"
        )


def embedding_from_flax(tree: FlaxTree) -> tuple[np.ndarray, np.ndarray]:
    kernel = tree.take("embedding/kernel", 4)  # (kh, kw, C, D) -> (D, C, kh, kw)
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)), tree.take("embedding/bias", 1)


def head_from_flax(tree: FlaxTree, out: dict[str, np.ndarray]) -> None:
    if tree.has("pre_logits/kernel"):
        out["pre_logits.fc.weight"] = np.ascontiguousarray(tree.take("pre_logits/kernel", 2).T)
        out["pre_logits.fc.bias"] = tree.take("pre_logits/bias", 1)
    if tree.has("head/kernel"):
        out["head.weight"] = np.ascontiguousarray(tree.take("head/kernel", 2).T)
        out["head.bias"] = tree.take("head/bias", 1)


def head_to_flax(sd: Mapping[str, np.ndarray], out: dict[str, np.ndarray]) -> None:
    """head_from_flax's inverse: the pre-logits layer and the head, where the state dict has them."""
    if "pre_logits.fc.weight" in sd:
        out["pre_logits/kernel"] = np.ascontiguousarray(sd["pre_logits.fc.weight"].T)
        out["pre_logits/bias"] = sd["pre_logits.fc.bias"]
    if "head.weight" in sd:
        out["head/kernel"] = np.ascontiguousarray(sd["head.weight"].T)
        out["head/bias"] = sd["head.bias"]


def grid_of(
    n: int, patch: tuple[int, int], image_size: int | tuple[int, int] | None, what: str,
    flags: Flags = CONVERT_FLAGS, source: str = "FILE",
) -> tuple[int, int]:
    """The patch grid of a position table with n patch entries: square, or from the given image size.
    `flags`, `source`: the calling command's flag names and the file, for the messages."""
    if image_size is None:
        side = math.isqrt(n)
        if side * side != n:
            ask = (f"pass {flags.source_image_size} HxW" if flags.source_image_size
                   else flags.convert_first(source, "--source-image-size HxW", "--source-image-size"))
            raise FormatError(f"{what} has {n} patch entries, not a square grid; give the image size it was saved at: {ask}")
        return side, side
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if h % patch[0] or w % patch[1] or (h // patch[0]) * (w // patch[1]) != n:
        raise FormatError(f"{what} has {n} patch entries, which does not fit image size {image_size} with patch size {patch}")
    return h // patch[0], w // patch[1]


def from_google(
    arrays: Mapping[str, np.ndarray], source: str, source_image_size: int | tuple[int, int] | None = None,
    flags: Flags = CONVERT_FLAGS,
) -> Checkpoint:
    """A google-research/vision_transformer .npz (flat "/" keys) -> Checkpoint.

    `source_image_size` is needed only for a non-square grid (Google's own checkpoints are square).
    """
    refuse_hybrid(arrays, source)
    prefix = find_prefix(arrays, ("", "opt/target/"))
    if prefix is None or prefix + _POSEMB not in arrays:
        raise FormatError(
            f"{source} is not in google-research/vision_transformer's layout: expected embedding/kernel and {_POSEMB}; "
            f"found {_few(arrays)}"
        )
    tree = FlaxTree(arrays, prefix, source)
    notes = [f"read the tree under {prefix!r}"] if prefix else []
    sd: dict[str, np.ndarray] = {}
    has_cls = tree.has("cls")
    if has_cls:
        sd["cls_token"] = tree.take("cls", 3)
    sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"] = embedding_from_flax(tree)
    sd["pos_embed"] = tree.take(_POSEMB, 3)
    depth = 0
    while tree.has(f"Transformer/encoderblock_{depth}/LayerNorm_0/scale"):
        depth += 1
    if depth == 0:
        raise FormatError(f"{source} has no Transformer/encoderblock_0/...; found {_few(arrays)}")
    base0 = "Transformer/encoderblock_0/"
    names = PRE_LINEN if tree.has(base0 + "MultiHeadDotProductAttention_1/query/kernel") else LINEN
    if names is LINEN:
        notes.append("the blocks use linen's module numbering (MultiHeadDotProductAttention_0, ...); read as the published one")
    heads = heads_of(tree, base0, names)
    for i in range(depth):
        for k, v in block_from_flax(tree, f"Transformer/encoderblock_{i}/", names).items():
            sd[f"blocks.{i}.{k}"] = v
    sd["norm.weight"], sd["norm.bias"] = tree.take("Transformer/encoder_norm/scale", 1), tree.take("Transformer/encoder_norm/bias", 1)
    head_from_flax(tree, sd)
    left = tree.leftover()
    if left:
        raise UnsupportedModelError(
            f"{source} holds parameters a plain Google ViT does not: {left[:5]}{' and more' if len(left) > 5 else ''}"
        )
    _, _, ph, pw = sd["patch_embed.proj.weight"].shape
    n = sd["pos_embed"].shape[1] - (1 if has_cls else 0)
    gh, gw = grid_of(n, (ph, pw), source_image_size, f"{source}: {_POSEMB}", flags, source)
    fields: dict[str, Any] = layout_fields(sd, (gh, gw), depth, heads)
    fields.update({k: v for k, (v, _) in GOOGLE_CONVENTIONS.items()})
    config = build_config(fields, source)
    check_layout(config, sd, source)
    assumed = {k: why for k, (_, why) in GOOGLE_CONVENTIONS.items()}
    return Checkpoint(config, sd, "npz", assumed, notes)


def npz_mismatches(config: ViTConfig, reader: str) -> list[str]:
    """What `config` computes that Google's npz readers (`reader`: Google's code, big_vision) would not: they
    compute the tanh GELU with LayerNorm eps 1e-6, and an npz cannot say otherwise."""
    mismatches = []
    if config.gelu != "tanh":
        mismatches.append(f"GELU {config.gelu!r} ({reader}: 'tanh')")
    if config.layer_norm_eps != 1e-6:
        mismatches.append(f"LayerNorm eps {config.layer_norm_eps:g} ({reader}: 1e-6)")
    return mismatches


def to_google(checkpoint: Checkpoint, accept_mismatch: bool = False) -> tuple[dict[str, np.ndarray], list[str]]:
    """Checkpoint -> (google-research/vision_transformer npz arrays, sorted by key; notes).

    Google's code computes the tanh GELU with LayerNorm eps 1e-6; a model computing otherwise is refused
    unless accept_mismatch, since the npz cannot say so and the file would then compute something else.
    """
    config, sd = checkpoint.config, checkpoint.state_dict
    notes: list[str] = []
    other = [f"{f}={v!r}" for f, v in config.features().items() if f != "class_token"]
    if other or config.pool in ("map", "none") or (config.pool == "mean" and config.has_class_token):
        what = ", ".join(other) or (f"pool={config.pool!r}" if config.pool != "mean" else "mean pooling beside a [CLS] token")
        raise UnsupportedModelError(
            f"Google's vision_transformer (models_vit.py) cannot express {what}: it is a plain ViT with classifier "
            "'token' or 'gap'" + (" (a MAP-pooled model is big_vision's: --to big_vision)" if config.pool == "map" else "")
        )
    mismatches = npz_mismatches(config, "Google's code")
    if mismatches:
        message = (
            f"this model computes {' and '.join(mismatches)}; the npz cannot record that, so Google's models_vit.py "
            "would compute something else from it"
        )
        if not accept_mismatch:
            raise FormatError(message + "; pass --accept-mismatch to write it anyway (for readers such as timm told the truth)")
        notes.append("written despite the mismatch: " + message)
    if (config.image_mean, config.image_std) != ((0.5,) * 3, (0.5,) * 3):
        notes.append(
            f"the npz does not record input normalisation; this model expects (x - {config.image_mean}) / {config.image_std}, "
            "while Google's pipelines feed [-1, 1]"
        )
    if not config.qkv_bias:
        notes.append("qkv_bias=False: written as zero query/key/value biases, which compute the same")
    if config.pos_embed == "sincos2d":
        notes.append("the fixed sin-cos position table is written as the (learned) pos_embedding; it computes the same")
    out: dict[str, np.ndarray] = {}
    if config.pool == "cls":
        out["cls"] = sd["cls_token"]
    out["embedding/kernel"] = np.ascontiguousarray(sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0))
    out["embedding/bias"] = sd["patch_embed.proj.bias"]
    out[_POSEMB] = sd["pos_embed"]
    for i in range(config.depth):
        p = f"blocks.{i}."
        block = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
        for k, v in block_to_flax(block, config.heads).items():
            out[f"Transformer/encoderblock_{i}/{k}"] = v
    out["Transformer/encoder_norm/scale"], out["Transformer/encoder_norm/bias"] = sd["norm.weight"], sd["norm.bias"]
    head_to_flax(sd, out)
    return {k: out[k] for k in sorted(out)}, notes
