"""On-device augmentation, run inside the jitted train step on a uint8 batch.

Random crop with zero padding and horizontal flip (the tutorial's torchvision pipeline),
RandAugment (timm's op set, less Invert and SolarizeAdd), and batch-level mixup/CutMix (timm's
"batch" mode: pairs each image with the batch reversed). Every random draw is a function of the
step key and the example's position in the global batch, never of the sharding, so runs on 1 or
N devices see the same images.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What the train step does to a batch. Magnitudes follow timm (RandAugment level out of 10)."""

    crop_padding: int = 4
    flip: bool = True
    randaugment_ops: int = 0  # ops per image; 0 turns RandAugment off
    randaugment_magnitude: float = 9.0
    randaugment_prob: float = 0.5  # each chosen op is applied with this probability (timm)
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0  # probability that a batch is mixed at all
    switch_prob: float = 0.5  # probability of CutMix rather than mixup when both are on
    label_smoothing: float = 0.0
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)


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


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Horizontal flip of half the images."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1], images)


# RandAugment ops on one [0, 1] float image (H, W, C); `m` is the signed magnitude in [-1, 1].
def _blend(a: jax.Array, b: jax.Array, factor: jax.Array) -> jax.Array:
    """PIL ImageEnhance: a + factor * (b - a), clipped."""
    return jnp.clip(a + factor * (b - a), 0.0, 1.0)


def _gray(img: jax.Array) -> jax.Array:
    if img.shape[-1] != 3:
        return jnp.mean(img, axis=-1, keepdims=True)
    return (img @ jnp.asarray([0.299, 0.587, 0.114], img.dtype))[..., None]


def _affine(img: jax.Array, inverse: jax.Array, shift: jax.Array) -> jax.Array:
    """Nearest-neighbour warp about the centre: out(p) = img(inverse @ (p - c) + c - shift), gray fill."""
    h, w, _ = img.shape
    centre = jnp.asarray([(h - 1) / 2, (w - 1) / 2])
    grid = jnp.stack(jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij"), -1).reshape(-1, 2) - centre
    src = jnp.round(grid @ inverse.T + centre - shift).astype(jnp.int32)
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


def _rotate(img, m):
    a = m * math.radians(30.0)
    return _affine(img, jnp.asarray([[jnp.cos(a), jnp.sin(a)], [-jnp.sin(a), jnp.cos(a)]]), jnp.zeros(2))


def _sharpness(img, m):
    # PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13), border pixels kept.
    p = jnp.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w, _ = img.shape
    s = sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3)) + 4 * img
    smooth = img.at[1:-1, 1:-1].set((s / 13.0)[1:-1, 1:-1])
    return _blend(smooth, img, 1.0 + 0.9 * m)


_OPS: tuple[Callable[[jax.Array, jax.Array], jax.Array], ...] = (
    lambda img, m: img,  # identity
    lambda img, m: jnp.where(  # autocontrast
        img.max((0, 1)) > img.min((0, 1)),
        (img - img.min((0, 1))) / jnp.maximum(img.max((0, 1)) - img.min((0, 1)), 1e-6),
        img,
    ),
    lambda img, m: jax.vmap(_equalize_channel, in_axes=-1, out_axes=-1)(img),  # equalize
    _rotate,
    lambda img, m: (  # posterize: keep 8 - 4|m| bits
        jnp.floor(jnp.floor(img * 255) / 2 ** jnp.round(4 * jnp.abs(m))) * 2 ** jnp.round(4 * jnp.abs(m)) / 255
    ),
    lambda img, m: jnp.where(img >= 1.0 - jnp.abs(m), 1.0 - img, img),  # solarize
    lambda img, m: _blend(_gray(img), img, 1.0 + 0.9 * m),  # color (saturation)
    lambda img, m: _blend(jnp.mean(_gray(img)), img, 1.0 + 0.9 * m),  # contrast
    lambda img, m: _blend(jnp.zeros_like(img), img, 1.0 + 0.9 * m),  # brightness
    _sharpness,
    lambda img, m: _affine(img, jnp.asarray([[1.0, 0.0], [0.3 * m, 1.0]]), jnp.zeros(2)),  # shear x
    lambda img, m: _affine(img, jnp.asarray([[1.0, 0.3 * m], [0.0, 1.0]]), jnp.zeros(2)),  # shear y
    lambda img, m: _affine(img, jnp.eye(2), jnp.asarray([0.0, 0.45 * img.shape[1] * m])),  # translate x
    lambda img, m: _affine(img, jnp.eye(2), jnp.asarray([0.45 * img.shape[0] * m, 0.0])),  # translate y
)
NUM_RANDAUGMENT_OPS = len(_OPS)


def rand_augment(key: jax.Array, images: jax.Array, num_ops: int, magnitude: float, prob: float = 0.5) -> jax.Array:
    """RandAugment on [0, 1] float images: per image, `num_ops` ops drawn uniformly, each applied with `prob`."""
    if num_ops <= 0:
        return images
    b = images.shape[0]
    k_op, k_apply, k_sign = jax.random.split(key, 3)
    ops = jax.random.randint(k_op, (b, num_ops), 0, NUM_RANDAUGMENT_OPS)
    apply = jax.random.bernoulli(k_apply, prob, (b, num_ops))
    signs = jnp.where(jax.random.bernoulli(k_sign, 0.5, (b, num_ops)), 1.0, -1.0)
    level = min(magnitude, 10.0) / 10.0

    def layer(x: jax.Array, draws: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, None]:
        def one(img, op, on, sign):
            return jnp.where(on, jax.lax.switch(op, _OPS, img, level * sign), img)

        return jax.vmap(one)(x, *draws), None

    # A scan over the layers: XLA compiles the 14-way op selection once, not num_ops times.
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
    x = images.astype(jnp.float32) / 255.0
    x = random_crop(k_crop, x, cfg.crop_padding)
    if cfg.flip:
        x = random_flip(k_flip, x)
    x = rand_augment(k_ra, x, cfg.randaugment_ops, cfg.randaugment_magnitude, cfg.randaugment_prob)
    x = normalize(x, cfg.mean, cfg.std)
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if cfg.label_smoothing > 0:
        targets = targets * (1.0 - cfg.label_smoothing) + cfg.label_smoothing / num_classes
    return mix(k_mix, x, targets, cfg)
