"""`vit train --init-from FILE`: start from weights in any format `vit convert` reads.

The checkpoint decides the architecture and the input normalisation; the dataset decides the image
size (the position embedding is resampled, as timm does) and the number of classes (a new head,
zero-initialised as big_vision fine-tunes); the recipe adds its regularisation: a dropout or drop_path rate
that a flag (zero included) or the recipe sets (recipes.resolve's model_overrides) replaces the checkpoint's, one
that neither sets stays the checkpoint's, as does its attention dropout (recipes.as_trained reports them).

The converters' messages name `vit train`'s flags (INIT_FROM_FLAGS): --init-variant for what the file does not
record; what only `vit convert` can say (--heads, --source-image-size, ...) is asked for through it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping, Sequence

import numpy as np

from vit_spec import ViTConfig, read_class_names
from vit_spec.formats import HEAD_PARAMS, Checkpoint, Flags, adapt_checkpoint, missing_params, read_checkpoint

# `vit train`'s names for what a checkpoint may not record: only --init-variant.
INIT_FROM_FLAGS = Flags(command="vit train", source="--init-from", variant="--init-variant", heads=None,
                        source_image_size=None, image_mean_std=None, image_size=None)

logger = logging.getLogger("vit_spec.formats")


@dataclasses.dataclass(frozen=True)
class FinetuneStart:
    """What fine-tuning starts from: the model, its weights, what they lack, and the line that says so."""

    config: ViTConfig
    state_dict: dict[str, np.ndarray]  # float32, timm names
    missing: list[str]  # parameters the trainer initialises (a new head)
    summary: str  # one line: what was loaded, and how it was adapted


def finetune_checkpoint(
    path: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    overrides: Mapping[str, Any] = (),
    variant: str | None = None,
    class_names: Sequence[str] = (),
) -> FinetuneStart:
    """The start of fine-tuning the checkpoint at `path` on a dataset; framework-free (each trainer initialises
    what is missing).

    Args:
        path: a checkpoint in any supported format (vit, timm, hf, npz, big_vision).
        image_shape: the dataset's (height, width, channels).
        num_classes: the dataset's classes; a different count gets a new head.
        overrides: ViTConfig fields the resolved recipe sets (its model_overrides: dropout, drop_path); a field
            it leaves out keeps the checkpoint's value.
        variant: what the file does not record (a timm state dict's heads), as `vit convert --variant`.
        class_names: the dataset's classes, in label order (() where unknown). Where the file records its own
            and they differ, the head is new even for the same count: its rows are other classes.
    """
    h, w, c = image_shape
    size = (h, w) if h != w else h
    # The image size is also where a big_vision sin-cos checkpoint, which records none, is read at.
    read = read_checkpoint(path, variant=variant, image_size=size, flags=INIT_FROM_FLAGS)
    if read.config.channels != c:
        raise ValueError(f"{path} is a model of {read.config.channels}-channel images, but the dataset's have {c} channels")
    adapted = adapt_checkpoint(read, size, num_classes)
    own = _recorded_class_names(path, read)
    if class_names and own and tuple(own) != tuple(class_names) and "head.weight" in adapted.state_dict:
        state_dict = {k: v for k, v in adapted.state_dict.items() if k not in HEAD_PARAMS}
        note = f"new head: the file's {len(own)} classes ({_names(own)}) are not the dataset's ({_names(class_names)})"
        adapted = dataclasses.replace(adapted, state_dict=state_dict, notes=[*adapted.notes, note])
    for message in adapted.messages():
        logger.info("%s: %s", path, message)
    config = adapted.config.replace(**dict(overrides))
    state_dict = {k: np.asarray(v, np.float32) for k, v in adapted.state_dict.items()}
    return FinetuneStart(config, state_dict, missing_params(config, state_dict), summary(path, read, adapted, variant))


def _recorded_class_names(path: str, read: Checkpoint) -> list[str] | None:
    """The class names a checkpoint of this project's format records (the trainers write them), else None."""
    if read.fmt != "vit":
        return None
    try:
        return read_class_names(path)
    except (OSError, ValueError):
        return None


def _names(names: Sequence[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def checkpoint_image_size(path: str, variant: str | None = None) -> tuple[int, int]:
    """(height, width) the checkpoint at `path` was trained at: what a folder of images of many sizes is
    decoded at when fine-tuning it without --image-size."""
    return tuple(read_checkpoint(path, variant=variant, flags=INIT_FROM_FLAGS).config.image_hw)  # type: ignore[return-value]


def finetune_weights(
    path: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    overrides: Mapping[str, Any] = (),
    variant: str | None = None,
) -> tuple[ViTConfig, dict[str, np.ndarray], list[str]]:
    """(config, state dict, names of the parameters it lacks: a new head): finetune_checkpoint's, without the line."""
    start = finetune_checkpoint(path, image_shape, num_classes, overrides, variant)
    return start.config, start.state_dict, start.missing


def _size(size: int | tuple[int, int]) -> str:
    return str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"


def summary(path: str, read: Checkpoint, adapted: Checkpoint, variant: str | None) -> str:
    """One line for the user: the file and its format, the architecture, the image size (resampled from -> to),
    the head (new, of N classes, or kept) and what came from --init-variant (or was assumed)."""
    old, new = read.config, adapted.config
    parts = [f"patch {_size(new.patch_size)}, width {new.width}, depth {new.depth}, heads {new.heads}, "
             f"mlp {new.mlp_dim}, {_pooling(new)}"]
    if new.grid == old.grid:
        parts.append(f"at its image size {_size(old.image_size)}")
    else:
        how = "recomputed" if old.pos_embed == "sincos2d" else "resampled"
        parts.append(f"position table {how} from {_size(old.image_size)} to {_size(new.image_size)} px "
                     f"({old.grid[0]}x{old.grid[1]} -> {new.grid[0]}x{new.grid[1]} patches)")
    if new.num_classes == old.num_classes and "head.weight" in adapted.state_dict:
        parts.append(f"its head of {new.num_classes} classes kept")
    elif new.num_classes == old.num_classes:
        parts.append(f"a new head of {new.num_classes} classes (the file's are other classes)")
    else:
        had = f"the file's has {old.num_classes}" if old.num_classes else "the file has none"
        parts.append(f"a new head of {new.num_classes} classes ({had})")
    by_variant = f"{INIT_FROM_FLAGS.variant} {variant}"
    from_variant = [f for f, flag in read.given.items() if flag == by_variant]
    from_variant += [f for f, why in read.assumed.items() if why.startswith(f"from {by_variant}")]
    shown = lambda fields: ", ".join(f"{f.replace('_', ' ')} {_show(getattr(old, f))}" for f in fields)
    if variant and from_variant:
        parts.append(f"from {by_variant}: {shown(from_variant)}")
    elif variant:
        parts.append(f"{INIT_FROM_FLAGS.variant} not used: the file records its own architecture")
    assumed = [f for f in read.assumed if f not in from_variant]
    if assumed:
        parts.append(f"not recorded, assumed: {shown(assumed)}")
    return f"init from {path} ({read.fmt}): " + "; ".join(parts)


def _pooling(config: ViTConfig) -> str:
    """The pooling in words, with the prefix tokens and layer scale that timm's feature models add."""
    words = {"cls": "[CLS] and distillation tokens" if config.distilled else "[CLS] token", "mean": "mean pooling",
             "map": "MAP pooling", "none": "no pooling"}[config.pool]
    if config.reg_tokens:
        words += f", {config.reg_tokens} register{'s' * (config.reg_tokens != 1)}"
    if config.layer_scale_init:
        words += ", layer scale"
    return words


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:g}" for v in value) + ")"
    return f"{value:g}" if isinstance(value, float) else str(value)
