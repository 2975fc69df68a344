"""Which parameters a run trains, and at what scale of the learning rate: rules on the weight layout's timm names
(vit_spec.layout), which both twins share (the JAX optimizer maps its Flax paths to them). Framework-free.

Layer-wise learning-rate decay (BEiT, MAE, DINOv2 fine-tuning) is timm's `param_groups_layer_decay` over
`VisionTransformer.group_matcher`: layer 0 is the stem (patch embedding, position embedding, prefix tokens, the
pre-norm), block i is layer i + 1, the final norm joins the last block (timm's MATCH_PREV_GROUP), and whatever
matches none of these (fc_norm, the MAP head, pre_logits, the heads) is the last layer, depth + 1. A layer's
learning rate is scaled by layer_decay ** (last - id).
"""

from __future__ import annotations

import re
from typing import Iterable

# `--freeze`: what stays fixed. "backbone": everything but the classifier heads (linear probing).
FREEZE_CHOICES = ("backbone",)
# The modules `--freeze backbone` trains: the head, and a distilled model's second head.
HEAD_MODULES = ("head", "head_dist")

# timm's group_matcher, matched as timm matches it (re.match: at the start of the name), in this order. Its stem
# pattern is VisionTransformer's (cls_token|reg_token|pos_embed|patch_embed|norm_pre) with
# VisionTransformerDistilled's dist_token.
_STEM = re.compile(r"cls_token|reg_token|dist_token|pos_embed|patch_embed|norm_pre")
_BLOCK = re.compile(r"blocks\.(\d+)")
_FINAL_NORM = re.compile(r"norm")  # "norm.weight"; norm_pre matched the stem first, fc_norm does not start so


def check_freeze(freeze: str | None) -> None:
    if freeze is not None and freeze not in FREEZE_CHOICES:
        raise ValueError(f"unknown --freeze {freeze!r}: use one of {FREEZE_CHOICES}")


def trains(name: str, freeze: str | None) -> bool:
    """Whether the tensor `name` (a timm name, or a Flax path's top-level key: the same module names) trains
    under `freeze`: all do without it; with "backbone" only the heads'."""
    check_freeze(freeze)
    return freeze is None or name.split(".")[0] in HEAD_MODULES


def layer_id(name: str, depth: int) -> int:
    """timm's layer of the tensor `name` in a model of `depth` blocks: 0 stem, i + 1 block i, depth for the final
    norm (with the last block), depth + 1 for everything after the blocks."""
    if _STEM.match(name):
        return 0
    block = _BLOCK.match(name)
    if block:
        return int(block.group(1)) + 1
    if _FINAL_NORM.match(name):
        return depth
    return depth + 1


def layer_scales(names: Iterable[str], layer_decay: float) -> dict[str, float]:
    """name -> the scale of its learning rate, layer_decay ** (last - layer_id), for the tensors `names` of one
    model (the depth is read from the blocks' names; the last layer is the highest id among them, as timm's
    num_layers - 1)."""
    names = list(names)
    depth = max((int(m.group(1)) + 1 for n in names if (m := _BLOCK.match(n))), default=0)
    ids = {n: layer_id(n, depth) for n in names}
    last = max(ids.values(), default=0)
    return {n: layer_decay ** (last - i) for n, i in ids.items()}
