"""What both models accept as images, checked before any framework sees them."""

from __future__ import annotations

from typing import Sequence

from vit_spec.config import ViTConfig


class ImageInputError(ValueError):
    """Images that the model cannot take."""


def check_images(config: ViTConfig, shape: Sequence[int], dtype_name: str, is_floating: bool, layout: str) -> None:
    """Raises ImageInputError unless `shape` is a float batch in `layout` ("NHWC" or "NCHW") of the config's size.

    Args:
        config: the model's config.
        shape: the images' shape.
        dtype_name: the images' dtype, for the message.
        is_floating: whether that dtype is a floating type.
        layout: "NHWC" (the JAX model) or "NCHW" (the PyTorch model).
    """
    h, w = config.image_hw
    c = config.channels
    want = (h, w, c) if layout == "NHWC" else (c, h, w)
    other = "NCHW" if layout == "NHWC" else "NHWC"
    perm = "(0, 3, 1, 2)" if layout == "NCHW" else "(0, 2, 3, 1)"
    # The batch may be symbolic (torch.export, jax.export): int() on it would fix it to the example's size.
    shape = tuple(s if i == 0 else int(s) for i, s in enumerate(shape))
    if len(shape) != 4:
        hint = " (add a batch axis: images[None])" if len(shape) == 3 else ""
        raise ImageInputError(f"images must be a 4-D {layout} batch (batch, {', '.join(map(str, want))}), got shape {shape}{hint}")
    if not is_floating:
        raise ImageInputError(
            f"images must be floating point, got dtype {dtype_name}: convert and normalise them first, "
            f"e.g. (images / 255 - mean) / std with mean={config.image_mean}, std={config.image_std}"
        )
    if shape[1:] == want:
        return
    other_want = (c, h, w) if layout == "NHWC" else (h, w, c)
    if shape[1:] == other_want:
        fix = f"images.transpose{perm}" if layout == "NHWC" else f"images.permute{perm}"
        raise ImageInputError(
            f"images have shape {shape}, which is {other}; this model takes {layout} "
            f"(batch, {', '.join(map(str, want))}): convert them with {fix}"
        )
    got_c = shape[3] if layout == "NHWC" else shape[1]
    if got_c != c:
        raise ImageInputError(f"images have {got_c} channels ({layout} shape {shape}) but the model was built for {c}")
    got_hw = shape[1:3] if layout == "NHWC" else shape[2:4]
    raise ImageInputError(
        f"images are {got_hw[0]}x{got_hw[1]} but the model was built for {h}x{w} (shape {shape}); "
        f"resize them, or load the weights at the new size with a resampled position embedding"
    )


# The model's input, as both export formats take it: the twins' own layout, already normalised.
EXPORT_INPUT_DOC = "float32 images, {layout} (batch, {dims}), normalised as (pixels / 255 - image_mean) / image_std"


class ExportError(ValueError):
    """An export that failed its check, or that cannot be made."""


def check_has_logits(config: ViTConfig, source: object, what: str) -> None:
    """Refuses a model without logits where a class is needed (`vit predict`, `vit eval`), naming why.

    Args:
        config: the model's config; source: its file, for the message; what: the action, e.g. "predict".
    """
    from vit_spec.layout import WeightsError

    if config.pool == "none":
        raise WeightsError(f"{source} is a pool='none' model: it returns every token, not logits, so there are no "
                           f"classes to {what}; `vit features` gives its tokens")
    if not config.num_classes:
        raise WeightsError(f"{source} has no classification head (num_classes 0): there are no classes to {what}; "
                           "fine-tune it into a classifier first (vit train --init-from), or take its pooled features "
                           "with `vit features`")
