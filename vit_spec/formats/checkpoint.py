"""A checkpoint read from any format: config, shared-layout arrays, and what had to be assumed."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from vit_spec.config import ConfigError, ViTConfig
from vit_spec.formats.errors import FormatError
from vit_spec.layout import WeightsError, check_weights

# Config fields a source may leave unrecorded, and the user may then set (--gelu, --layer-norm-eps, ...).
ASSUMABLE_FIELDS = ("gelu", "layer_norm_eps", "image_mean", "image_std")


@dataclasses.dataclass
class Checkpoint:
    """A model in the shared layout.

    Attributes:
        config: the architecture, with what the source computes (eps, GELU, normalisation).
        state_dict: timm-named numpy arrays fitting `config` (see vit_spec.layout.param_shapes), except
            that after a head change "head.weight"/"head.bias" are absent, for the caller to initialise.
        fmt: the format it was read from.
        assumed: config field -> why it was assumed: the source does not record it.
        notes: every other change or interpretation made on the way, for the user to read.
        given: architecture field the source does not record (heads, image_size) -> the flag that gave it,
            e.g. "--variant S/16"; (eps, GELU and normalisation a variant gives are in `assumed`).
    """

    config: ViTConfig
    state_dict: dict[str, np.ndarray]
    fmt: str
    assumed: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    given: dict[str, str] = dataclasses.field(default_factory=dict)

    def messages(self) -> list[str]:
        """Every assumption and note, one line each."""
        out = [f"{field}={_show(getattr(self.config, field))}: {why}" for field, why in self.assumed.items()]
        return out + list(self.notes)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + ")"
    return repr(value)


def layout_fields(sd: Mapping[str, np.ndarray], grid: tuple[int, int], depth: int, heads: int) -> dict[str, Any]:
    """The ViTConfig fields a shared-layout state dict's shapes decide, given its patch grid, depth and heads."""
    width, channels, ph, pw = sd["patch_embed.proj.weight"].shape
    gh, gw = grid
    return dict(
        image_size=gh * ph if gh * ph == gw * pw else (gh * ph, gw * pw),
        patch_size=ph if ph == pw else (ph, pw),
        channels=channels,
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
        width=width,
        depth=depth,
        heads=heads,
        mlp_dim=sd["blocks.0.mlp.fc1.weight"].shape[0],
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        pool="cls" if "cls_token" in sd else "mean",
        representation_size=sd["pre_logits.fc.weight"].shape[0] if "pre_logits.fc.weight" in sd else None,
    )


def build_config(fields: Mapping[str, Any], source: str) -> ViTConfig:
    """ViTConfig(**fields), with a ConfigError turned into a FormatError naming the source."""
    try:
        return ViTConfig(**fields)
    except ConfigError as e:
        raise FormatError(f"{source} describes a model this project's config cannot hold: {e}") from None


def apply_overrides(checkpoint: Checkpoint, overrides: Mapping[str, Any] | None, source: str) -> Checkpoint:
    """Sets fields the source did not record (ASSUMABLE_FIELDS); refuses to contradict ones it did."""
    for field, value in (overrides or {}).items():
        if value is None:
            continue
        if field not in ASSUMABLE_FIELDS:
            raise FormatError(f"{field!r} cannot be overridden; only {ASSUMABLE_FIELDS} can")
        if isinstance(value, list):
            value = tuple(float(v) for v in value)
        current = getattr(checkpoint.config, field)
        if field not in checkpoint.assumed:
            if current != value:
                raise FormatError(
                    f"{source} records {field}={_show(current)}; the requested {field}={_show(value)} would make the "
                    "converted model compute something other than the source"
                )
            continue
        checkpoint.config = build_config({**checkpoint.config.to_dict(), field: value}, source)
        checkpoint.assumed.pop(field)
        checkpoint.notes.append(f"{field}={_show(value)}: as requested (the source does not record it)")
    return checkpoint


def check_layout(config: ViTConfig, state_dict: Mapping[str, np.ndarray], source: str) -> None:
    """check_weights, with the error re-raised as a FormatError that names the source format."""
    try:
        check_weights(config, state_dict, source=source)
    except WeightsError as e:
        raise FormatError(str(e)) from None
