"""The PyTorch twin of the train-step augmentation (train.torch_loop.augment): shapes, seeding, per-image draws,
targets, mixing, input checks, the deterministic path against the JAX augment_batch, and the random-resized
crop's interpolation and fallback box against torchvision's.

The distributions of the random parts against JAX: parity_tests/test_augment_distributions.py.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from train.augment_config import AugmentConfig
from train.jax_loop import augment
from train.jax_loop.augment import OP_NAMES, REFERENCE_OPS
from train.recipes import CIFAR10_MEAN, CIFAR10_STD, RECIPES
from train.torch_loop import augment as torch_augment

ROOT = Path(__file__).resolve().parents[1]
# Everything random at once: what the `default` recipe does, RandAugment included.
FULL = AugmentConfig(
    randaugment_ops=2, mixup_alpha=0.8, cutmix_alpha=1.0, mix_prob=1.0, label_smoothing=0.1,
    mean=CIFAR10_MEAN, std=CIFAR10_STD,
)
# FULL with the random-resized crop in place of the padding crop: fine-tuning on a folder of images.
FULL_RESIZED = dataclasses.replace(FULL, crop_padding=0, random_resized_crop=True)
# Pixels in, pixels out (x / 255): no normalisation to undo when reading outputs.
UNIT = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
DETERMINISTIC = dict(crop_padding=0, flip=False, randaugment_ops=0, mixup_alpha=0.0, cutmix_alpha=0.0)


def _batch(n: int = 16, shape: tuple[int, int, int] = (32, 32, 3), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    return torch.from_numpy(images), torch.from_numpy(rng.integers(0, 10, n))


def _seeded(seed: int, images: torch.Tensor, labels: torch.Tensor, cfg: AugmentConfig, num_classes: int = 10):
    torch.manual_seed(seed)
    return torch_augment.augment_batch(images, labels, num_classes, cfg)


@pytest.mark.parametrize(
    ("cfg", "shape"),
    [
        (RECIPES["tutorial"].augment, (32, 32, 3)), (RECIPES["default"].augment, (32, 32, 3)), (FULL, (32, 32, 3)),
        (FULL_RESIZED, (32, 32, 3)), (FULL_RESIZED, (24, 40, 3)),
    ],
    ids=["tutorial", "default", "full", "full_resized_crop", "full_resized_crop_nonsquare"],
)
def test_shapes_dtypes_and_soft_targets(cfg, shape):
    images, labels = _batch(16, shape)
    x, targets = _seeded(0, images, labels, cfg)
    assert x.shape == (16, 3, shape[0], shape[1]) and x.dtype == torch.float32
    assert targets.shape == (16, 10) and targets.dtype == torch.float32
    assert torch.isfinite(x).all()
    np.testing.assert_allclose(targets.sum(-1).numpy(), 1.0, rtol=1e-6)
    assert targets.min() >= cfg.label_smoothing / 10 - 1e-7  # smoothing leaves every class its floor


def test_the_same_seed_gives_the_same_batch_and_another_seed_another():
    images, labels = _batch(16)
    x1, t1 = _seeded(5, images, labels, FULL)
    x2, t2 = _seeded(5, images, labels, FULL)
    assert torch.equal(x1, x2) and torch.equal(t1, t2)
    x3, _ = _seeded(6, images, labels, FULL)
    assert not torch.equal(x1, x3)


def test_each_image_draws_its_own_crop_flip_and_randaugment():
    # One image 64 times over: a transform that drew once for the batch would give 64 equal outputs.
    image, _ = _batch(1)
    images, labels = image.expand(64, -1, -1, -1).contiguous(), torch.zeros(64, dtype=torch.int64)
    for name, cfg in {
        "crop": AugmentConfig(crop_padding=4, flip=False),
        "resized_crop": AugmentConfig(crop_padding=0, random_resized_crop=True, flip=False),
        "flip": AugmentConfig(crop_padding=0, flip=True),
        "randaugment": AugmentConfig(crop_padding=0, flip=False, randaugment_ops=1, randaugment_prob=1.0),
    }.items():
        x, _ = _seeded(0, images, labels, cfg)
        distinct = len({out.numpy().tobytes() for out in x})
        want = 2 if name == "flip" else 20  # 81 crops, 14 ops with signs: many distinct among 64
        assert distinct >= want, f"{name}: {distinct} distinct outputs of 64 identical images"


@pytest.mark.parametrize(
    ("shape", "extra"),
    [
        ((32, 32, 3), dict(mean=CIFAR10_MEAN, std=CIFAR10_STD, label_smoothing=0.1)),
        ((32, 32, 3), dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))),
        ((24, 40, 1), dict(mean=(0.45,), std=(0.23,), label_smoothing=0.2)),
    ],
    ids=["cifar_smoothed", "half", "gray_nonsquare"],
)
def test_deterministic_path_equals_jax(shape, extra):
    cfg = AugmentConfig(**DETERMINISTIC, **extra)
    images, labels = _batch(16, shape)
    x, targets = torch_augment.augment_batch(images, labels, 10, cfg)
    args = (jax.random.key(0), jnp.asarray(images.numpy()), jnp.asarray(labels.numpy(), jnp.int32), 10, cfg)
    x_jax, targets_jax = augment.augment_batch(*args)
    np.testing.assert_array_equal(x.numpy(), np.asarray(x_jax).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(targets.numpy(), np.asarray(targets_jax))
    # Jitted, XLA on CPU fuses some of `x / 255 - mean` into FMAs, rounded once rather than twice: half an
    # ulp of that difference (2^-24 for |x| < 1) apart before the division by std, which can be small, and
    # a rounding of the result.
    x_jit, targets_jit = jax.jit(augment.augment_batch, static_argnums=(3, 4))(*args)
    atol = 2.0**-24 / min(cfg.std) * 1.01
    np.testing.assert_allclose(x.numpy(), np.asarray(x_jit).transpose(0, 3, 1, 2), rtol=2.0**-22, atol=atol)
    np.testing.assert_array_equal(targets.numpy(), np.asarray(targets_jit))


def test_the_random_resized_crop_of_the_whole_image_equals_jax():
    # scale (1, 1), ratio (1, 1) on square images: both crop the whole image and leave it as it is.
    cfg = AugmentConfig(**{**DETERMINISTIC, "random_resized_crop": True}, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    images, labels = _batch(16)
    x, _ = _seeded(0, images, labels, cfg)
    plain, _ = torch_augment.augment_batch(images, labels, 10, AugmentConfig(**DETERMINISTIC))
    assert torch.equal(x, plain)
    x_jax, _ = augment.augment_batch(jax.random.key(0), jnp.asarray(images.numpy()), jnp.asarray(labels.numpy()), 10, cfg)
    np.testing.assert_array_equal(x.numpy(), np.asarray(x_jax).transpose(0, 3, 1, 2))


def _boxes(shape: tuple[int, int], n: int, seed: int) -> np.ndarray:
    """(n, 4) boxes (top, left, height, width) inside an image of `shape`: random ones, and the edge cases
    (the whole image, one pixel, one row, one column, a corner)."""
    h, w = shape
    rng = np.random.default_rng(seed)
    bh, bw = rng.integers(1, h + 1, n), rng.integers(1, w + 1, n)
    random = np.stack([rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1), bh, bw], 1)
    edges = [[0, 0, h, w], [h // 2, w // 3, 1, 1], [3, 0, 1, w], [0, 5, h, 1], [h - 7, w - 5, 7, 5]]
    return np.concatenate([np.asarray(edges), random]).astype(np.int32)


# JAX's resized_crop against torchvision's resized_crop(..., antialias=True), uint8 on CPU, on random images:
# at most 1 level apart (measured: 1, on 9-17 % of the pixels, for every image and output size here), because
# torch resizes uint8 in fixed point and rounds between its two passes; on float images (torch's path on GPU)
# at most 0.002 levels apart before rounding (measured 0.0018, from torch's float32 weights).
RESIZE_LEVELS_APART = 1
RESIZE_FLOAT_APART = 0.005


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((32, 32), (32, 32)),  # the random-resized crop's own case: boxes enlarged (or kept) to the image size
        ((64, 64), (64, 64)),
        ((64, 64), (16, 16)),  # shrinking: the antialias widens the triangle
        ((32, 32), (20, 36)),  # one axis shrunk, the other enlarged
        ((64, 64), (80, 48)),
        ((24, 40), (24, 40)),  # a non-square image
    ],
)
def test_resized_crop_interpolates_as_torchvision(shape, size):
    h, w = shape
    rng = np.random.default_rng(h * w)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    boxes = _boxes(shape, 40, seed=h + w)
    batch = jnp.asarray(np.broadcast_to(image, (len(boxes), *image.shape)))
    got = np.asarray(augment.resized_crop(batch, boxes, size)).astype(np.int32)
    got_float = np.asarray(augment.resized_crop(batch.astype(jnp.float32), boxes, size))
    chw = torch.from_numpy(image).permute(2, 0, 1)
    for k, (top, left, bh, bw) in enumerate(boxes.tolist()):
        box = f"box (top {top}, left {left}, height {bh}, width {bw}) of {shape} to {size}"
        want = v2.functional.resized_crop(chw, top, left, bh, bw, list(size), antialias=True)
        apart = np.abs(want.permute(1, 2, 0).numpy().astype(np.int32) - got[k])
        assert apart.max() <= RESIZE_LEVELS_APART, (
            f"{box}: {apart.max()} levels apart, on {(apart > 0).mean():.1%} of the pixels"
        )
        want_float = v2.functional.resized_crop(chw.float(), top, left, bh, bw, list(size), antialias=True)
        float_apart = np.abs(want_float.permute(1, 2, 0).numpy() - got_float[k]).max()
        assert float_apart <= RESIZE_FLOAT_APART, f"{box}, on float images: {float_apart:.4g} levels apart"


@pytest.mark.parametrize(
    ("shape", "scale", "ratio"),
    [((32, 32), (0.9, 1.0), (3.0, 4.0)), ((24, 40), (0.9, 1.0), (0.5, 0.6)), ((40, 24), (0.9, 1.0), (2.0, 3.0))],
)
def test_the_fallback_box_is_torchvisions(shape, scale, ratio):
    # No drawn box ever fits: both fall back to the centre crop, torchvision's draw-free rule.
    transform = v2.RandomResizedCrop(shape, scale=scale, ratio=ratio, antialias=True)
    want = transform.make_params([torch.zeros(3, *shape, dtype=torch.uint8)])
    boxes = np.asarray(augment.random_resized_crop_boxes(jax.random.key(0), 64, *shape, scale, ratio))
    np.testing.assert_array_equal(boxes, [[want["top"], want["left"], want["height"], want["width"]]] * 64)


def test_label_smoothing_without_mixing():
    images, labels = _batch(16)
    _, targets = torch_augment.augment_batch(images, labels, 10, AugmentConfig(label_smoothing=0.1))
    want = np.full((16, 10), 0.01, np.float32)
    want[np.arange(16), labels.numpy()] = np.float32(0.9) + np.float32(0.01)
    np.testing.assert_array_equal(targets.numpy(), want)


def _black_and_white(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images, each all white (label 0) or all black (label 1), both kinds present."""
    white = torch.from_numpy(np.random.default_rng(seed).permutation(np.arange(n) % 2 == 0))
    images = torch.where(white[:, None, None, None], 255, 0).to(torch.uint8).expand(n, 32, 32, 3).contiguous()
    return images, (~white).to(torch.int64)


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_mixing_moves_pixels_and_target_weight_alike(kind, label_smoothing):
    alphas = dict(mixup_alpha=0.8) if kind == "mixup" else dict(cutmix_alpha=1.0)
    cfg = AugmentConfig(**{**DETERMINISTIC, **alphas}, mix_prob=1.0, label_smoothing=label_smoothing, **UNIT)
    images, labels = _black_and_white()
    for seed in range(4):
        x, targets = _seeded(seed, images, labels, cfg, num_classes=2)
        white = x.mean((1, 2, 3)).numpy()  # the image's share of white pixels: its blend weight or kept area
        assert not np.allclose(white, 1 - labels.numpy()), f"seed {seed}: the batch was not mixed"
        if kind == "cutmix":
            assert set(np.unique(x.numpy())) <= {0.0, 1.0}, "CutMix pastes pixels, it does not blend them"
        else:
            assert (x == x[:, :1, :1, :1]).all(), "mixup blends whole images: each stays one flat gray"
        smoothed_white = white * (1 - label_smoothing) + label_smoothing / 2
        np.testing.assert_allclose(targets[:, 0].numpy(), smoothed_white, atol=1e-6, err_msg=f"seed {seed}")
        np.testing.assert_allclose(targets.sum(-1).numpy(), 1.0, atol=1e-6)


def test_smoothing_commutes_with_mixing():
    # Label smoothing draws nothing: the same seed mixes alike with it and without.
    images, labels = _batch(16)
    smoothed = dataclasses.replace(FULL, label_smoothing=0.1)
    x_s, t_s = _seeded(1, images, labels, smoothed)
    x_0, t_0 = _seeded(1, images, labels, dataclasses.replace(FULL, label_smoothing=0.0))
    assert torch.equal(x_s, x_0)
    np.testing.assert_allclose(t_s.numpy(), (t_0 * 0.9 + 0.01).numpy(), atol=1e-7)


def test_no_mixing_when_mix_prob_is_zero():
    images, labels = _batch(16)
    cfg = AugmentConfig(**{**DETERMINISTIC, "mixup_alpha": 0.8, "cutmix_alpha": 1.0}, mix_prob=0.0)
    x, targets = _seeded(0, images, labels, cfg)
    plain, plain_targets = torch_augment.augment_batch(images, labels, 10, AugmentConfig(**DETERMINISTIC))
    assert torch.equal(x, plain) and torch.equal(targets, plain_targets)


def test_randaugment_magnitude_index_is_timm_level():
    # torchvision's magnitude is linspace(0, max, bins)[index]: index round(10 m) of 101 bins is level m / 10.
    space = v2.RandAugment._AUGMENTATION_SPACE
    for m in (0.0, 2.97, 5.0, 9.0, 10.0, 12.0):
        index = torch_augment.randaugment_magnitude_index(m)
        level = min(round(10 * m), 100) / 100
        assert index == round(10 * min(m, 10.0))
        for op, maximum in {"ShearX": 0.3, "Rotate": 30.0, "Brightness": 0.9, "TranslateX": 150 / 331 * 32}.items():
            got = float(space[op][0](torch_augment.RANDAUGMENT_MAGNITUDE_BINS, 32, 32)[index])
            assert got == pytest.approx(level * maximum, rel=1e-5), (op, m)
        assert float(space["Solarize"][0](101, 32, 32)[index]) == pytest.approx(1 - level, abs=1e-6)
        bits = int(space["Posterize"][0](101, 32, 32)[index])
        assert bits == 8 - round(4 * level), (m, bits)  # JAX keeps 8 - round(4 |m|) bits


def test_torchvision_posterize_keeps_the_documented_bits_per_magnitude():
    from tests.test_train_augment import POSTERIZE_BITS, POSTERIZE_DOC

    space = v2.RandAugment._AUGMENTATION_SPACE
    for magnitude, bits in POSTERIZE_BITS.items():
        index = torch_augment.randaugment_magnitude_index(magnitude)
        assert int(space["Posterize"][0](torch_augment.RANDAUGMENT_MAGNITUDE_BINS, 32, 32)[index]) == bits, magnitude
    assert POSTERIZE_DOC in " ".join(torch_augment.__doc__.split())


# torchvision's name of each JAX op, and how many uint8 levels apart the two may be: the blends truncate
# to uint8 in torchvision (color at factor 0.1 by up to 2). Shears are left out: torchvision shears about
# the top-left corner (like timm), JAX about the centre (see train/torch_augment.py).
TORCHVISION_OPS = {
    "identity": ("Identity", 0), "autocontrast": ("AutoContrast", 0), "equalize": ("Equalize", 0),
    "rotate": ("Rotate", 0), "posterize": ("Posterize", 0), "solarize": ("Solarize", 0),
    "color": ("Color", 2), "contrast": ("Contrast", 1), "brightness": ("Brightness", 1),
    "sharpness": ("Sharpness", 1), "translate_x": ("TranslateX", 0), "translate_y": ("TranslateY", 0),
}


@pytest.mark.parametrize("name", list(TORCHVISION_OPS))
def test_each_torchvision_op_is_the_jax_reference_op(name):
    tv_name, levels_apart = TORCHVISION_OPS[name]
    bins = torch_augment.RANDAUGMENT_MAGNITUDE_BINS
    ra = v2.RandAugment(num_ops=1, num_magnitude_bins=bins, fill=torch_augment.RANDAUGMENT_FILL)
    magnitudes_fn, signed = ra._AUGMENTATION_SPACE[tv_name]  # what RandAugment.forward applies, op by op
    image = _batch(1)[0][0].numpy()
    reference = jax.jit(REFERENCE_OPS[OP_NAMES.index(name)])
    for m in (5.0, 9.0):
        index = torch_augment.randaugment_magnitude_index(m)
        magnitudes = magnitudes_fn(bins, 32, 32)
        magnitude = 0.0 if magnitudes is None else float(magnitudes[index])
        for sign in (1.0, -1.0) if signed else (1.0,):
            chw = torch.from_numpy(image).permute(2, 0, 1)
            out = ra._apply_image_or_video_transform(
                chw, tv_name, sign * magnitude, interpolation=ra.interpolation, fill=ra._fill
            )
            want = reference(jnp.asarray(image, jnp.float32) / 255, jnp.float32(sign * m / 10))
            want = np.rint(np.asarray(want) * 255)
            apart = np.abs(out.permute(1, 2, 0).numpy().astype(np.float32) - want)
            assert apart.max() <= levels_apart, f"{name} at level {sign * m / 10}: {apart.max()} levels apart"


def test_randaugment_probability_zero_leaves_images_and_fill_is_gray():
    images, labels = _batch(8)
    off = AugmentConfig(**{**DETERMINISTIC, "randaugment_ops": 2}, randaugment_prob=0.0)
    plain, _ = torch_augment.augment_batch(images, labels, 10, AugmentConfig(**DETERMINISTIC))
    assert torch.equal(_seeded(0, images, labels, off)[0], plain)
    # On black images only the warps change anything, and what they bring in is gray 128.
    black = torch.zeros(64, 32, 32, 3, dtype=torch.uint8)
    on = AugmentConfig(**{**DETERMINISTIC, "randaugment_ops": 1}, randaugment_prob=1.0, **UNIT)
    x, _ = _seeded(0, black, torch.zeros(64, dtype=torch.int64), on)
    levels = set(np.unique(np.rint(x.numpy() * 255)).tolist())
    assert levels == {0.0, 128.0}, levels


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (torch.rand(4, 32, 32, 3), torch.zeros(4, dtype=torch.int64), "uint8"),
        (torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64), r"NCHW: pass images.permute\(0, 2, 3, 1\)"),
        (torch.zeros(32, 32, 3, dtype=torch.uint8), torch.zeros(32, dtype=torch.int64), r"images\[None\]"),
        (np.zeros((4, 32, 32, 3), np.uint8), torch.zeros(4, dtype=torch.int64), "torch.from_numpy"),
        (torch.zeros(4, 32, 32, 3, dtype=torch.uint8), torch.zeros(5, dtype=torch.int64), r"labels must be integer class indices of shape \(4,\)"),
    ],
    ids=["float", "nchw", "unbatched", "numpy", "labels"],
)
def test_rejects_what_is_not_uint8_nhwc_with_the_fix(images, labels, message):
    with pytest.raises(ValueError, match=message):
        torch_augment.augment_batch(images, labels, 10, AugmentConfig())


def test_restores_torch_threads():
    threads = torch.get_num_threads()
    images, labels = _batch(4)
    torch_augment.augment_batch(images, labels, 10, FULL)
    assert torch.get_num_threads() == threads


def test_does_not_import_jax():
    code = "import sys, train.torch_loop.augment; assert 'jax' not in sys.modules, 'train.torch_loop.augment imported jax'"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
