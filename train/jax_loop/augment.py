"""On-device augmentation, run inside the jitted train step on a uint8 batch.

Random crop with zero padding and horizontal flip (the tutorial's torchvision pipeline), or in place of
that crop the Inception-style random-resized crop (torchvision's RandomResizedCrop with antialias, for
fine-tuning on images at the model's resolution), RandAugment (timm's op set, less Invert and
SolarizeAdd), and batch-level mixup/CutMix (timm's "batch" mode: pairs each image with the batch
reversed). Every random draw is a function of the step key and the example's position in the global
batch, never of the sharding, so runs on 1 or N devices see the same images.

The random-resized crop draws its boxes as torchvision's `RandomResizedCrop.get_params` does, all 10
attempts per image at once, and resizes each box with torchvision's anti-aliased bilinear weights (PIL's),
over the box's own pixels, in float32, rounded back to uint8 once: torchvision's uint8 resize on CPU, in
fixed point rounded between its two passes, is a level away at most (the PyTorch twin's docstring).

RandAugment's magnitude m is timm's level out of 10; each op's strength at level l = min(m, 10) / 10 is
torchvision's RandAugment's (the PyTorch twin, train.torch_loop.augment, is built on it, and says where the
two differ by a pixel or a level): rotate 30 l degrees, shear 0.3 l, translate 0.45 l of the size, blends
1 +- 0.9 l, solarize from 1 - l, as timm's "increasing" set (DeiT's rand-m9-mstd0.5-inc1) has them; but
posterize keeps 8 - round(4 l) bits: 8 at m = 0-1, 7 at 2-3, 6 at 4-6, 5 at 7-8, 4 at 9-10, where timm
keeps 4 - int(4 l) (1 bit at m = 9), or int(4 l) in its default set (3 bits at m = 9).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from train.augment_config import AugmentConfig


def normalize(images: jax.Array, mean: tuple[float, ...], std: tuple[float, ...]) -> jax.Array:
    """uint8 or [0, 1] float images -> (x - mean) / std, float32."""
    if images.dtype == jnp.uint8:
        images = images.astype(jnp.float32) / 255.0
    return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def random_crop(key: jax.Array, images: jax.Array, padding: int) -> jax.Array:
    """torchvision's RandomCrop(size, padding): zero-pad every side, cut a random window back out."""
    if padding <= 0:
        return images
    b, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * padding + 1)
    cut = lambda img, off: jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))
    return jax.vmap(cut)(padded, offsets)


# The Inception-style random-resized crop (torchvision's RandomResizedCrop, big_vision's inception_crop).
RESIZED_CROP_ATTEMPTS = 10  # torchvision's: boxes drawn per image before the centre-crop fallback


def _box_resize_weights(size: int, out_size: int, start: jax.Array, length: jax.Array) -> jax.Array:
    """(out_size, size) weights taking one axis of `size` pixels to the box [start, start + length) resized to
    `out_size` pixels: torch's anti-aliased bilinear resize (PIL's), half-pixel centres, of the cropped box.

    Output pixel o samples the box at `start + scale * (o + 0.5)`, scale = length / out_size input pixels
    per output pixel, with a triangle of half-width max(scale, 1) (widened when shrinking: the antialias),
    its weights normalised over the pixels inside the box. Only those: torchvision crops first, so pixels
    just outside the box never reach its edge rows, as they would in `jax.image.scale_and_translate` of
    the whole image. A box the image's size, resized to that size, gives the identity, exactly.
    """
    scale = length.astype(jnp.float32) / out_size
    support = jnp.maximum(scale, 1.0)
    centre = start.astype(jnp.float32) + scale * (jnp.arange(out_size, dtype=jnp.float32) + 0.5)
    source = jnp.arange(size)
    weights = jnp.maximum(0.0, 1.0 - jnp.abs(source[None, :] + 0.5 - centre[:, None]) / support)
    inside = (source >= start) & (source < start + length)
    weights = jnp.where(inside[None, :], weights, 0.0)
    return weights / jnp.sum(weights, axis=1, keepdims=True)


def resized_crop(images: jax.Array, boxes: jax.Array, size: tuple[int, int] | None = None) -> jax.Array:
    """Each image's box (B, 4) int (top, left, height, width), resized to `size` (default: the image's (H, W)).

    torchvision's `resized_crop(img, top, left, height, width, size, antialias=True)` (bilinear): each axis
    resized by its own weight matrix (`_box_resize_weights`), in float32 at full precision, then uint8
    results rounded back (torch computes uint8 on CPU in fixed point, rounding between its two passes:
    a level apart at most, see tests/test_torch_augment.py). Float images stay float, unrounded.
    """
    _, h, w, _ = images.shape
    out_h, out_w = (h, w) if size is None else size
    boxes = jnp.asarray(boxes, jnp.int32)
    rows = jax.vmap(lambda top, height: _box_resize_weights(h, out_h, top, height))(boxes[:, 0], boxes[:, 2])
    cols = jax.vmap(lambda left, width: _box_resize_weights(w, out_w, left, width))(boxes[:, 1], boxes[:, 3])
    x = images.astype(jnp.float32)
    # HIGHEST: the default may multiply float32 in TF32 or bf16 on accelerators, a quarter level off at 255.
    highest = jax.lax.Precision.HIGHEST
    x = jnp.einsum("bpw,bhwc->bhpc", cols, x, precision=highest)  # horizontal, then vertical, as torch
    x = jnp.einsum("boh,bhpc->bopc", rows, x, precision=highest)
    if jnp.issubdtype(images.dtype, jnp.integer):
        info = jnp.iinfo(images.dtype)
        return jnp.clip(jnp.round(x), info.min, info.max).astype(images.dtype)
    return x.astype(images.dtype)


def random_resized_crop_boxes(
    key: jax.Array, batch: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> jax.Array:
    """(batch, 4) int32 boxes (top, left, height, width), drawn as torchvision's `RandomResizedCrop.get_params`.

    Per image, 10 attempts, all drawn at once: area fraction uniform in `scale`, log aspect (width / height)
    uniform in log(`ratio`), w = round(sqrt(area * r)), h = round(sqrt(area / r)); the first that fits the
    image wins, placed at a uniform top and left. If none fits, the centre crop of the whole image with
    its aspect clamped to `ratio`.
    """
    k_draw, k_place = jax.random.split(key)
    # One draw of (area, log aspect) pairs, one of (top, left): the same distributions as a draw per
    # quantity, in half the random-number kernels to compile (each its own threefry).
    lows = jnp.asarray([scale[0], math.log(ratio[0])], jnp.float32)
    highs = jnp.asarray([scale[1], math.log(ratio[1])], jnp.float32)
    draws = jax.random.uniform(k_draw, (batch, RESIZED_CROP_ATTEMPTS, 2), minval=lows, maxval=highs)
    area, aspect = height * width * draws[..., 0], jnp.exp(draws[..., 1])
    box_w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)  # round half to even, as Python's round
    box_h = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    first = jnp.argmax(fits, axis=1)[:, None]  # the first attempt that fits (0 when none does)
    box_h = jnp.take_along_axis(box_h, first, axis=1)[:, 0]
    box_w = jnp.take_along_axis(box_w, first, axis=1)[:, 0]
    # The fallback depends on shapes and config only: worked out in Python, as torchvision does.
    if width / height < ratio[0]:
        fallback_h, fallback_w = int(round(width / ratio[0])), width
    elif width / height > ratio[1]:
        fallback_h, fallback_w = height, int(round(height * ratio[1]))
    else:
        fallback_h, fallback_w = height, width
    found = jnp.any(fits, axis=1)
    box_h = jnp.where(found, box_h, fallback_h)
    box_w = jnp.where(found, box_w, fallback_w)
    room = jnp.stack([height - box_h, width - box_w], axis=1)
    place = jax.random.randint(k_place, (batch, 2), 0, room + 1)  # top and left, uniform on 0..room
    place = jnp.where(found[:, None], place, room // 2)
    return jnp.concatenate([place, box_h[:, None], box_w[:, None]], axis=1)


def random_resized_crop(
    key: jax.Array, images: jax.Array, scale: tuple[float, float], ratio: tuple[float, float]
) -> jax.Array:
    """torchvision's RandomResizedCrop((H, W), scale, ratio, antialias=True) on a (B, H, W, C) batch: per image a
    box of `random_resized_crop_boxes`, resized back to (H, W) by `resized_crop` (uint8 in, uint8 out)."""
    b, h, w, _ = images.shape
    return resized_crop(images, random_resized_crop_boxes(key, b, h, w, scale, ratio))


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Horizontal flip of half the images."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1], images)


# RandAugment. Each op is defined on one [0, 1] float image (H, W, C) by the functions below, `m` being
# the signed magnitude in [-1, 1]: they say what an op means, and tests hold the batched families of
# `rand_augment` to them. Indices matter: they are what the per-image draws pick.
OP_NAMES = (
    "identity", "autocontrast", "equalize", "rotate", "posterize", "solarize", "color", "contrast",
    "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y",
)
NUM_RANDAUGMENT_OPS = len(OP_NAMES)
_OP = {name: i for i, name in enumerate(OP_NAMES)}


def _blend(a: jax.Array, b: jax.Array, factor: jax.Array) -> jax.Array:
    """PIL ImageEnhance: a + factor * (b - a), clipped."""
    return jnp.clip(a + factor * (b - a), 0.0, 1.0)


def _gray(img: jax.Array) -> jax.Array:
    """(..., H, W, C) -> (..., H, W, 1): ITU-R 601 luma (PIL's "L"), or the channel mean if not RGB."""
    if img.shape[-1] != 3:
        return jnp.mean(img, axis=-1, keepdims=True)
    return (img @ jnp.asarray([0.299, 0.587, 0.114], img.dtype))[..., None]


def _pixel_grid(h: int, w: int) -> jax.Array:
    """(H*W, 2) row, column of every pixel relative to the image centre."""
    centre = jnp.asarray([(h - 1) / 2, (w - 1) / 2])
    return jnp.stack(jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij"), -1).reshape(-1, 2) - centre


def _affine(img: jax.Array, inverse: jax.Array, shift: jax.Array) -> jax.Array:
    """Nearest-neighbour warp about the centre: out(p) = img(inverse @ (p - c) + c - shift), gray fill."""
    h, w, _ = img.shape
    centre = jnp.asarray([(h - 1) / 2, (w - 1) / 2])
    src = jnp.round(_pixel_grid(h, w) @ inverse.T + centre - shift).astype(jnp.int32)
    valid = (src[:, 0] >= 0) & (src[:, 0] < h) & (src[:, 1] >= 0) & (src[:, 1] < w)
    pixels = img[jnp.clip(src[:, 0], 0, h - 1), jnp.clip(src[:, 1], 0, w - 1)]
    return jnp.where(valid[:, None], pixels, 0.5).reshape(img.shape)


def _equalize_channel(channel: jax.Array) -> jax.Array:
    """PIL's ImageOps.equalize on one channel."""
    v = jnp.round(channel * 255).astype(jnp.int32).reshape(-1)
    hist = jnp.zeros(256, jnp.int32).at[v].add(1)
    last = hist[255 - jnp.argmax(hist[::-1] > 0)]  # count of the highest occupied level
    step = (v.size - last) // 255
    cdf = jnp.cumsum(hist) - hist
    lut = jnp.clip((cdf + step // 2) // jnp.maximum(step, 1), 0, 255)
    return jnp.where(step > 0, lut[v] / 255.0, v / 255.0).reshape(channel.shape).astype(channel.dtype)


def _smooth(img: jax.Array) -> jax.Array:
    """PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13) on (..., H, W, C), border pixels kept."""
    h, w = img.shape[-3:-1]
    pad = [(0, 0)] * (img.ndim - 3) + [(1, 1), (1, 1), (0, 0)]
    p = jnp.pad(img, pad, mode="edge")
    s = sum(p[..., i : i + h, j : j + w, :] for i in range(3) for j in range(3)) + 4 * img
    rows, cols = jnp.arange(h)[:, None, None], jnp.arange(w)[None, :, None]
    border = (rows == 0) | (rows == h - 1) | (cols == 0) | (cols == w - 1)
    return jnp.where(border, img, s / 13.0)  # a select, not a scatter into a copy: one pass


def _rotation(m: jax.Array) -> jax.Array:
    """The inverse matrix of a rotation by m * 30 degrees."""
    a = m * math.radians(30.0)
    return jnp.asarray([[jnp.cos(a), jnp.sin(a)], [-jnp.sin(a), jnp.cos(a)]])


def _posterize(img: jax.Array, m: jax.Array) -> jax.Array:
    """Keep the top 8 - round(4|m|) bits of each level (torchvision's RandAugment: 4 bits at magnitude 9, not
    timm's 1, or 3 in its default set; see the module's docstring)."""
    scale = 2 ** jnp.round(4 * jnp.abs(m))
    return jnp.floor(jnp.floor(img * 255) / scale) * scale / 255


REFERENCE_OPS: tuple[Callable[[jax.Array, jax.Array], jax.Array], ...] = (
    lambda img, m: img,  # identity
    lambda img, m: jnp.where(  # autocontrast
        img.max((0, 1)) > img.min((0, 1)),
        (img - img.min((0, 1))) / jnp.maximum(img.max((0, 1)) - img.min((0, 1)), 1e-6),
        img,
    ),
    lambda img, m: jax.vmap(_equalize_channel, in_axes=-1, out_axes=-1)(img),  # equalize
    lambda img, m: _affine(img, _rotation(m), jnp.zeros(2)),  # rotate
    _posterize,
    lambda img, m: jnp.where(img >= 1.0 - jnp.abs(m), 1.0 - img, img),  # solarize
    lambda img, m: _blend(_gray(img), img, 1.0 + 0.9 * m),  # color (saturation)
    lambda img, m: _blend(jnp.mean(_gray(img)), img, 1.0 + 0.9 * m),  # contrast
    lambda img, m: _blend(jnp.zeros_like(img), img, 1.0 + 0.9 * m),  # brightness
    lambda img, m: _blend(_smooth(img), img, 1.0 + 0.9 * m),  # sharpness
    lambda img, m: _affine(img, jnp.asarray([[1.0, 0.0], [0.3 * m, 1.0]]), jnp.zeros(2)),  # shear x
    lambda img, m: _affine(img, jnp.asarray([[1.0, 0.3 * m], [0.0, 1.0]]), jnp.zeros(2)),  # shear y
    lambda img, m: _affine(img, jnp.eye(2), jnp.asarray([0.0, 0.45 * img.shape[1] * m])),  # translate x
    lambda img, m: _affine(img, jnp.eye(2), jnp.asarray([0.45 * img.shape[0] * m, 0.0])),  # translate y
)


# The batched families: one op per image, each family computed once for the whole batch, leaving the
# images whose op it does not hold exactly as they were. `op` (B,) int, `m` (B,) float.
def _select(chosen: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    return jnp.where(chosen[:, None, None, None], new, old)


def geometric_family(x: jax.Array, op: jax.Array, m: jax.Array) -> jax.Array:
    """Rotate, shear x/y, translate x/y: one nearest-neighbour warp with a per-image matrix and shift."""
    _, h, w, c = x.shape
    zero, one = jnp.zeros_like(m), jnp.ones_like(m)
    shear_x = jnp.where(op == _OP["shear_x"], 0.3 * m, zero)
    shear_y = jnp.where(op == _OP["shear_y"], 0.3 * m, zero)
    shears = jnp.stack([jnp.stack([one, shear_y], -1), jnp.stack([shear_x, one], -1)], -2)  # (B, 2, 2)
    inverse = jnp.where((op == _OP["rotate"])[:, None, None], jax.vmap(_rotation)(m), shears)
    shift = jnp.stack(
        [jnp.where(op == _OP["translate_y"], 0.45 * h * m, zero), jnp.where(op == _OP["translate_x"], 0.45 * w * m, zero)],
        -1,
    )
    centre = jnp.asarray([(h - 1) / 2, (w - 1) / 2])
    # inverse @ (p - c) per image, written out: the same two products and sum as `_affine`'s matmul.
    grid = _pixel_grid(h, w)
    src = grid[None, :, None, 0] * inverse[:, None, :, 0] + grid[None, :, None, 1] * inverse[:, None, :, 1]
    src = jnp.round(src + centre - shift[:, None, :]).astype(jnp.int32)  # (B, H*W, 2)
    valid = (src[..., 0] >= 0) & (src[..., 0] < h) & (src[..., 1] >= 0) & (src[..., 1] < w)
    flat = jnp.clip(src[..., 0], 0, h - 1) * w + jnp.clip(src[..., 1], 0, w - 1)
    # Batched (vmap) gathers, not one over the flattened batch: each device reads only its own images.
    pixels = jax.vmap(lambda img, idx: img.reshape(h * w, c)[idx])(x, flat)
    warped = jnp.where(valid[..., None], pixels, 0.5).reshape(x.shape)
    geometric = [_OP[k] for k in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")]
    return _select(jnp.isin(op, jnp.asarray(geometric)), warped, x)


def _equalize_image(img: jax.Array) -> jax.Array:
    """`_equalize_channel` on every channel of one image, with one histogram scatter for all channels.

    Written for XLA CPU: the table's element-wise part is fused into the per-pixel gather and
    recomputed there, so it keeps to reductions and truncating `lax.div` on non-negative counts
    (jnp's floor division, with its sign fix-ups, costs 3x as much).
    """
    h, w, c = img.shape
    v = jnp.round(img * 255).astype(jnp.int32)
    bins = jnp.arange(c) * 256 + v  # (channel, level) flattened: one scatter fills every channel
    hist = jnp.zeros(c * 256, jnp.int32).at[bins.reshape(-1)].add(1).reshape(c, 256)
    levels = jnp.arange(256)
    top = jnp.max(jnp.where(hist > 0, levels, -1), axis=-1, keepdims=True)  # highest occupied level
    last = jnp.sum(jnp.where(levels == top, hist, 0), axis=-1)  # its count
    step = jax.lax.div(h * w - last, 255)  # (C,), non-negative: truncation is floor
    cdf = jnp.cumsum(hist, -1) - hist
    lut = jnp.clip(jax.lax.div(cdf + jax.lax.div(step, 2)[:, None], jnp.maximum(step, 1)[:, None]), 0, 255)
    equalized = lut.reshape(-1)[bins] / 255.0
    return jnp.where(step > 0, equalized, v / 255.0).astype(img.dtype)


def pointwise_family(x: jax.Array, op: jax.Array, m: jax.Array) -> jax.Array:
    """Autocontrast, equalize, posterize, solarize: per-image, per-channel maps of each level.

    Computed as formulas, each one fused element-wise pass, rather than as a table on the 256 levels:
    after a blend in an earlier layer pixels lie between levels, where autocontrast and solarize act
    on the exact value. Only equalize needs its table (from the image's histogram).
    """
    lo, hi = x.min((1, 2), keepdims=True), x.max((1, 2), keepdims=True)
    autocontrast = jnp.where(hi > lo, (x - lo) / jnp.maximum(hi - lo, 1e-6), x)
    mb = m[:, None, None, None]
    solarize = jnp.where(x >= 1.0 - jnp.abs(mb), 1.0 - x, x)
    out = _select(op == _OP["autocontrast"], autocontrast, x)
    out = _select(op == _OP["solarize"], solarize, out)
    out = _select(op == _OP["posterize"], _posterize(x, mb), out)
    # Equalize's histogram is the expensive part: computed once per image here, and nowhere else.
    return _select(op == _OP["equalize"], jax.vmap(_equalize_image)(x), out)


def blend_family(x: jax.Array, op: jax.Array, m: jax.Array) -> jax.Array:
    """Color, contrast, brightness, sharpness: a blend towards a per-image target by a per-image factor."""
    gray = _gray(x)
    sharp = _select(op == _OP["sharpness"], _smooth(x), jnp.zeros_like(x))
    target = _select(op == _OP["color"], jnp.broadcast_to(gray, x.shape), sharp)
    target = _select(op == _OP["contrast"], jnp.broadcast_to(gray.mean((1, 2, 3), keepdims=True), x.shape), target)
    blended = _blend(target, x, 1.0 + 0.9 * m[:, None, None, None])
    blends = [_OP[k] for k in ("color", "contrast", "brightness", "sharpness")]
    return _select(jnp.isin(op, jnp.asarray(blends)), blended, x)


def rand_augment(key: jax.Array, images: jax.Array, num_ops: int, magnitude: float, prob: float = 0.5) -> jax.Array:
    """RandAugment on [0, 1] float images: per image, `num_ops` ops drawn uniformly, each applied with `prob`.

    Computes what `REFERENCE_OPS` define, batched by family: a layer costs one warp, one pass of
    point-wise maps (one equalize histogram) and one blend per image, not all 14 ops per image, which
    is what a `lax.switch` under `vmap` compiles to.
    """
    if num_ops <= 0:
        return images
    b = images.shape[0]
    k_op, k_apply, k_sign = jax.random.split(key, 3)
    ops = jax.random.randint(k_op, (b, num_ops), 0, NUM_RANDAUGMENT_OPS)
    apply = jax.random.bernoulli(k_apply, prob, (b, num_ops))
    signs = jnp.where(jax.random.bernoulli(k_sign, 0.5, (b, num_ops)), 1.0, -1.0)
    level = min(magnitude, 10.0) / 10.0

    def layer(x: jax.Array, draws: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, None]:
        op, on, sign = draws
        op = jnp.where(on, op, _OP["identity"])
        m = level * sign
        # One op per image: each family changes only its own images, so their order does not matter.
        x = geometric_family(x, op, m)
        x = pointwise_family(x, op, m)
        return blend_family(x, op, m), None

    # A scan over the layers: XLA compiles the families once, not num_ops times.
    images, _ = jax.lax.scan(layer, images, (ops.T, apply.T, signs.T))
    return images


def mix(key: jax.Array, images: jax.Array, targets: jax.Array, cfg: AugmentConfig) -> tuple[jax.Array, jax.Array]:
    """Batch mixup / CutMix: each image with its partner in the reversed batch, targets mixed alike."""
    if cfg.mixup_alpha <= 0 and cfg.cutmix_alpha <= 0:
        return images, targets
    k_mix, k_switch, k_lam_m, k_lam_c, k_box = jax.random.split(key, 5)
    _, h, w, _ = images.shape
    partner, partner_t = images[::-1], targets[::-1]
    lam_mixup = jax.random.beta(k_lam_m, cfg.mixup_alpha, cfg.mixup_alpha) if cfg.mixup_alpha > 0 else jnp.float32(1.0)
    lam_cut = jax.random.beta(k_lam_c, cfg.cutmix_alpha, cfg.cutmix_alpha) if cfg.cutmix_alpha > 0 else jnp.float32(1.0)
    if cfg.mixup_alpha > 0 and cfg.cutmix_alpha > 0:
        use_cutmix = jax.random.bernoulli(k_switch, cfg.switch_prob)
    else:
        use_cutmix = jnp.asarray(cfg.cutmix_alpha > 0)
    # CutMix box of area (1 - lam), clipped at the border; lam is then the kept area.
    ratio = jnp.sqrt(1.0 - lam_cut)
    ch, cw = (h * ratio).astype(jnp.int32), (w * ratio).astype(jnp.int32)
    cy, cx = jax.random.randint(k_box, (2,), 0, jnp.asarray([h, w]))
    y0, y1 = jnp.clip(cy - ch // 2, 0, h), jnp.clip(cy + ch // 2, 0, h)
    x0, x1 = jnp.clip(cx - cw // 2, 0, w), jnp.clip(cx + cw // 2, 0, w)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    box = ((rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1))[None, :, :, None]
    lam_cut = 1.0 - ((y1 - y0) * (x1 - x0)) / (h * w)
    cut = jnp.where(box, partner, images)
    blend = lam_mixup * images + (1.0 - lam_mixup) * partner
    mixed = jnp.where(use_cutmix, cut, blend)
    lam = jnp.where(use_cutmix, lam_cut, lam_mixup)
    do_mix = jax.random.bernoulli(k_mix, cfg.mix_prob)
    lam = jnp.where(do_mix, lam, 1.0).astype(targets.dtype)
    return jnp.where(do_mix, mixed, images), lam * targets + (1.0 - lam) * partner_t


def augment_batch(
    key: jax.Array, images: jax.Array, labels: jax.Array, num_classes: int, cfg: AugmentConfig
) -> tuple[jax.Array, jax.Array]:
    """uint8 (B, H, W, C) and int labels -> normalised float32 images and (B, classes) soft targets."""
    k_crop, k_flip, k_ra, k_mix = jax.random.split(key, 4)
    if cfg.random_resized_crop:  # on the uint8 pixels, rounded back to uint8, as torchvision's
        images = random_resized_crop(k_crop, images, cfg.crop_scale, cfg.crop_ratio)
    x = images.astype(jnp.float32) / 255.0
    x = random_crop(k_crop, x, cfg.crop_padding)  # AugmentConfig allows only one of the two crops
    if cfg.flip:
        x = random_flip(k_flip, x)
    x = rand_augment(k_ra, x, cfg.randaugment_ops, cfg.randaugment_magnitude, cfg.randaugment_prob)
    x = normalize(x, cfg.mean, cfg.std)
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if cfg.label_smoothing > 0:
        targets = targets * (1.0 - cfg.label_smoothing) + cfg.label_smoothing / num_classes
    return mix(k_mix, x, targets, cfg)
