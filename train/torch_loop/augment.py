"""The PyTorch twin of `train.jax_loop.augment`: the same train-step augmentation, built from torchvision's v2 transforms.

In the order of the JAX `augment_batch`: random crop with zero padding, or the random-resized crop ->
horizontal flip -> RandAugment -> normalise -> one-hot targets + label smoothing -> batch mixup/CutMix.
Every draw comes from torch's global RNG, so `torch.manual_seed(s)` before a call fixes its output. The
per-image transforms run in a loop over the batch, one image at a time: a torchvision v2 transform given
a batched tensor draws once for the whole batch, and the JAX code draws per image.

What is the same as the JAX code, by construction:
- crop: `v2.RandomCrop(size, padding, fill=0)`, offsets uniform on 0..2 * padding per axis; flip: p = 0.5.
- random-resized crop: `v2.RandomResizedCrop(size, scale, ratio, antialias=True)`, bilinear. The box is drawn
  as in JAX (10 attempts: area uniform in scale, log aspect uniform in log ratio, sides rounded, the first
  that fits at a uniform position, else the centre crop with the aspect clamped to ratio), and resized back
  with the same anti-aliased triangle weights over the box's pixels only.
- RandAugment draws, per image and per layer, an op uniformly from the same 14 (timm's set less Invert and
  SolarizeAdd), applies it with `randaugment_prob`, with a random sign, at level min(m, 10) / 10 of the
  same maxima. `v2.RandAugment(num_ops=1, magnitude=i, num_magnitude_bins=101)` takes
  `linspace(0, max, 101)[i]`, so index i = round(10 * m) is level m / 10 (posterize: round(8 - 4 * level)
  bits, i.e. 8 - round(4 * level), as in JAX; solarize: threshold 1 - level). The magnitude is timm's
  level out of 10, but each op's strength is torchvision's mapping, which is timm's "increasing" set
  (DeiT's) except posterize: 4 bits kept at m = 9 (8 at m = 0-1, 7 at 2-3, 6 at 4-6, 5 at 7-8, 4 at 9-10),
  where timm's increasing set keeps 4 - int(4 * level) bits (1 at m = 9) and its default set int(4 * level)
  (3 at m = 9). Both twins keep torchvision's; train.jax_loop.augment says the same.
- mixup / CutMix: `v2.MixUp` / `v2.CutMix`, the whole batch mixed with `mix_prob`, CutMix chosen with
  `switch_prob` when both are on. CutMix's box (half sides int(W * sqrt(1 - lam) / 2), centre uniform,
  clipped) and its area-corrected lambda are the same formulas as in JAX.
- With crop_padding=0, random_resized_crop=False, flip=False, randaugment_ops=0 and no mixing the output equals the JAX
  `augment_batch` bit for bit, run op by op on device arrays; jitted on CPU, XLA fuses part of the
  normalisation into FMAs, which moves some values by up to 2^-24 / std.

What differs, so the twins agree in distribution, not draw for draw (their RNGs differ anyway):
- Mixing partner: torchvision pairs image i with image i - 1 (the batch rolled by one), JAX with image
  B - 1 - i (the batch reversed). Over shuffled batches the outputs have the same distribution.
- Shear: torchvision shears about the top-left corner, as timm does (PIL's `(1, level, 0, 0, 1, 0)`
  affine); the JAX code shears about the image centre. At level 0.9 on 32x32, torchvision's brings in
  up to 9 px of gray on one side (none in the top row, 9 in the bottom one), JAX's up to 4 px on each
  side (top and bottom rows, opposite sides): the same shear, shifted sideways.
- Blends (brightness, color, contrast, sharpness) on uint8: torchvision truncates each result to uint8
  (and contrast floors the gray image before its mean), JAX keeps floats: one level apart at most (two for
  color at factor 0.1), also carried into the next layer.
- One op on a uint8 image otherwise gives what JAX gives, rounded to uint8: identity, autocontrast,
  equalize, posterize, solarize, rotate, translate x/y agreed pixel for pixel at levels 0.5 and 0.9 on
  32x32 and 224x224 (tests/test_torch_augment.py holds them to it at 32x32). Translate gets there differently:
  torchvision's maximum is 150/331 = 0.4532 of the size and it truncates to whole pixels
  (int(13.05) = 13 px at 32, level 0.9), JAX's is 0.45 and it rounds the source position (12.96 -> 13).
- Gray fill: 128 here, 0.5 (127.5) in JAX.
- Random-resized crop on uint8, on CPU: torch resizes in fixed point and rounds to uint8 between its
  horizontal and vertical passes; JAX computes both in float32 and rounds once. A level apart at most (on
  9-17 % of the pixels of random images; torch on float images, as on a GPU, agrees to 0.002 levels before
  rounding). Torch draws the box in double precision, JAX in float32: a side can round the other way
  when sqrt(area * r) falls within float32's error of a half.
- Magnitude: a multiple of 0.1 level here (round(10 * m) of 101 bins); JAX takes m as it is.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torchvision.transforms import v2

from train.augment_config import AugmentConfig

# 101 magnitude bins, so bin i is level i / 100 of each op's maximum: index round(10 * m) is level m / 10.
RANDAUGMENT_MAGNITUDE_BINS = 101
RANDAUGMENT_FILL = 128  # gray, as JAX's 0.5


def randaugment_magnitude_index(magnitude: float) -> int:
    """timm's magnitude m (level out of 10, capped at 10 like JAX) -> the index into 101 torchvision bins (whose
    op strengths are torchvision's: posterize keeps 4 bits at m = 9, not timm's 1)."""
    return round(min(max(magnitude, 0.0), 10.0) * 10)


def per_image_transform(cfg: AugmentConfig, size: tuple[int, int]) -> v2.Transform | None:
    """Crop, flip and RandAugment for one (C, H, W) uint8 image; None when there is nothing random to do."""
    steps: list[v2.Transform] = []
    if cfg.random_resized_crop:  # in place of the padding crop (AugmentConfig allows only one of the two)
        steps.append(
            v2.RandomResizedCrop(
                size, scale=cfg.crop_scale, ratio=cfg.crop_ratio,
                interpolation=v2.InterpolationMode.BILINEAR, antialias=True,
            )
        )
    if cfg.crop_padding > 0:
        steps.append(v2.RandomCrop(size, padding=cfg.crop_padding, fill=0))
    if cfg.flip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    index = randaugment_magnitude_index(cfg.randaugment_magnitude)
    for _ in range(cfg.randaugment_ops):
        # timm applies each of the chosen ops with its own probability; torchvision's RandAugment always does.
        one_op = v2.RandAugment(
            num_ops=1, magnitude=index, num_magnitude_bins=RANDAUGMENT_MAGNITUDE_BINS, fill=RANDAUGMENT_FILL
        )
        steps.append(v2.RandomApply([one_op], p=cfg.randaugment_prob))
    return v2.Compose(steps) if steps else None


def batch_mix_transform(cfg: AugmentConfig, num_classes: int) -> v2.Transform | None:
    """Mixup/CutMix of a whole (images, soft targets) batch, applied with `mix_prob`; None when both are off."""
    mixup = v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes) if cfg.mixup_alpha > 0 else None
    cutmix = v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes) if cfg.cutmix_alpha > 0 else None
    if mixup is not None and cutmix is not None:
        mixer: v2.Transform = v2.RandomChoice([cutmix, mixup], p=[cfg.switch_prob, 1.0 - cfg.switch_prob])
    elif mixup is not None or cutmix is not None:
        mixer = mixup or cutmix
    else:
        return None
    return v2.RandomApply([mixer], p=cfg.mix_prob)


def _check_inputs(images: torch.Tensor, labels: torch.Tensor, channels: int) -> None:
    """Raise ValueError, saying what to do, unless images are uint8 (B, H, W, C) and labels are (B,) ints."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}; wrap arrays with torch.from_numpy")
    if images.dtype != torch.uint8:
        raise ValueError(
            f"images must be uint8 pixels in [0, 255], got dtype {images.dtype}; pass the raw pixels, "
            "or convert [0, 1] floats with (x * 255).round().to(torch.uint8)"
        )
    if images.ndim != 4:
        raise ValueError(
            f"images must be a batch (B, H, W, C), got shape {tuple(images.shape)}; add a batch axis with images[None]"
        )
    if images.shape[-1] != channels:
        hint = "; it looks like NCHW: pass images.permute(0, 2, 3, 1)" if images.shape[1] == channels else ""
        raise ValueError(
            f"images must be NHWC (B, H, W, C) with C = {channels} channels (len(cfg.mean)), got shape "
            f"{tuple(images.shape)}{hint}"
        )
    if not isinstance(labels, torch.Tensor) or labels.shape != images.shape[:1] or labels.is_floating_point():
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be integer class indices of shape ({images.shape[0]},), got {got}")


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (B, C, H, W) -> (x / 255 - mean) / std, float32.

    Written with reciprocals because that is what XLA computes for the JAX code: it turns a division by a
    constant or by a broadcast (C,) vector into a multiplication by its float32 reciprocal. So this equals
    JAX's `x / 255` then `normalize` bit for bit, op by op (jitted on CPU, XLA may fuse the multiply-add
    into an FMA, rounded once: up to 2^-24 / std apart).
    """
    one = torch.ones((), dtype=torch.float32, device=images.device)
    inv_255 = one / 255.0
    mean_ = torch.tensor(mean, dtype=torch.float32, device=images.device).view(-1, 1, 1)
    inv_std = one / torch.tensor(std, dtype=torch.float32, device=images.device).view(-1, 1, 1)
    return (images.to(torch.float32) * inv_255 - mean_) * inv_std


@contextlib.contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    """torch's intra-op threads down to one for a while: on small tensors, work split over threads costs more
    in hand-offs than it saves (a shear of one 32x32 image: 0.13 ms on one thread, 10 ms on two on a busy
    2-core machine; normalising 128 of them: 1.5 ms against 32 ms). The setting is process-wide: torch
    work in other Python threads meanwhile runs on one thread too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def augment_batch(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: AugmentConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 NHWC (B, H, W, C) images and int64 labels (B,) -> normalised float32 NCHW images (B, C, H, W)
    and float32 (B, num_classes) soft targets.

    Runs on one intra-op thread (restored on return): the work is per image and small, so spread batches
    over DataLoader workers rather than one batch over threads.

    Args:
        images: raw pixels, channels last. On CPU: the per-image transforms run one image at a time, so on
            a GPU they would be a few kernel launches per image.
        labels: class indices.
        num_classes: width of the targets.
        cfg: what to do, as for the JAX `train.jax_loop.augment.augment_batch`.
    """
    _check_inputs(images, labels, len(cfg.mean))
    with _one_intra_op_thread():
        return _augment(images, labels, num_classes, cfg)


def _augment(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: AugmentConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    x = images.permute(0, 3, 1, 2).contiguous()  # torchvision works on (C, H, W)
    transform = per_image_transform(cfg, (x.shape[2], x.shape[3]))
    if transform is not None:
        x = torch.stack([transform(image) for image in x])
    x = normalize(x, cfg.mean, cfg.std)
    targets = torch.nn.functional.one_hot(labels.long(), num_classes).to(torch.float32)
    if cfg.label_smoothing > 0:
        targets = targets * (1.0 - cfg.label_smoothing) + cfg.label_smoothing / num_classes
    mix = batch_mix_transform(cfg, num_classes)
    if mix is not None:
        # Mixing the smoothed targets (torchvision takes (B, classes) probabilities as well as indices), as
        # JAX does; smoothing is affine and the weights sum to one, so mixing first would give the same.
        x, targets = mix(x, targets)
    return x, targets
