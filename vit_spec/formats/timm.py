"""timm's `VisionTransformer` / `VisionTransformerDistilled` state dicts <-> the shared layout.

The names and layouts are the shared layout itself, so the work is the config. A timm state dict shows every size
but the number of heads, and each architecture feature that has tensors of its own: the [CLS] token, register
tokens and their count, the distillation token and second head, layer scale (ls1/ls2 gammas), a MAP head
(attn_pool.*), where the final norm sits (norm vs fc_norm, or neither), a norm before the blocks (norm_pre), a
patch projection without bias, qk-norm (q_norm/k_norm), RMSNorm (norms without bias), a gated MLP (fc1_g/fc1_x, or
an fc1 twice as wide as fc2 reads: packed), a norm inside the MLP (mlp.norm), a norm on the patch embeddings
(patch_embed.norm), a norm on the attention output (attn.norm), projections without bias (attn.proj.bias absent:
proj_bias=False), and whether the position table has slots for the prefix tokens (its length against the patch grid).
What it does not record (heads, the activation and GELU form, norm epsilon, whether a packed GLU is SwiGLU or GeGLU,
mean vs [CLS] pooling where both fit, whether pooling includes the prefix tokens, image size, input normalisation) comes from `--variant` (this project's name or any timm name: see variants.py), the
flags, or for files this project wrote the "vit_timm" metadata (the whole config); what is still unknown is
assumed to be timm's default and reported. Contradictions between the file and the name are refused naming both;
timm models the twins cannot compute (hybrid CNN stems, parallel blocks, differential attention, relative position
biases, rope, ...) are refused with the reason.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping

import numpy as np

from vit_spec.config import ViTConfig
from vit_spec.formats.checkpoint import ASSUMABLE_FIELDS, Checkpoint, build_config, check_layout
from vit_spec.formats.errors import FormatError, UnsupportedModelError
from vit_spec.formats.flags import CONVERT_FLAGS, Flags
from vit_spec.formats.variants import IMAGENET_MEAN_STD, at_image_size, resolve_variant

METADATA_KEY = "vit_timm"  # JSON: {"config": the ViTConfig dict, "constructor": the timm class and kwargs}

# Keys of timm models that compute something this project's ViT does not, and what each means.
_UNSUPPORTED = (
    (r"patch_embed\.backbone\.", "is a hybrid with a CNN stem (HybridEmbed)"),
    (r"blocks\.\d+\.(in_proj|in_norm|attn_out_proj|mlp_out_proj)\.", "has parallel attention and MLP blocks (ParallelScalingBlock)"),
    (r"blocks\.\d+\.(attns|ffns)\.", "has parallel attention and MLP blocks (ParallelThingsBlock)"),
    (r"blocks\.\d+\.attn\.(lambda_|sub_norm)", "has differential attention (DiffAttention)"),
    (r"blocks\.\d+\.attn\.relative_position", "has relative position biases (BEiT)"),
    (r"blocks\.\d+\.gamma_\d", "is a BEiT (gamma_1/gamma_2 layer scale, relative positions)"),
    (r"(blocks\.\d+\.attn\.)?rope|.*freqs", "has rotary position embeddings (rope)"),
    (r"attn_pool\.(pos_embed|q_norm|k_norm)", "pools with an attention pool other than VisionTransformer's MAP head"),
)
_VIT_KEYS = ("patch_embed.proj.weight", "blocks.0.")
# What a bare timm state dict leaves out, and what timm's VisionTransformer uses when not told.
TIMM_DEFAULTS = {
    "layer_norm_eps": (1e-6, "not recorded in a timm state dict; timm's default"),
    "gelu": ("exact", "not recorded in a timm state dict; timm's default nn.GELU"),
    "image_mean": (IMAGENET_MEAN_STD[0], "not recorded in a timm state dict; ImageNet's (timm's IMAGENET_DEFAULT_MEAN)"),
    "image_std": (IMAGENET_MEAN_STD[1], "not recorded in a timm state dict; ImageNet's (timm's IMAGENET_DEFAULT_STD)"),
}
# Architecture facts the tensors decide, in the order contradictions with a name are listed.
_DECIDED = ("width", "depth", "mlp_dim", "patch_size", "channels", "qkv_bias", "class_token", "reg_tokens", "distilled",
            "layer_scale", "final_norm", "pre_norm", "patch_bias", "norm", "qk_norm", "mlp_norm", "mlp_kind", "map_pool",
            "patch_norm", "attn_norm", "proj_bias")
_MLP_KIND = {"plain": "plain", "swiglu": "separate gated (fc1_g, fc1_x)", "swiglu_packed": "packed gated",
             "geglu": "packed gated"}


def is_timm_state_dict(arrays: Mapping[str, Any]) -> bool:
    """timm's names: a patch embedding (a projection, or a hybrid's CNN stem, refused later) and blocks.N."""
    embed = "patch_embed.proj.weight" in arrays or any(k.startswith("patch_embed.backbone.") for k in arrays)
    return embed and any(k.startswith("blocks.0.") for k in arrays)


def describe_keys(arrays: Mapping[str, Any], n: int = 6) -> str:
    keys = list(arrays)
    shown = ", ".join(f"{k} {tuple(np.shape(arrays[k]))}" for k in keys[:n])
    return f"{len(keys)} tensors: {shown}" + (", ..." if len(keys) > n else "")


def _refuse_unsupported(arrays: Mapping[str, np.ndarray], source: str) -> None:
    def refuse(what: str, key: str = "") -> UnsupportedModelError:
        return UnsupportedModelError(
            f"{source} is a timm model that {what}{f' ({key!r})' if key else ''}; this project's ViT cannot compute that"
        )

    for pattern, what in _UNSUPPORTED:
        found = [k for k in arrays if re.match(pattern, k)]
        if found:
            raise refuse(what, found[0])
    if "attn_pool.latent" in arrays and _shape(arrays, "attn_pool.latent")[1] != 1:
        raise refuse(f"pools with {_shape(arrays, 'attn_pool.latent')[1]} latent queries (latent_len > 1)", "attn_pool.latent")
    if any(k.startswith("attn_pool.") for k in arrays) and "attn_pool.latent" not in arrays:
        raise refuse("pools with an attention pool other than VisionTransformer's MAP head (AttentionPoolPrr?)")
    for name, what in (
        ("pos_embed", "has no position embedding (pos_embed='none')"),
        ("blocks.0.attn.qkv.weight", "has no fused qkv projection in its blocks"),
    ):
        if name not in arrays:
            raise refuse(what)


def _shape(arrays: Mapping[str, np.ndarray], name: str) -> tuple[int, ...]:
    return tuple(np.shape(arrays[name]))


def _square(n: int) -> int | None:
    if n <= 0:
        return None
    side = math.isqrt(n)
    return side if side * side == n else None


def tensor_fields(arrays: Mapping[str, np.ndarray], source: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The architecture facts a shared-layout (timm-named) state dict decides by its tensors (_DECIDED, plus
    num_classes and representation_size), and for each the tensors that show it (for messages)."""
    proj = _shape(arrays, "patch_embed.proj.weight")
    if len(proj) != 4:
        raise FormatError(
            f"{source}: patch_embed.proj.weight has shape {proj}; a Conv2d weight (width, channels, kh, kw) was expected"
        )
    width, channels, ph, pw = proj
    depth = 0
    while f"blocks.{depth}.attn.qkv.weight" in arrays:
        depth += 1
    p = "blocks.0.mlp."
    if p + "fc2.weight" not in arrays:
        raise FormatError(f"{source}: blocks.0.mlp.fc2.weight is missing; found {describe_keys(arrays)}")
    mlp_dim = _shape(arrays, p + "fc2.weight")[1]
    if p + "fc1_g.weight" in arrays:
        mlp_kind, mlp_evidence = "swiglu", "blocks.0.mlp.fc1_g and fc1_x"
    elif p + "fc1.weight" in arrays:
        fc1 = _shape(arrays, p + "fc1.weight")[0]
        if fc1 == mlp_dim:
            mlp_kind = "plain"
        elif fc1 == 2 * mlp_dim:
            mlp_kind = "swiglu_packed"  # or geglu: the activation decides
        else:
            raise FormatError(f"{source}: blocks.0.mlp.fc1 has {fc1} outputs but fc2 reads {mlp_dim}: neither a plain MLP "
                              "nor a packed gated one (twice as many)")
        mlp_evidence = f"blocks.0.mlp.fc1 has {fc1} outputs, fc2 reads {mlp_dim}"
    else:
        raise FormatError(f"{source}: blocks.0.mlp.fc1.weight is missing; found {describe_keys(arrays)}")
    final_norm = "pooled" if "fc_norm.weight" in arrays else "tokens" if "norm.weight" in arrays else "none"
    fields: dict[str, Any] = dict(
        width=width, depth=depth, mlp_dim=mlp_dim, patch_size=ph if ph == pw else (ph, pw), channels=channels,
        qkv_bias="blocks.0.attn.qkv.bias" in arrays,
        class_token="cls_token" in arrays,
        reg_tokens=_shape(arrays, "reg_token")[1] if "reg_token" in arrays else 0,
        distilled="dist_token" in arrays,
        layer_scale="blocks.0.ls1.gamma" in arrays,
        final_norm=final_norm,
        pre_norm="norm_pre.weight" in arrays,
        patch_bias="patch_embed.proj.bias" in arrays,
        norm="layer" if "blocks.0.norm1.bias" in arrays else "rms",
        qk_norm="blocks.0.attn.q_norm.weight" in arrays,
        mlp_norm="blocks.0.mlp.norm.weight" in arrays,
        mlp_kind=_MLP_KIND[mlp_kind],
        map_pool="attn_pool.latent" in arrays,
        patch_norm="patch_embed.norm.weight" in arrays,
        attn_norm="blocks.0.attn.norm.weight" in arrays,
        proj_bias="blocks.0.attn.proj.bias" in arrays,
        num_classes=_shape(arrays, "head.weight")[0] if "head.weight" in arrays else 0,
        representation_size=_shape(arrays, "pre_logits.fc.weight")[0] if "pre_logits.fc.weight" in arrays else None,
    )
    fields["_mlp"] = mlp_kind

    def has(name: str, what: str) -> str:
        return f"{what} {'present' if name in arrays else 'absent'}"

    evidence = dict(
        width=f"patch_embed.proj.weight has shape {proj}", patch_size=f"patch_embed.proj.weight has shape {proj}",
        channels=f"patch_embed.proj.weight has shape {proj}", depth=f"blocks.0 to blocks.{depth - 1}",
        mlp_dim=f"blocks.0.mlp.fc2.weight has shape {_shape(arrays, p + 'fc2.weight')}",
        qkv_bias=has("blocks.0.attn.qkv.bias", "qkv.bias"), class_token=has("cls_token", "cls_token"),
        reg_tokens=f"reg_token {_shape(arrays, 'reg_token') if 'reg_token' in arrays else 'absent'}",
        distilled=has("dist_token", "dist_token"), layer_scale=has("blocks.0.ls1.gamma", "blocks.0.ls1.gamma"),
        final_norm=f"{'fc_norm' if final_norm == 'pooled' else 'norm' if final_norm == 'tokens' else 'neither norm nor fc_norm'}",
        pre_norm=has("norm_pre.weight", "norm_pre"), patch_bias=has("patch_embed.proj.bias", "patch_embed.proj.bias"),
        norm=has("blocks.0.norm1.bias", "blocks.0.norm1.bias"), qk_norm=has("blocks.0.attn.q_norm.weight", "attn.q_norm"),
        mlp_norm=has("blocks.0.mlp.norm.weight", "mlp.norm"), mlp_kind=mlp_evidence,
        map_pool=has("attn_pool.latent", "attn_pool.*"), patch_norm=has("patch_embed.norm.weight", "patch_embed.norm"),
        attn_norm=has("blocks.0.attn.norm.weight", "blocks.0.attn.norm"),
        proj_bias=has("blocks.0.attn.proj.bias", "blocks.0.attn.proj.bias"),
    )
    return fields, evidence


def _name_facts(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A name's fields as the _DECIDED facts, for those it fixes."""
    facts = {k: fields[k] for k in ("width", "depth", "mlp_dim", "patch_size", "channels", "qkv_bias", "reg_tokens",
                                    "distilled", "final_norm", "pre_norm", "patch_bias", "norm", "qk_norm", "mlp_norm",
                                    "patch_norm", "attn_norm", "proj_bias")
             if k in fields}
    if "class_token" in fields:
        facts["class_token"] = fields["class_token"] if fields["class_token"] is not None else fields.get("pool") == "cls"
    if "layer_scale_init" in fields:
        facts["layer_scale"] = fields["layer_scale_init"] is not None
    if "mlp" in fields:
        facts["mlp_kind"] = _MLP_KIND[fields["mlp"]]
    if "pool" in fields:
        facts["map_pool"] = fields["pool"] == "map"
    return facts


def config_from_shared_layout(
    arrays: dict[str, np.ndarray],
    source: str,
    *,
    variant: str | None = None,
    heads: int | None = None,
    source_image_size: int | tuple[int, int] | None = None,
    known: Mapping[str, Any] | None = None,
    defaults: Mapping[str, tuple[Any, str]] | None = None,
    flags: Flags = CONVERT_FLAGS,
    activation: str | None = None,
) -> tuple[ViTConfig, dict[str, np.ndarray], dict[str, str], list[str], dict[str, str]]:
    """The config of a shared-layout (timm-named) state dict, from its tensors plus what is given.

    Args:
        arrays: the state dict, timm names.
        source: how to name the file in messages.
        variant: --variant; every fact the tensors decide must match it. A name's image size (timm's names
            have one) is where it was pretrained: --source-image-size, or a size the source records, replaces it.
        heads: --heads, for models no variant describes.
        source_image_size: --source-image-size, the image size the position table was trained for,
            needed only when its grid is not square (a state dict does not record it) or not the variant's.
        known: fields the source records elsewhere (e.g. Hugging Face's config.json); these are not "assumed".
        defaults: field -> (value, why) for ASSUMABLE_FIELDS neither known nor fixed by the variant;
            timm's defaults where not given.
        flags: the calling command's names for variant, heads and source_image_size, for the messages.
        activation: --activation, the MLPs' nonlinearity where neither the file nor the variant says it.

    Returns:
        (config, arrays, assumed, notes, given); `given`: Checkpoint.given, the architecture fields taken from
        variant, heads or source_image_size.
    """
    known = dict(known or {})
    _refuse_unsupported(arrays, source)
    decided, evidence = tensor_fields(arrays, source)
    width = decided["width"]
    ph, pw = (decided["patch_size"],) * 2 if isinstance(decided["patch_size"], int) else decided["patch_size"]
    assumed: dict[str, str] = {}
    notes: list[str] = []

    given: dict[str, Any] = {}
    origin: dict[str, str] = {}  # field of `given` -> the flag that gave it, for the messages
    by_name = f"{flags.variant} {variant}"
    if variant:
        v = resolve_variant(variant, flags, source)
        named = dict(v.fields)
        sizes = ("width", "depth", "mlp_dim", "patch_size", "channels", "heads", "image_size")
        if heads is not None and any(n in named and _norm(named[n]) != _norm(decided[n]) for n in sizes[:5]):
            # --heads with a name of other sizes: the name's family (its features, activation, norms, ...) at the
            # file's sizes.
            named = {k: val for k, val in named.items() if k not in sizes}
            notes.append(f"sizes from the file and {flags.heads} {heads}; the rest of the architecture from {variant}")
        given.update(named)
        origin.update(dict.fromkeys(named, by_name))
        notes += list(v.notes)
        facts = _name_facts(named)
        wrong = [n for n in _DECIDED if n in facts and _norm(facts[n]) != _norm(decided[n])]
        if wrong:
            found = "; ".join(f"{n}={decided[n]} ({evidence[n]})" for n in wrong)
            expected = ", ".join(f"{n}={facts[n]}" for n in wrong)
            raise FormatError(
                f"{source} does not match {flags.variant} {variant}: the checkpoint has {found}, but {variant} has "
                f"{expected}" + _no_variant_fits(source, variant, flags)
            )
    if heads is not None:
        if "heads" in given and given["heads"] != heads:
            raise FormatError(f"{flags.heads} {heads} contradicts {flags.variant} {variant}, which has {given['heads']} heads")
        given["heads"] = heads
        origin["heads"] = f"{flags.heads} {heads}"
    if source_image_size is not None:
        if "image_size" in given and _norm(given["image_size"]) != _norm(source_image_size):
            # A name's image size is where the named model was pretrained, not part of its architecture.
            notes.append(f"image size {_size_text(source_image_size)} from {flags.source_image_size}, in place of "
                         f"{variant}'s {_size_text(given['image_size'])}")
        given["image_size"] = source_image_size
        origin["image_size"] = f"{flags.source_image_size} {_size_text(source_image_size)}"
    for name, value in known.items():
        # Architecture facts must agree; for eps/GELU/normalisation what the source records wins over a name's default.
        if name in given and name not in ASSUMABLE_FIELDS and _norm(given[name]) != _norm(value):
            if name == "image_size" and origin[name] == by_name:
                notes.append(f"image size {_size_text(value)} as {source} records it, in place of {variant}'s "
                             f"{_size_text(given[name])}")
                continue
            raise FormatError(f"{source} records {name}={value}, but {origin[name]} gives {given[name]}")
    merged = {**given, **known}
    if "heads" not in merged:
        ask = f"{flags.variant} (e.g. S/16 or vit_small_patch16_224)"
        if flags.heads:
            ask += f" or {flags.heads}"
        else:
            ask += f", or for a model no variant describes (another depth, ...) {flags.convert_first(source, '--heads N', '--heads')}"
        raise FormatError(f"{source} does not record the number of attention heads (width {width}): give {ask}")

    fields: dict[str, Any] = {k: decided[k] for k in ("width", "depth", "mlp_dim", "patch_size", "channels", "qkv_bias",
                                                      "reg_tokens", "distilled", "final_norm", "pre_norm", "patch_bias",
                                                      "norm", "qk_norm", "mlp_norm", "num_classes", "representation_size",
                                                      "patch_norm", "attn_norm", "proj_bias")}
    fields["heads"] = merged["heads"]
    for name in ("dropout", "attention_dropout", "drop_path"):
        if name in merged:
            fields[name] = merged[name]
    if decided["layer_scale"]:
        fields["layer_scale_init"] = merged.get("layer_scale_init") or 1e-5
    # Pooling: a MAP head shows itself; [CLS] vs mean vs none is the name's, else timm's default for what the file has.
    has_cls = decided["class_token"]
    if decided["map_pool"]:
        pool = "map"
    elif "pool" in merged:
        pool = merged["pool"]
    elif has_cls and decided["final_norm"] != "pooled":
        pool = "cls"
    else:
        pool = "mean"
        if has_cls:
            notes.append("pool='mean' (timm's global_pool='avg'): the file has a [CLS] token and fc_norm, which timm "
                         "builds for average pooling; a --variant name says otherwise where it differs")
    fields["pool"] = pool
    fields["class_token"] = None if has_cls == (pool == "cls") else has_cls
    # Whether mean/MAP pooling takes the prefix tokens too: no tensor shows it; the name's (timm pool_include_prefix).
    prefix_tokens = int(has_cls) + int(decided["distilled"]) + decided["reg_tokens"]
    if merged.get("pool_include_prefix") and pool in ("mean", "map") and prefix_tokens:
        fields["pool_include_prefix"] = True
    # The activation: the name's, --activation, or timm's defaults (GELU; SiLU for SwiGLU's separate gate).
    mlp = decided["_mlp"]
    act = merged.get("activation")
    if activation is not None:
        if act is not None and act != activation and "activation" not in known:
            raise FormatError(f"--activation {activation} contradicts {flags.variant} {variant}, which has {act}")
        if act is not None and act != activation:
            raise FormatError(f"{source} records activation={act!r}; --activation {activation} would compute something else")
        if act is None:
            notes.append(f"activation={activation!r}: as requested (the source does not record it)")
        act = activation
    if mlp == "swiglu_packed":
        if act is None:
            ask = f"{flags.variant} NAME (the timm model)"
            raise FormatError(
                f"{source} has a packed gated MLP ({evidence['mlp_kind']}), which is timm's SwiGLUPacked (SiLU) or "
                f"GluMlp with GELU (GeGLU); the file does not say which: give {ask}"
                + (" or --activation silu|gelu" if flags.heads else "")
            )
        if act not in ("silu", "gelu"):
            raise UnsupportedModelError(f"{source}: a packed gated MLP with {act} is neither SwiGLU nor GeGLU")
        mlp = "swiglu_packed" if act == "silu" else "geglu"
    elif mlp == "swiglu" and act is None:
        act = "silu"
        notes.append("activation='silu': the MLP has a separate gate (fc1_g, fc1_x), timm's SwiGLU, whose default is SiLU")
    elif "mlp" in merged and mlp == "plain" and merged["mlp"] != "plain":
        raise FormatError(f"{source} has a plain MLP, but {origin.get('mlp', 'the source')} has mlp={merged['mlp']!r}")
    fields["mlp"] = mlp
    if act is not None:
        fields["activation"] = act
        if "activation" in given and "activation" not in known and act != "gelu" and activation is None:
            assumed["activation"] = f"from {flags.variant} {variant} ({resolve_variant(variant, flags, source).source})"

    # The patch grid and the prefix tokens' slots, from the position table (square unless the source says otherwise).
    pos = _shape(arrays, "pos_embed")
    if len(pos) != 3 or pos[0] != 1 or pos[2] != width:
        raise FormatError(f"{source}: pos_embed has shape {pos}; (1, tokens, {width}) was expected")
    prefix = int(has_cls) + int(decided["distilled"]) + decided["reg_tokens"]
    image_size = merged.get("image_size")
    side = _square(pos[1] - prefix)  # the square grid the table holds with prefix slots, if it is one
    covers = True
    if side is None and prefix and _square(pos[1]):
        side, covers = _square(pos[1]), False  # no_embed_class: no slots for the prefix tokens
    if image_size is not None:
        ih, iw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if ih % ph or iw % pw:
            raise FormatError(f"{source}: image size {image_size} is not a multiple of the patch size {(ph, pw)}")
        grid = (ih // ph, iw // pw)
        n = grid[0] * grid[1]
        if pos[1] == n + prefix:
            covers = True
        elif prefix and pos[1] == n:
            covers = False
        else:
            raise FormatError(_grid_mismatch(
                source, pos[1], grid, prefix, image_size, None if "image_size" in known else origin["image_size"],
                side, covers, (ph, pw), variant, flags,
            ))
    else:
        if side is None:
            raise FormatError(
                f"{source}: pos_embed has {pos[1]} entries, which is not a square grid{_plus(prefix, has_cls)}; "
                "give the image size it was saved at: " + _ask_image_size(source, variant, flags, "HxW")
            )
        grid = (side, side)
    if prefix:
        if "pos_embed_covers_prefix" in merged and merged["pos_embed_covers_prefix"] != covers:
            raise FormatError(
                f"{source}: pos_embed has {pos[1]} entries, a {grid[0]}x{grid[1]} grid "
                f"{'plus' if covers else 'without'} slots for the {prefix} prefix tokens, but {origin.get('pos_embed_covers_prefix')} "
                f"has no_embed_class={not merged['pos_embed_covers_prefix']}"
            )
        fields["pos_embed_covers_prefix"] = covers
        if not covers:
            notes.append("the prefix tokens get no position embedding (timm's no_embed_class=True): pos_embed covers the "
                         "patches only")
    fields["image_size"] = grid[0] * ph if grid[0] * ph == grid[1] * pw else (grid[0] * ph, grid[1] * pw)

    defaults = {**TIMM_DEFAULTS, **(defaults or {})}
    for name, (value, why) in defaults.items():
        if name in known:
            fields[name] = known[name]
        elif name in given:
            fields[name] = given[name]
            assumed[name] = f"from {flags.variant} {variant} ({resolve_variant(variant, flags, source).source})"
        else:
            fields[name] = value
            assumed[name] = why
    config = build_config(fields, source)
    check_layout(config, arrays, source)
    given_by = {name: origin[name] for name in ("heads", "image_size") if name in given and name not in known}
    return config, arrays, assumed, notes, given_by


def _plus(prefix: int, has_cls: bool) -> str:
    if not prefix:
        return ""
    return " plus [CLS]" if prefix == 1 and has_cls else f" plus {prefix} prefix tokens"


def _size_text(size: Any) -> str:
    """An image size as the flags take it: 64, or 64x96."""
    if isinstance(size, (list, tuple)):
        return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"
    return str(size)


def _ask_image_size(source: str, variant: str | None, flags: Flags, size: str) -> str:
    """How the calling command is told the image size a file was saved at (`size`, or "HxW" when unknown)."""
    if flags.source_image_size:
        with_variant = f" with {flags.variant} {variant}" if variant else ""
        return f"pass {flags.source_image_size} {size}{with_variant}"
    renamed = at_image_size(variant, int(size)) if variant and size.isdigit() else None
    if renamed:  # a timm name says its image size: the same name at the file's
        return f"pass {flags.variant} {renamed} ({variant} at {size} px)"
    args = (f"--variant {variant} " if variant else "") + f"--source-image-size {size}"
    return flags.convert_first(source, args, "--source-image-size")


def _grid_mismatch(
    source: str, entries: int, grid: tuple[int, int], prefix: int, image_size: Any, given_by: str | None,
    side: int | None, covers: bool, patch: tuple[int, int], variant: str | None, flags: Flags,
) -> str:
    """The message for a position table that does not fit the image size the file records or was given
    (`given_by`: the flag that gave it; None: the file records it), with the size that does fit, if any."""
    n = grid[0] * grid[1]
    plus = _plus(prefix, prefix == 1)
    where = f"from {given_by}" if given_by else f"as {source} records it"
    head = (f"{source}: pos_embed has {entries} entries, but image size {_size_text(image_size)} ({where}) "
            f"with patch size {_size_text(patch)} makes a {grid[0]}x{grid[1]} grid{plus}, {n + prefix} entries")
    if side is None:
        if given_by is None:
            return head + "; the file is inconsistent"
        return (f"{head}, and {entries} is no square grid{plus}; give the image size it was saved at: "
                + _ask_image_size(source, variant, flags, "HxW"))
    saved = side * patch[0] if patch[0] == patch[1] else f"{side * patch[0]}x{side * patch[1]}"
    slots = "" if not prefix or not covers else "1 [CLS] + " if prefix == 1 else f"{prefix} prefix tokens + "
    fits = f"{slots}a {side}x{side} grid of {_size_text(patch)}-px patches"
    if given_by is None:
        return f"{head}; {entries} entries are {fits}, {saved} px: the file is inconsistent"
    return f"{head}; {entries} entries are {fits}, so the file was saved at {saved} px: " + _ask_image_size(
        source, variant, flags, str(saved))


def _no_variant_fits(source: str, variant: str, flags: Flags) -> str:
    """The way out when a variant's sizes do not fit: --heads, or (a command without it) `vit convert` first."""
    if flags.heads:
        return f"; give the variant that fits, or {flags.heads} for a model no variant describes"
    return f"; give the variant that fits, or for a model no variant describes {flags.convert_first(source, '--heads N', '--heads')}"


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        return value[0]
    return tuple(value) if isinstance(value, list) else value


def from_timm(
    arrays: dict[str, np.ndarray],
    metadata: Mapping[str, str],
    source: str,
    *,
    variant: str | None = None,
    heads: int | None = None,
    source_image_size: int | tuple[int, int] | None = None,
    flags: Flags = CONVERT_FLAGS,
    activation: str | None = None,
) -> Checkpoint:
    """A timm VisionTransformer state dict (numpy) -> Checkpoint; `flags` name the caller's flags in messages."""
    if not is_timm_state_dict(arrays) and not is_timm_state_dict({k[len("module."):]: 0 for k in arrays}):
        raise FormatError(
            f"{source} is not a timm VisionTransformer state dict: expected patch_embed.proj.weight and blocks.N.*, "
            f"found {describe_keys(arrays)}"
        )
    notes: list[str] = []
    if arrays and all(k.startswith("module.") for k in arrays):  # saved from DistributedDataParallel
        arrays = {k[len("module."):]: v for k, v in arrays.items()}
        notes.append("stripped the prefix 'module.' from every name")
    known: dict[str, Any] = {}
    if METADATA_KEY in metadata:
        recorded = json.loads(metadata[METADATA_KEY])
        if "config" in recorded:  # written by this project: the whole config
            config = build_config(recorded["config"], source)
            check_layout(config, arrays, source)
            if variant or heads or source_image_size:
                notes.append(f"{flags.variant}/{flags.heads} ignored: {source} records its whole config (written by vit "
                             "convert --to timm)")
            if activation is not None and activation != config.activation:
                raise FormatError(f"{source} records activation={config.activation!r}; --activation {activation} "
                                  "would compute something else")
            return Checkpoint(config, arrays, "timm", {}, notes)
        kwargs = recorded["kwargs"]  # written before the architecture features: a standard ViT's kwargs
        known = dict(
            heads=kwargs["num_heads"],
            image_size=kwargs["img_size"] if isinstance(kwargs["img_size"], int) else tuple(kwargs["img_size"]),
            layer_norm_eps=recorded["layer_norm_eps"],
            gelu="tanh" if kwargs.get("act_layer") == "gelu_tanh" else "exact",
            image_mean=tuple(recorded["image_mean"]),
            image_std=tuple(recorded["image_std"]),
        )
    config, arrays, assumed, more, given = config_from_shared_layout(
        arrays, source, variant=variant, heads=heads, source_image_size=source_image_size, known=known, flags=flags,
        activation=activation,
    )
    return Checkpoint(config, arrays, "timm", assumed, notes + more, given)


_POOL = {"cls": "token", "mean": "avg", "map": "map", "none": ""}
_MLP_LAYER = {"swiglu_packed": "SwiGLUPacked", "swiglu": "SwiGLU", "geglu": "GluMlp"}
_ACT = {"quick_gelu": "quick_gelu", "silu": "silu"}


def _mlp_ratio(config: ViTConfig) -> float:
    """timm's mlp_ratio: its blocks' fc1 width is int(embed_dim * mlp_ratio) (both halves of a packed gated MLP)."""
    hidden = config.mlp_fc1_dim
    ratio = hidden / config.width
    if int(config.width * ratio) != hidden:  # rounding down below the width: aim at its middle
        ratio = (hidden + 0.5) / config.width
    return ratio


def timm_constructor(config: ViTConfig) -> tuple[str, list[tuple[str, str]], list[str]]:
    """(timm class, [(keyword, Python source of its value)], import lines) of the timm model that computes
    `config` and loads its state dict with strict=True; only keywords that differ from timm's defaults beyond the
    sizes. The one mapping of ViTConfig to timm's VisionTransformer (parity_tests.peers.timm_kwargs evaluates it)."""
    if config.representation_size:
        raise UnsupportedModelError(
            f"timm's VisionTransformer has no pre-logits layer, but this model has representation_size="
            f"{config.representation_size}; convert with --num-classes N --drop-representation for a new head, "
            "or use --to vit/npz"
        )
    image, patch = config.image_hw, config.patch_hw
    kw: list[tuple[str, str]] = [
        ("img_size", repr(image[0] if image[0] == image[1] else image)),
        ("patch_size", repr(patch[0] if patch[0] == patch[1] else patch)),
        ("in_chans", repr(config.channels)),
        ("num_classes", repr(config.num_classes)),
        ("embed_dim", repr(config.width)),
        ("depth", repr(config.depth)),
        ("num_heads", repr(config.heads)),
        ("mlp_ratio", repr(_mlp_ratio(config))),
    ]
    imports = ["import functools", "import safetensors.torch", "import torch"]
    layers: list[str] = []
    if not config.qkv_bias:
        kw.append(("qkv_bias", "False"))
    if config.qk_norm:
        kw.append(("qk_norm", "True"))
    if config.mlp_norm:
        kw.append(("scale_mlp_norm", "True"))
    if config.attn_norm:
        kw.append(("scale_attn_norm", "True"))
    if not config.proj_bias:
        kw.append(("proj_bias", "False"))
    if config.layer_scale_init:
        kw.append(("init_values", repr(config.layer_scale_init)))
    if not config.has_class_token:
        kw.append(("class_token", "False"))
    if config.reg_tokens:
        kw.append(("reg_tokens", repr(config.reg_tokens)))
    if not config.pos_embed_covers_prefix:
        kw.append(("no_embed_class", "True"))
    if config.pre_norm:
        kw.append(("pre_norm", "True"))
    if config.pool != "cls":
        kw.append(("global_pool", repr(_POOL[config.pool])))
    if config.pool_include_prefix:
        kw.append(("pool_include_prefix", "True"))
    if config.final_norm == "none":
        kw.append(("final_norm", "False"))
    elif (config.final_norm == "pooled") != (config.pool == "mean"):  # timm's fc_norm=None: fc_norm for avg pooling
        kw.append(("fc_norm", repr(config.final_norm == "pooled")))
    for name, rate in (("pos_drop_rate", config.dropout), ("proj_drop_rate", config.dropout),
                       ("attn_drop_rate", config.attention_dropout), ("drop_path_rate", config.drop_path)):
        if rate:
            kw.append((name, repr(rate)))
    norm_layer = f"functools.partial({'RmsNorm' if config.norm == 'rms' else 'LayerNorm'}, eps={config.layer_norm_eps!r})"
    if config.norm == "rms" or config.layer_norm_eps != 1e-6:
        layers.append("RmsNorm" if config.norm == "rms" else "LayerNorm")
        kw.append(("norm_layer", norm_layer))
    if config.patch_norm:  # the same norm as the blocks' (AIMv2's RmsNorm), named apart by timm
        layers.append("RmsNorm" if config.norm == "rms" else "LayerNorm")
        kw.append(("embed_norm_layer", norm_layer))
    if config.activation != "gelu":
        kw.append(("act_layer", repr(_ACT[config.activation])))
    elif config.gelu == "tanh":
        kw.append(("act_layer", "'gelu_tanh'"))
    if config.mlp != "plain":
        layers.append(_MLP_LAYER[config.mlp])
        kw.append(("mlp_layer", _MLP_LAYER[config.mlp]))
    if config.patch_bias != (not config.pre_norm):  # timm builds the patch bias exactly when there is no pre_norm
        layers.append("PatchEmbed")
        kw.append(("embed_layer", f"lambda **kw: PatchEmbed(**{{**kw, 'bias': {config.patch_bias!r}}})"))
    if layers:
        imports.append(f"from timm.layers import {', '.join(sorted(set(layers)))}")
    cls = "VisionTransformerDistilled" if config.distilled else "VisionTransformer"
    imports.append(f"from timm.models.{'deit' if config.distilled else 'vision_transformer'} import {cls}")
    return cls, kw, imports


def timm_snippet(config: ViTConfig, path: str) -> str:
    """Python that builds the matching timm model and loads `path` into it with strict=True."""
    cls, kw, imports = timm_constructor(config)
    args = ", ".join(f"{name}={source}" for name, source in kw)
    return "\n".join(imports + [
        f"model = {cls}({args})",
        f"model.load_state_dict(safetensors.torch.load_file({path!r}), strict=True)",
    ])


def to_timm(checkpoint: Checkpoint) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    """Checkpoint -> (timm state dict, safetensors metadata, notes). The arrays are unchanged."""
    config = checkpoint.config
    cls, kw, _ = timm_constructor(config)
    notes = []
    if config.pos_embed == "sincos2d":
        notes.append("the fixed sin-cos position table is stored as timm's (learned) pos_embed; it computes the same")
    if config.layer_norm_eps != 1e-6:
        notes.append(f"timm's default norm eps is 1e-6; build the model with eps={config.layer_norm_eps} (see the snippet)")
    recorded = dict(config=config.to_dict(), constructor=dict(cls=cls, kwargs=dict(kw)))
    metadata = {"format": "pt", METADATA_KEY: json.dumps(recorded, sort_keys=True)}
    return dict(checkpoint.state_dict), metadata, notes
