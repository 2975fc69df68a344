"""Reading any supported checkpoint into the shared layout, and writing it out in any writable format.

Formats:
    vit         this project's .safetensors (weights + ViTConfig in the metadata)      read, write
    timm        timm VisionTransformer(Distilled) state dict (.safetensors, .pth, .bin) read, write (.safetensors)
    hf          Hugging Face ViTModel / ViTForImageClassification: a model directory,
                or a state-dict file                                                 read, write (a directory)
    npz         google-research/vision_transformer .npz                               read, write
    big_vision  big_vision ViT .npz                                                    read
The format is detected from the file's content; `fmt` states it, and a file that does not look like
the stated format is refused with what it looks like instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from vit_spec.config import ConfigError, ViTConfig
import vit_spec.formats.big_vision as big_vision
import vit_spec.formats.google_npz as google_npz
import vit_spec.formats.hf as hf
import vit_spec.formats.timm as timm
from vit_spec.formats.adapt import adapt_checkpoint, missing_params
from vit_spec.formats.checkpoint import Checkpoint, apply_overrides, check_layout
from vit_spec.formats.errors import FormatError
from vit_spec.formats.flags import CONVERT_FLAGS, Flags
from vit_spec.formats.tensor_files import read_tensor_file, write_npz, write_safetensors
from vit_spec.layout import check_finite
from vit_spec.weights_file import FORMAT_NAME, save_weights

FORMATS = ("vit", "timm", "hf", "npz", "big_vision")
WRITABLE_FORMATS = ("vit", "timm", "hf", "npz", "big_vision")
_DESCRIPTION = {
    "vit": "this project's .safetensors",
    "timm": "a timm VisionTransformer state dict",
    "hf": "a Hugging Face ViT",
    "npz": "a google-research/vision_transformer .npz",
    "big_vision": "a big_vision ViT .npz",
}

logger = logging.getLogger("vit_spec.formats")


def _content_format(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> str | None:
    if "vit_config" in metadata or metadata.get("format") == FORMAT_NAME:
        return "vit"
    if timm.is_timm_state_dict(arrays) or timm.is_timm_state_dict({k[len("module."):]: 0 for k in arrays}):
        return "timm"
    if hf.is_hf_state_dict(arrays):
        return "hf"
    if google_npz.is_google_npz(arrays):
        return "npz"
    if big_vision.is_big_vision(arrays):
        return "big_vision"
    return None


def _not_a_vit(path: Path, arrays: Mapping[str, np.ndarray]) -> FormatError:
    return FormatError(
        f"{path} is not a ViT checkpoint in any supported format: expected timm names (patch_embed.proj.weight, "
        "blocks.N.attn.qkv.weight), Hugging Face names (embeddings.patch_embeddings.projection.weight, "
        "encoder.layer.N...), or a Flax tree (embedding/kernel, Transformer/encoderblock_N/...); "
        f"found {timm.describe_keys(arrays)}"
    )


def detect_format(path: str | os.PathLike) -> str:
    """The format of the checkpoint at `path` (one of FORMATS), from its content."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_dir():
        return "hf"
    arrays, metadata, _ = read_tensor_file(path)
    found = _content_format(arrays, metadata)
    if found is None:
        raise _not_a_vit(path, arrays)
    return found


def read_checkpoint(
    path: str | os.PathLike,
    fmt: str | None = None,
    *,
    variant: str | None = None,
    heads: int | None = None,
    source_image_size: int | Sequence[int] | None = None,
    pool_type: str | None = None,
    image_size: int | Sequence[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    flags: Flags = CONVERT_FLAGS,
) -> Checkpoint:
    """Reads a checkpoint into the shared layout, as the source computes it (no resizing, same head).

    Args:
        path: a file, or a Hugging Face model directory.
        fmt: one of FORMATS; None detects it.
        variant: for sources that do not record their config (timm, bare HF state dicts): this project's
            variant ("S/16") or a timm model name ("vit_small_patch16_224"); checked against the tensors.
        heads: the number of attention heads, for such sources when no variant describes them.
        source_image_size: the image size a timm/HF state dict, npz or big_vision file was trained at;
            needed only when its position table is not a square grid (square is assumed otherwise).
        pool_type: big_vision's pool_type, when not to be inferred.
        image_size: the image size to read a big_vision sincos2d checkpoint at (it records none); else unused
            here (resizing is adapt_checkpoint's).
        overrides: values for fields the source does not record (gelu, layer_norm_eps, image_mean,
            image_std; activation, for a timm state dict); contradicting a recorded value is an error.
        flags: the calling command's names for variant, heads, source_image_size, ..., which messages that ask
            for them name (default `vit convert`'s; `vit train --init-from` has its own).
    """
    path = Path(path)
    if source_image_size is not None and not isinstance(source_image_size, int):
        source_image_size = tuple(int(s) for s in source_image_size)
    if fmt is not None and fmt not in FORMATS:
        raise FormatError(f"unknown format {fmt!r}: use one of {FORMATS}")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    source = str(path)
    overrides = dict(overrides or {})
    activation = overrides.pop("activation", None)
    if path.is_dir():
        if fmt not in (None, "hf"):
            raise FormatError(f"{path} is a directory; only the hf format is a directory (--from {fmt} needs a file)")
        checkpoint = hf.read_hf(path, variant=variant, heads=heads, source_image_size=source_image_size, flags=flags)
    else:
        arrays, metadata, notes = read_tensor_file(path)
        found = _content_format(arrays, metadata)
        if found is None:
            raise _not_a_vit(path, arrays)
        if fmt == "npz" and found == "big_vision":
            fmt = "big_vision"  # "npz" names both Google layouts when reading
        if fmt is not None and fmt != found:
            raise FormatError(
                f"--from {fmt} expects {_DESCRIPTION[fmt]}, but {path} looks like {_DESCRIPTION[found]} "
                f"(found {timm.describe_keys(arrays, 3)}); use --from {found} or leave --from out"
            )
        if found == "vit":
            checkpoint = _read_vit(arrays, metadata, source)
        elif found == "timm":
            checkpoint = timm.from_timm(
                arrays, metadata, source, variant=variant, heads=heads, source_image_size=source_image_size, flags=flags,
                activation=activation,
            )
        elif found == "hf":
            checkpoint = hf.read_hf(
                path, variant=variant, heads=heads, source_image_size=source_image_size, arrays=arrays, flags=flags
            )
        elif found == "npz":
            checkpoint = google_npz.from_google(arrays, source, source_image_size, flags)
        else:
            size = image_size if image_size is None or isinstance(image_size, int) else tuple(image_size)
            checkpoint = big_vision.from_big_vision(
                arrays, source, pool_type=pool_type, source_image_size=source_image_size, sincos_image_size=size,
                flags=flags,
            )
        checkpoint.notes[:0] = notes
    # Here, not in each reader: `vit convert` and `vit train --init-from` both come through, and only the
    # model's tensors are checked (a file may carry others), under the names the error can show.
    renamed = checkpoint.fmt not in ("vit", "timm")
    check_finite(checkpoint.state_dict, f"{source} (tensors named as in timm)" if renamed else source)
    if checkpoint.fmt in ("vit", "npz", "big_vision") and (variant or heads):
        given = "/".join(f for f, v in ((flags.variant, variant), (flags.heads, heads)) if v and f) or flags.variant
        checkpoint.notes.append(f"{given} ignored: {_DESCRIPTION[checkpoint.fmt]} records its own architecture")
    if checkpoint.fmt == "vit" and source_image_size:
        checkpoint.notes.append(f"{flags.source_image_size or 'source_image_size'} ignored: this project's files "
                                "record their image size")
    if activation is not None and checkpoint.fmt != "timm" and activation != checkpoint.config.activation:
        raise FormatError(f"{source} records activation={checkpoint.config.activation!r} ({_DESCRIPTION[checkpoint.fmt]}); "
                          "--activation is for timm state dicts, which do not record it")
    if pool_type is not None and checkpoint.fmt != "big_vision":
        raise FormatError(f"--pool-type is for big_vision checkpoints; {path} is {_DESCRIPTION[checkpoint.fmt]}")
    return apply_overrides(checkpoint, overrides, source)


def _read_vit(arrays: dict[str, np.ndarray], metadata: Mapping[str, str], source: str) -> Checkpoint:
    try:
        config = ViTConfig.from_json(metadata["vit_config"])
    except (KeyError, ConfigError) as e:
        raise FormatError(f"{source}: its ViT config metadata is missing or invalid: {e}") from None
    check_layout(config, arrays, source)
    return Checkpoint(config, arrays, "vit")


def write_checkpoint(
    checkpoint: Checkpoint, path: str | os.PathLike, fmt: str, *, accept_mismatch: bool = False
) -> list[str]:
    """Writes a complete checkpoint in `fmt` (one of WRITABLE_FORMATS); returns notes on what the target could not say.

    Files are written atomically. "hf" writes a directory; the others one file whose suffix must fit.
    """
    path = Path(path)
    if fmt not in WRITABLE_FORMATS:
        why = " (big_vision is read only: write npz, Google's vision_transformer layout)" if fmt == "big_vision" else ""
        raise FormatError(f"cannot write {fmt!r}{why}: use one of {WRITABLE_FORMATS}")
    missing = missing_params(checkpoint.config, checkpoint.state_dict)
    if missing:
        raise FormatError(f"the checkpoint lacks {missing}: initialise the new head first (vit_spec.formats.init_head)")
    check_layout(checkpoint.config, checkpoint.state_dict, "the checkpoint to write")
    suffix = path.suffix.lower()
    wanted = {"vit": ".safetensors", "timm": ".safetensors", "npz": ".npz", "big_vision": ".npz"}
    if fmt in wanted and suffix != wanted[fmt]:
        extra = " (timm reads .safetensors: safetensors.torch.load_file)" if fmt == "timm" else ""
        raise FormatError(f"--to {fmt} writes a {wanted[fmt]} file, but the destination is {path}{extra}")
    if fmt == "hf" and suffix in (".safetensors", ".bin", ".pth", ".npz"):
        raise FormatError(f"--to hf writes a model directory (config.json, model.safetensors, ...), not a {suffix} file: {path}")
    if fmt == "vit":
        save_weights(path, checkpoint.config, checkpoint.state_dict)
        return []
    if fmt == "timm":
        arrays, metadata, notes = timm.to_timm(checkpoint)
        write_safetensors(path, arrays, metadata)
        return notes
    if fmt == "hf":
        return hf.write_hf(path, checkpoint)
    if fmt == "big_vision":
        arrays, notes = big_vision.to_big_vision(checkpoint, accept_mismatch=accept_mismatch)
        write_npz(path, arrays)
        return notes
    arrays, notes = google_npz.to_google(checkpoint, accept_mismatch=accept_mismatch)
    write_npz(path, arrays)
    return notes


def load_checkpoint(
    path: str | os.PathLike,
    fmt: str | None = None,
    *,
    variant: str | None = None,
    heads: int | None = None,
    source_image_size: int | Sequence[int] | None = None,
    image_size: int | Sequence[int] | None = None,
    num_classes: int | None = None,
    keep_representation: bool = True,
    resample: str = "bicubic",
    antialias: bool = True,
    pool_type: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    flags: Flags = CONVERT_FLAGS,
) -> tuple[ViTConfig, dict[str, np.ndarray]]:
    """Any supported checkpoint -> (config, shared-layout state dict), at `image_size` with `num_classes`.

    The one entry point for fine-tuning (`vit train --init-from`). read_checkpoint's arguments, then:

    Args:
        image_size: None keeps the checkpoint's; otherwise the position table is resampled
            (`resample`, `antialias`: see vit_spec.resample; defaults as timm's) or recomputed (sincos2d).
        num_classes: None keeps the checkpoint's head.
        keep_representation: False drops the pre-logits layer (representation_size -> None).

    Returns:
        (config, state_dict): numpy arrays in the source's dtype, named and shaped as
        vit_spec.layout.param_shapes(config) says, except that when the head changed (a new class
        count, or a dropped pre-logits layer) "head.weight" and "head.bias" are absent, for the caller to
        initialise (vit_spec.formats.init_head, or its own init). Every assumption and change is
        logged to the "vit_spec.formats" logger at INFO; use read_checkpoint + adapt_checkpoint to
        get them as a list.
    """
    checkpoint = read_checkpoint(
        path, fmt, variant=variant, heads=heads, source_image_size=source_image_size, pool_type=pool_type,
        image_size=image_size, overrides=overrides, flags=flags,
    )
    checkpoint = adapt_checkpoint(checkpoint, image_size, num_classes, keep_representation, resample, antialias)
    for message in checkpoint.messages():
        logger.info("%s: %s", path, message)
    return checkpoint.config, checkpoint.state_dict
