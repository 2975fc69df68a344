"""timm's `VisionTransformer` state dict <-> the shared layout.

The names and layouts are the shared layout itself, so the work is the config: a timm state dict
records every size but the number of heads, and nothing of LayerNorm epsilon, GELU or input
normalisation. Those come from `--variant` (this project's name or timm's), `--heads`, or, for
files this project wrote, the "vit_timm" metadata; what is still unknown is assumed to be timm's
default (eps 1e-6, exact GELU) and reported. timm models this project's ViT cannot compute (layer
scale, qk-norm, register tokens, a MAP head, normalising after pooling, ...) are refused by name.
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

METADATA_KEY = "vit_timm"  # JSON with the VisionTransformer kwargs and the facts timm's kwargs cannot carry

# Keys of timm models that compute something this project's ViT does not, and what each means.
_UNSUPPORTED = (
    (r"fc_norm\.", "normalises after pooling (fc_norm, timm's default for global_pool='avg'), while this project's "
                   "mean pooling normalises every token first (timm's fc_norm=False)"),
    (r"norm_pre\.", "has a LayerNorm before the blocks (pre_norm, as CLIP)"),
    (r"reg_token$", "has register tokens"),
    (r"dist_token$|head_dist\.", "has a distillation token (DeiT)"),
    (r"blocks\.\d+\.ls\d\.", "uses layer scale (init_values)"),
    (r"blocks\.\d+\.attn\.[qk]_norm\.", "normalises queries and keys (qk_norm)"),
    (r"blocks\.\d+\.attn\.norm\.|blocks\.\d+\.mlp\.norm\.", "has norms inside attention or the MLP"),
    (r"blocks\.\d+\.mlp\.(fc1_g|fc1_x|w12|w3)\.", "has a gated MLP (SwiGLU)"),
    (r"attn_pool\.", "pools with attention (a MAP head, global_pool='map')"),
    (r"patch_embed\.backbone\.", "is a hybrid with a CNN stem"),
)
_VIT_KEYS = ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight")
# What a bare timm state dict leaves out, and what timm's VisionTransformer uses when not told.
TIMM_DEFAULTS = {
    "layer_norm_eps": (1e-6, "not recorded in a timm state dict; timm's default"),
    "gelu": ("exact", "not recorded in a timm state dict; timm's default nn.GELU"),
    "image_mean": (IMAGENET_MEAN_STD[0], "not recorded in a timm state dict; ImageNet's (timm's IMAGENET_DEFAULT_MEAN)"),
    "image_std": (IMAGENET_MEAN_STD[1], "not recorded in a timm state dict; ImageNet's (timm's IMAGENET_DEFAULT_STD)"),
}


def is_timm_state_dict(arrays: Mapping[str, np.ndarray]) -> bool:
    return all(k in arrays for k in _VIT_KEYS)


def describe_keys(arrays: Mapping[str, Any], n: int = 6) -> str:
    keys = list(arrays)
    shown = ", ".join(f"{k} {tuple(np.shape(arrays[k]))}" for k in keys[:n])
    return f"{len(keys)} tensors: {shown}" + (", ..." if len(keys) > n else "")


def _refuse_unsupported(arrays: Mapping[str, np.ndarray], source: str) -> None:
    for pattern, what in _UNSUPPORTED:
        found = [k for k in arrays if re.match(pattern, k)]
        if found:
            raise UnsupportedModelError(
                f"{source} is a timm model that {what} ({found[0]!r}); this project's ViT cannot compute that"
            )
    for name, what in (
        ("pos_embed", "has no position embedding (pos_embed='none')"),
        ("patch_embed.proj.bias", "has a patch embedding without bias (pre_norm, as CLIP)"),
        ("blocks.0.attn.proj.bias", "has an attention projection without bias (proj_bias=False)"),
        ("norm.weight", "has no final norm (final_norm=False or fc_norm)"),
    ):
        if name not in arrays:
            raise UnsupportedModelError(f"{source} is a timm model that {what}; this project's ViT cannot compute that")


def _shape(arrays: Mapping[str, np.ndarray], name: str) -> tuple[int, ...]:
    return tuple(np.shape(arrays[name]))


def _square(n: int) -> int | None:
    side = math.isqrt(max(n, 0))
    return side if side * side == n else None


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
) -> tuple[ViTConfig, dict[str, np.ndarray], dict[str, str], list[str], dict[str, str]]:
    """The config of a shared-layout (timm-named) state dict, from its shapes plus what is given.

    Args:
        arrays: the state dict, timm names.
        source: how to name the file in messages.
        variant: --variant; every size it fixes must match the tensors. A name's image size (timm's names
            have one) is where it was pretrained: --source-image-size, or a size the source records, replaces it.
        heads: --heads, for models no variant describes.
        source_image_size: --source-image-size, the image size the position table was trained for,
            needed only when its grid is not square (a state dict does not record it) or not the variant's.
        known: fields the source records elsewhere (e.g. Hugging Face's config.json, our timm metadata);
            these are not "assumed".
        defaults: field -> (value, why) for ASSUMABLE_FIELDS neither known nor fixed by the variant;
            timm's defaults where not given.
        flags: the calling command's names for variant, heads and source_image_size, for the messages.

    Returns:
        (config, arrays, assumed, notes, given); arrays may gain a zero [CLS] position slot (no_embed_class);
        `given`: Checkpoint.given, the architecture fields taken from variant, heads or source_image_size.
    """
    known = dict(known or {})
    _refuse_unsupported(arrays, source)
    proj = _shape(arrays, "patch_embed.proj.weight")
    if len(proj) != 4:
        raise FormatError(
            f"{source}: patch_embed.proj.weight has shape {proj}; a Conv2d weight (width, channels, kh, kw) was expected"
        )
    width, channels, ph, pw = proj
    depth = 0
    while f"blocks.{depth}.attn.qkv.weight" in arrays:
        depth += 1
    mlp_dim = _shape(arrays, "blocks.0.mlp.fc1.weight")[0] if "blocks.0.mlp.fc1.weight" in arrays else None
    if mlp_dim is None:
        raise FormatError(f"{source}: blocks.0.mlp.fc1.weight is missing; found {describe_keys(arrays)}")
    has_cls = "cls_token" in arrays
    fields: dict[str, Any] = dict(
        patch_size=ph if ph == pw else (ph, pw),
        channels=channels,
        width=width,
        depth=depth,
        mlp_dim=mlp_dim,
        qkv_bias="blocks.0.attn.qkv.bias" in arrays,
        pool="cls" if has_cls else "mean",
        num_classes=_shape(arrays, "head.weight")[0] if "head.weight" in arrays else 0,
        representation_size=_shape(arrays, "pre_logits.fc.weight")[0] if "pre_logits.fc.weight" in arrays else None,
    )
    assumed: dict[str, str] = {}
    notes: list[str] = []

    given: dict[str, Any] = {}
    origin: dict[str, str] = {}  # field of `given` -> the flag that gave it, for the messages
    by_name = f"{flags.variant} {variant}"
    if variant:
        v = resolve_variant(variant, flags, source)
        given.update(v.fields)
        origin.update(dict.fromkeys(v.fields, by_name))
        wrong = [n for n in ("width", "depth", "mlp_dim", "patch_size") if _norm(v.fields[n]) != _norm(fields[n])]
        if wrong:
            found = "; ".join(f"{n}={fields[n]} ({_evidence(n, arrays, depth)})" for n in wrong)
            expected = ", ".join(f"{n}={v.fields[n]}" for n in wrong)
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
    fields["heads"] = merged["heads"]
    for name in ("dropout", "attention_dropout", "drop_path"):
        if name in merged:
            fields[name] = merged[name]

    # The patch grid, from the position table (square unless the source says otherwise).
    pos = _shape(arrays, "pos_embed")
    if len(pos) != 3 or pos[0] != 1 or pos[2] != width:
        raise FormatError(f"{source}: pos_embed has shape {pos}; (1, tokens, {width}) was expected")
    prefix = 1 if has_cls else 0
    image_size = merged.get("image_size")
    side = _square(pos[1] - prefix)  # the square grid the table holds, if it is one
    if side is None and has_cls and _square(pos[1]):
        side = _square(pos[1])  # no_embed_class: no [CLS] slot
    if image_size is not None:
        ih, iw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if ih % ph or iw % pw:
            raise FormatError(f"{source}: image size {image_size} is not a multiple of the patch size {(ph, pw)}")
        grid = (ih // ph, iw // pw)
    else:
        if side is None:
            raise FormatError(
                f"{source}: pos_embed has {pos[1]} entries, which is not a square grid{' plus [CLS]' if has_cls else ''}; "
                "give the image size it was saved at: " + _ask_image_size(source, variant, flags, "HxW")
            )
        grid = (side, side)
    n = grid[0] * grid[1]
    if has_cls and pos[1] == n:
        # timm's no_embed_class / big_vision's "tok": the [CLS] token gets no position. A zero slot computes the same.
        arrays = dict(arrays)
        arrays["pos_embed"] = np.concatenate([np.zeros((1, 1, width), arrays["pos_embed"].dtype), arrays["pos_embed"]], 1)
        notes.append("the [CLS] token has no position embedding in the source (no_embed_class); a zero slot was added, which computes the same")
    elif pos[1] != n + prefix:
        raise FormatError(_grid_mismatch(
            source, pos[1], grid, has_cls, image_size, None if "image_size" in known else origin["image_size"],
            side, (ph, pw), variant, flags,
        ))
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
    source: str, entries: int, grid: tuple[int, int], has_cls: bool, image_size: Any, given_by: str | None,
    side: int | None, patch: tuple[int, int], variant: str | None, flags: Flags,
) -> str:
    """The message for a position table that does not fit the image size the file records or was given
    (`given_by`: the flag that gave it; None: the file records it), with the size that does fit, if any."""
    n = grid[0] * grid[1]
    cls = " plus [CLS]" if has_cls else ""
    where = f"from {given_by}" if given_by else f"as {source} records it"
    head = (f"{source}: pos_embed has {entries} entries, but image size {_size_text(image_size)} ({where}) "
            f"with patch size {_size_text(patch)} makes a {grid[0]}x{grid[1]} grid{cls}, {n + (1 if has_cls else 0)} entries")
    if side is None:
        if given_by is None:
            return head + "; the file is inconsistent"
        return (f"{head}, and {entries} is no square grid{cls}; give the image size it was saved at: "
                + _ask_image_size(source, variant, flags, "HxW"))
    saved = side * patch[0] if patch[0] == patch[1] else f"{side * patch[0]}x{side * patch[1]}"
    fits = f"{'1 [CLS] + ' if has_cls and entries != side * side else ''}a {side}x{side} grid of {_size_text(patch)}-px patches"
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


def _evidence(name: str, arrays: Mapping[str, np.ndarray], depth: int) -> str:
    if name in ("width", "patch_size"):
        return f"patch_embed.proj.weight has shape {_shape(arrays, 'patch_embed.proj.weight')}"
    if name == "mlp_dim":
        return f"blocks.0.mlp.fc1.weight has shape {_shape(arrays, 'blocks.0.mlp.fc1.weight')}"
    return f"blocks.0 to blocks.{depth - 1}"


def from_timm(
    arrays: dict[str, np.ndarray],
    metadata: Mapping[str, str],
    source: str,
    *,
    variant: str | None = None,
    heads: int | None = None,
    source_image_size: int | tuple[int, int] | None = None,
    flags: Flags = CONVERT_FLAGS,
) -> Checkpoint:
    """A timm VisionTransformer state dict (numpy) -> Checkpoint; `flags` name the caller's flags in messages."""
    if not is_timm_state_dict(arrays) and not is_timm_state_dict({k[len("module."):]: 0 for k in arrays}):
        raise FormatError(
            f"{source} is not a timm VisionTransformer state dict: expected {list(_VIT_KEYS)} and blocks.N.*, "
            f"found {describe_keys(arrays)}"
        )
    notes: list[str] = []
    if arrays and all(k.startswith("module.") for k in arrays):  # saved from DistributedDataParallel
        arrays = {k[len("module."):]: v for k, v in arrays.items()}
        notes.append("stripped the prefix 'module.' from every name")
    known: dict[str, Any] = {}
    if METADATA_KEY in metadata:
        recorded = json.loads(metadata[METADATA_KEY])
        kwargs = recorded["kwargs"]
        known = dict(
            heads=kwargs["num_heads"],
            image_size=kwargs["img_size"] if isinstance(kwargs["img_size"], int) else tuple(kwargs["img_size"]),
            layer_norm_eps=recorded["layer_norm_eps"],
            gelu="tanh" if kwargs.get("act_layer") == "gelu_tanh" else "exact",
            image_mean=tuple(recorded["image_mean"]),
            image_std=tuple(recorded["image_std"]),
        )
    config, arrays, assumed, more, given = config_from_shared_layout(
        arrays, source, variant=variant, heads=heads, source_image_size=source_image_size, known=known, flags=flags
    )
    return Checkpoint(config, arrays, "timm", assumed, notes + more, given)


def timm_kwargs(config: ViTConfig) -> dict[str, Any]:
    """JSON-able keyword arguments of timm's VisionTransformer for `config` (LayerNorm eps aside: see timm_snippet)."""
    if config.representation_size:
        raise UnsupportedModelError(
            f"timm's VisionTransformer has no pre-logits layer, but this model has representation_size="
            f"{config.representation_size}; convert with --num-classes N --drop-representation for a new head, "
            "or use --to vit/npz"
        )
    ratio = config.mlp_dim / config.width
    if int(config.width * ratio) != config.mlp_dim:
        raise UnsupportedModelError(
            f"timm computes the MLP width as int(width * mlp_ratio), which cannot give mlp_dim={config.mlp_dim} "
            f"for width={config.width}"
        )
    image, patch = config.image_hw, config.patch_hw
    kwargs: dict[str, Any] = dict(
        img_size=image[0] if image[0] == image[1] else list(image),
        patch_size=patch[0] if patch[0] == patch[1] else list(patch),
        in_chans=config.channels,
        num_classes=config.num_classes,
        embed_dim=config.width,
        depth=config.depth,
        num_heads=config.heads,
        mlp_ratio=ratio,
        qkv_bias=config.qkv_bias,
        class_token=config.pool == "cls",
        global_pool="token" if config.pool == "cls" else "avg",
        fc_norm=False,  # this project normalises every token before pooling
        pos_drop_rate=config.dropout,
        proj_drop_rate=config.dropout,
        attn_drop_rate=config.attention_dropout,
        drop_path_rate=config.drop_path,
    )
    if config.gelu == "tanh":
        kwargs["act_layer"] = "gelu_tanh"
    return kwargs


def timm_snippet(config: ViTConfig, path: str) -> str:
    """Python that builds the matching timm model and loads `path` into it with strict=True."""
    kwargs = ", ".join(f"{k}={v!r}" for k, v in timm_kwargs(config).items())
    norm = ""
    if config.layer_norm_eps != 1e-6:
        norm = f", norm_layer=functools.partial(torch.nn.LayerNorm, eps={config.layer_norm_eps!r})"
    return (
        f"model = timm.models.vision_transformer.VisionTransformer({kwargs}{norm})\n"
        f"model.load_state_dict(safetensors.torch.load_file({path!r}), strict=True)"
    )


def to_timm(checkpoint: Checkpoint) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    """Checkpoint -> (timm state dict, safetensors metadata, notes). The arrays are unchanged."""
    config = checkpoint.config
    kwargs = timm_kwargs(config)
    notes = []
    if config.pos_embed == "sincos2d":
        notes.append("the fixed sin-cos position table is stored as timm's (learned) pos_embed; it computes the same")
    if config.layer_norm_eps != 1e-6:
        notes.append(f"timm's default LayerNorm eps is 1e-6; build the model with eps={config.layer_norm_eps} (see the snippet)")
    recorded = dict(
        kwargs=kwargs,
        layer_norm_eps=config.layer_norm_eps,
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
    )
    metadata = {"format": "pt", METADATA_KEY: json.dumps(recorded, sort_keys=True)}
    return dict(checkpoint.state_dict), metadata, notes
