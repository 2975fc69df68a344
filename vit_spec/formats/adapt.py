"""Loading a checkpoint for another image size or another set of classes.

- Image size: a learned position table is resampled over the patch grid (the prefix tokens' slots kept: [CLS],
  distillation token, registers; none where the table covers the patches only), with
  vit_spec.resample, which matches timm's resample_abs_pos_embed for the same mode and antialias
  (default bicubic with antialias, align_corners=False, as timm's default). A sincos2d table is
  recomputed for the new grid. The patch size never changes.
- Classes: a new class count drops the head ("head.weight", "head.bias", and a distilled model's "head_dist.*" are
  then absent from the state dict: the caller initialises them, e.g. with init_head). A MAP head (attn_pool.*) is
  pooling, not the head: it is kept. The pre-logits layer
  (representation_size) is kept unless keep_representation=False, which drops it and so also needs
  a new head (the head reads a different vector then).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from vit_spec.config import ConfigError, ViTConfig
from vit_spec.formats.checkpoint import Checkpoint
from vit_spec.formats.errors import FormatError
from vit_spec.layout import param_shapes, sincos_2d
from vit_spec.resample import MODES, resample_pos_embed

HEAD_PARAMS = ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias")


def _replace(config: ViTConfig, **changes) -> ViTConfig:
    try:
        return config.replace(**changes)
    except ConfigError as e:
        raise FormatError(f"cannot adapt the checkpoint: {e}") from None


def change_image_size(
    checkpoint: Checkpoint,
    image_size: int | Sequence[int],
    resample: str = "bicubic",
    antialias: bool = True,
) -> Checkpoint:
    """The checkpoint at another image size: position table resampled (learned) or recomputed (sincos2d)."""
    if resample not in MODES:
        raise FormatError(f"unknown resampling {resample!r}: use one of {MODES}")
    size = image_size if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    old = checkpoint.config
    new = _replace(old, image_size=size)
    if new.grid == old.grid:
        return dataclasses.replace(checkpoint, config=new)
    sd = dict(checkpoint.state_dict)
    if old.pos_embed == "sincos2d":
        sd["pos_embed"] = sincos_2d(new).astype(sd["pos_embed"].dtype)
        note = f"image size {old.image_hw} -> {new.image_hw}: the sin-cos position table was recomputed for the {new.grid} grid"
    else:
        sd["pos_embed"] = resample_pos_embed(
            sd["pos_embed"], new.grid, old.grid, old.num_pos_embed_tokens - old.num_patches, mode=resample,
            antialias=antialias,
        )
        note = (
            f"image size {old.image_hw} -> {new.image_hw}: pos_embed resampled from a {old.grid} to a {new.grid} grid "
            f"({resample}, antialias={antialias}, align_corners=False: as timm's resample_abs_pos_embed)"
        )
    return dataclasses.replace(checkpoint, config=new, state_dict=sd, notes=checkpoint.notes + [note])


def change_head(checkpoint: Checkpoint, num_classes: int | None = None, keep_representation: bool = True) -> Checkpoint:
    """The checkpoint with `num_classes` outputs; the head is dropped (for the caller to initialise) when it changes."""
    old = checkpoint.config
    num_classes = old.num_classes if num_classes is None else num_classes
    if not isinstance(num_classes, int) or num_classes < 0:
        raise FormatError(f"num_classes must be an int >= 0, got {num_classes!r}")
    drop_rep = bool(old.representation_size) and not keep_representation
    if num_classes == old.num_classes and not drop_rep:
        return checkpoint
    sd = dict(checkpoint.state_dict)
    notes = list(checkpoint.notes)
    changes: dict = {"num_classes": num_classes}
    if drop_rep:
        sd.pop("pre_logits.fc.weight"), sd.pop("pre_logits.fc.bias")
        changes["representation_size"] = None
        notes.append(f"dropped the pre-logits layer (representation_size={old.representation_size})")
    for name in HEAD_PARAMS:
        sd.pop(name, None)
    new = _replace(old, **changes)
    if num_classes:
        heads = "both heads (head, head_dist)" if new.distilled else "new head"
        notes.append(f"{heads}: {old.num_classes} -> {num_classes} classes, reading {new.features_dim} features (new weights)")
    else:
        notes.append(f"head removed (num_classes=0): the model outputs its {new.features_dim} features")
    return dataclasses.replace(checkpoint, config=new, state_dict=sd, notes=notes)


def adapt_checkpoint(
    checkpoint: Checkpoint,
    image_size: int | Sequence[int] | None = None,
    num_classes: int | None = None,
    keep_representation: bool = True,
    resample: str = "bicubic",
    antialias: bool = True,
) -> Checkpoint:
    """change_image_size then change_head; None leaves that part as it is."""
    if image_size is not None:
        checkpoint = change_image_size(checkpoint, image_size, resample, antialias)
    return change_head(checkpoint, num_classes, keep_representation)


def missing_params(config: ViTConfig, state_dict: dict[str, np.ndarray]) -> list[str]:
    """Names the config needs that the state dict lacks (after a head change: the head)."""
    return [name for name in param_shapes(config) if name not in state_dict]


def init_head(config: ViTConfig, seed: int | None = None, dtype: np.dtype | str = np.float32) -> dict[str, np.ndarray]:
    """A fresh head for `config`, in numpy, deterministic.

    seed None: zeros (Google's fine-tuning init, jax_vit's head default). A seed: weights drawn from
    normal(0, 0.02) (timm's trunc_normal_(std=0.02), whose +-2 bounds never bind at that std), zero bias.
    A distilled model gets both heads (head_dist drawn after head).
    """
    if not config.num_classes:
        return {}
    shape = (config.num_classes, config.features_dim)
    if seed is None:
        weight = np.zeros(shape, dtype)
    else:
        rng = np.random.default_rng(seed)
        weight = (0.02 * rng.standard_normal(shape)).astype(dtype)
    out = {"head.weight": weight, "head.bias": np.zeros((config.num_classes,), dtype)}
    if config.distilled:
        dist = np.zeros(shape, dtype) if seed is None else (0.02 * rng.standard_normal(shape)).astype(dtype)
        out.update({"head_dist.weight": dist, "head_dist.bias": np.zeros((config.num_classes,), dtype)})
    return out
