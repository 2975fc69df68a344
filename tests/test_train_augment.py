"""On-device augmentation: crop (padding or random-resized), flip, mixup/CutMix, and RandAugment's batched op
families held to the per-op reference."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train.jax_loop import augment
from train.jax_loop.augment import OP_NAMES, REFERENCE_OPS, AugmentConfig
from train.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[1]


def _batch(n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)


def _reference_layer(x: jax.Array, op: jax.Array, m: jax.Array) -> jax.Array:
    """One RandAugment layer as it was first written: every image through `lax.switch` over the per-op functions."""
    return jax.vmap(lambda img, i, mi: jax.lax.switch(i, REFERENCE_OPS, img, mi))(x, op, m)


def _families(x: jax.Array, op: jax.Array, m: jax.Array) -> jax.Array:
    x = augment.geometric_family(x, op, m)
    x = augment.pointwise_family(x, op, m)
    return augment.blend_family(x, op, m)


def _reference_rand_augment(key: jax.Array, images: jax.Array, num_ops: int, magnitude: float, prob: float) -> jax.Array:
    """`rand_augment` with the same draws, applying the per-op reference functions."""
    b = images.shape[0]
    k_op, k_apply, k_sign = jax.random.split(key, 3)
    ops = jax.random.randint(k_op, (b, num_ops), 0, augment.NUM_RANDAUGMENT_OPS)
    apply = jax.random.bernoulli(k_apply, prob, (b, num_ops))
    signs = jnp.where(jax.random.bernoulli(k_sign, 0.5, (b, num_ops)), 1.0, -1.0)
    level = min(magnitude, 10.0) / 10.0
    for layer in range(num_ops):
        out = _reference_layer(images, ops[:, layer], level * signs[:, layer])
        images = jnp.where(apply[:, layer, None, None, None], out, images)
    return images


def _test_images(shape: tuple[int, int, int], seed: int) -> dict[str, np.ndarray]:
    """Images that reach the ops' edge cases: on the 256-level grid, off it (as after a blend), few levels, flat."""
    h, w, c = shape
    rng = np.random.default_rng(seed)
    n = 2 * augment.NUM_RANDAUGMENT_OPS
    on_grid = rng.integers(0, 256, (n, h, w, c)).astype(np.float32) / 255
    few_levels = on_grid.copy()
    few_levels[: n // 2] = np.round(few_levels[: n // 2] * 3) / 3  # 4 levels: equalize's step is large
    few_levels[n // 2 :: 3] = 0.5  # flat images: autocontrast and equalize leave them alone
    few_levels[n // 2 + 1 :: 3, ..., 0] = 1.0  # one flat channel
    return {
        "on_grid": on_grid,
        "off_grid": rng.random((n, h, w, c)).astype(np.float32),
        "few_levels": few_levels.astype(np.float32),
    }


@pytest.mark.parametrize("shape", [(32, 32, 3), (24, 40, 3), (16, 16, 1)])
def test_each_family_computes_its_ops_as_the_reference(shape):
    families, reference = jax.jit(_families), jax.jit(_reference_layer)
    n = 2 * augment.NUM_RANDAUGMENT_OPS
    magnitudes = np.resize(np.asarray([-1.0, -0.9, -0.45, 0.0, 0.3, 0.9, 1.0], np.float32), n)
    for seed, (kind, images) in enumerate(_test_images(shape, seed=sum(shape)).items()):
        # Every op on two images of the batch, so each family also meets images it must leave alone.
        op = np.random.default_rng(seed).permutation(np.arange(n) % augment.NUM_RANDAUGMENT_OPS)
        got = np.asarray(families(images, op, magnitudes))
        want = np.asarray(reference(images, op, magnitudes))
        for i, name in enumerate(OP_NAMES):
            rows = op == i
            np.testing.assert_array_equal(got[rows], want[rows], err_msg=f"{name} on {kind} images {shape}")


@pytest.mark.parametrize(("num_ops", "magnitude", "prob"), [(2, 9.0, 0.5), (1, 5.0, 1.0), (3, 10.0, 0.5)])
def test_rand_augment_matches_the_per_op_reference(num_ops, magnitude, prob):
    images, _ = _batch(32, seed=num_ops)
    x = jnp.asarray(images, jnp.float32) / 255
    fast = jax.jit(lambda k, x: augment.rand_augment(k, x, num_ops, magnitude, prob))
    slow = jax.jit(lambda k, x: _reference_rand_augment(k, x, num_ops, magnitude, prob))
    for seed in range(3):
        key = jax.random.key(seed)
        np.testing.assert_array_equal(np.asarray(fast(key, x)), np.asarray(slow(key, x)))


def test_each_randaugment_op_keeps_shape_and_range():
    images, _ = _batch(4)
    x = jnp.asarray(images, jnp.float32) / 255

    @jax.jit
    def all_ops(x, m):
        return jnp.stack([jax.vmap(lambda im: op(im, m))(x) for op in REFERENCE_OPS])

    for m in (-0.9, 0.9):
        out = np.asarray(all_ops(x, jnp.float32(m)))
        assert out.shape == (augment.NUM_RANDAUGMENT_OPS,) + x.shape
        assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1.0 + 1e-6
        changed = [not np.allclose(out[i], x) for i in range(len(out))]
        assert sum(changed) >= augment.NUM_RANDAUGMENT_OPS - 2, changed  # all but identity (and a no-op edge)


# Posterize's bits kept per integer magnitude: torchvision's RandAugment mapping, 8 - round(4 m / 10), which both
# twins use (timm keeps 1 bit at m = 9 in DeiT's increasing set, 3 in its default set). The docstrings say so.
POSTERIZE_BITS = {0: 8, 1: 8, 2: 7, 3: 7, 4: 6, 5: 6, 6: 6, 7: 5, 8: 5, 9: 4, 10: 4}
POSTERIZE_DOC = "8 at m = 0-1, 7 at 2-3, 6 at 4-6, 5 at 7-8, 4 at 9-10"


def test_posterize_keeps_torchvisions_bits_per_magnitude_as_documented():
    ramp = jnp.arange(256, dtype=jnp.float32).reshape(16, 16, 1) / 255  # every uint8 level once
    posterize = jax.jit(REFERENCE_OPS[OP_NAMES.index("posterize")])
    for magnitude, bits in POSTERIZE_BITS.items():
        for sign in (1.0, -1.0):
            out = np.asarray(posterize(ramp, jnp.float32(sign * magnitude / 10)))
            levels = np.unique(np.round(out * 255).astype(int))
            assert np.array_equal(levels, np.arange(0, 256, 2 ** (8 - bits))), (magnitude, sign, levels[:4])
    assert POSTERIZE_DOC in " ".join(augment.__doc__.split())
    assert "4 bits at magnitude 9" in " ".join(augment.REFERENCE_OPS[OP_NAMES.index("posterize")].__doc__.split())


@pytest.mark.parametrize("name", ["tutorial", "default"])
def test_augmentation_keeps_shapes_and_labels(name):
    cfg = RECIPES[name].augment
    images, labels = _batch(32)
    x, targets = jax.jit(lambda k, i, l: augment.augment_batch(k, i, l, 10, cfg))(jax.random.key(3), images, labels)
    assert x.shape == (32, 32, 32, 3) and x.dtype == jnp.float32
    assert targets.shape == (32, 10)
    np.testing.assert_allclose(np.asarray(targets).sum(-1), 1.0, rtol=1e-5)
    targets = np.asarray(targets)
    if cfg.mixup_alpha == 0 and cfg.cutmix_alpha == 0 and cfg.label_smoothing == 0:
        np.testing.assert_array_equal(targets.argmax(-1), labels)
        np.testing.assert_array_equal(targets.max(-1), 1.0)
    else:
        # Mixed targets put their mass on the example's own label and its partner's (the reversed batch).
        partner = labels[::-1]
        floor = cfg.label_smoothing / 10
        for i in range(32):
            heavy = set(np.flatnonzero(targets[i] > floor + 1e-6))
            assert heavy <= {labels[i], partner[i]}, (i, heavy)


def test_crop_and_flip_move_pixels_only():
    images, _ = _batch(8)
    x = jnp.asarray(images, jnp.float32)
    cropped = np.asarray(augment.random_crop(jax.random.key(0), x, 4))
    padded = np.pad(images.astype(np.float32), ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in range(8):  # each output is some 32x32 window of the zero-padded input
        windows = [padded[i, a : a + 32, b : b + 32] for a in range(9) for b in range(9)]
        assert any(np.array_equal(cropped[i], w) for w in windows)
    flipped = np.asarray(augment.random_flip(jax.random.key(1), x))
    kinds = [np.array_equal(flipped[i], images[i]) or np.array_equal(flipped[i], images[i, :, ::-1]) for i in range(8)]
    assert all(kinds)
    assert not np.array_equal(flipped, images)  # with 8 images, some flip (seeded)


# --- the random-resized crop ------------------------------------------------------------------------

RESIZED = AugmentConfig(crop_padding=0, random_resized_crop=True, flip=False)


@pytest.mark.parametrize("shape", [(32, 32, 3), (24, 40, 3), (16, 16, 1)])
def test_random_resized_crop_keeps_shape_and_dtype(shape):
    images = np.random.default_rng(0).integers(0, 256, (8, *shape), dtype=np.uint8)
    crop = jax.jit(augment.random_resized_crop, static_argnums=(2, 3))
    out = crop(jax.random.key(0), images, (0.08, 1.0), (3 / 4, 4 / 3))
    assert out.shape == images.shape and out.dtype == jnp.uint8
    assert not np.array_equal(np.asarray(out), images)
    floats = augment.random_resized_crop(jax.random.key(0), jnp.asarray(images, jnp.float32), (0.08, 1.0), (0.75, 1.0))
    assert floats.dtype == jnp.float32 and floats.shape == images.shape


def test_random_resized_crop_of_the_whole_image_is_the_identity():
    # scale (1, 1) and ratio (1, 1) on a square image: every box is the image, and the resize is the identity.
    images, _ = _batch(8)
    out = augment.random_resized_crop(jax.random.key(0), jnp.asarray(images), (1.0, 1.0), (1.0, 1.0))
    np.testing.assert_array_equal(np.asarray(out), images)
    # So is any whole-image box resized to its own size, square or not.
    tall = np.random.default_rng(1).integers(0, 256, (2, 24, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(augment.resized_crop(tall, np.asarray([[0, 0, 24, 40]] * 2))), tall)


@pytest.mark.parametrize(
    ("shape", "scale", "ratio"),
    [
        ((32, 32), (0.08, 1.0), (3 / 4, 4 / 3)),
        ((24, 40), (0.08, 1.0), (3 / 4, 4 / 3)),
        ((32, 32), (0.5, 1.0), (0.2, 5.0)),  # wide and tall boxes: some attempts do not fit
        ((32, 32), (0.9, 1.0), (3.0, 4.0)),  # no attempt ever fits: the centre-crop fallback, clamped to 3
        ((24, 40), (0.9, 1.0), (0.5, 0.6)),  # the same on a wide image, clamped to 0.6
    ],
)
def test_random_resized_crop_boxes_lie_inside_the_image(shape, scale, ratio):
    h, w = shape
    boxes = np.asarray(jax.jit(augment.random_resized_crop_boxes, static_argnums=(1, 2, 3, 4, 5))(
        jax.random.key(2), 4096, h, w, scale, ratio
    ))
    top, left, bh, bw = boxes.T
    assert boxes.dtype == np.int32 and boxes.shape == (4096, 4)
    assert (bh >= 1).all() and (bw >= 1).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + bh <= h).all() and (left + bw <= w).all()
    # The aspect within the drawn range, but for the rounding of each side (half a pixel).
    aspect = bw / bh
    assert (aspect >= ratio[0] * 0.8).all() and (aspect <= ratio[1] * 1.25).all(), (aspect.min(), aspect.max())
    if scale[0] == 0.9:  # all fallbacks: one centred box with the aspect clamped, as torchvision's
        want_h, want_w = (round(w / ratio[0]), w) if w / h < ratio[0] else (h, round(h * ratio[1]))
        np.testing.assert_array_equal(boxes, np.asarray([[(h - want_h) // 2, (w - want_w) // 2, want_h, want_w]] * 4096))
    else:  # the box's area fraction stays within the scale range, but for the rounding of its sides
        area = bh * bw / (h * w)
        assert area.min() >= scale[0] * 0.7 and area.max() <= 1.0, (area.min(), area.max())
        # top and left take every position a box of the drawn size allows: none stuck at 0 or centred.
        room = h - bh
        assert len(np.unique(top[room > 8])) > 8 and (top[room > 0] == room[room > 0]).any()


def test_random_resized_crop_is_reproducible_per_key_and_differs_per_image():
    images, _ = _batch(1)
    same = jnp.asarray(np.broadcast_to(images, (64, 32, 32, 3)))
    crop = jax.jit(lambda k, x: augment.random_resized_crop(k, x, (0.08, 1.0), (3 / 4, 4 / 3)))
    a, b, c = crop(jax.random.key(4), same), crop(jax.random.key(4), same), crop(jax.random.key(5), same)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    # One image 64 times over: each copy its own box (two may coincide: a box of the whole image is likely).
    distinct = len({img.tobytes() for img in np.asarray(a)})
    assert distinct >= 56, f"{distinct} distinct crops of 64 copies of one image"


def test_augment_batch_with_the_random_resized_crop():
    images, labels = _batch(16)
    cfg = dataclasses.replace(RESIZED, flip=True, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x, targets = jax.jit(augment.augment_batch, static_argnums=(3, 4))(jax.random.key(0), images, labels, 10, cfg)
    assert x.shape == (16, 32, 32, 3) and x.dtype == jnp.float32 and targets.shape == (16, 10)
    # Cropped on uint8 and rounded there, as torchvision: whole levels after normalisation with mean 0, std 1.
    levels = np.asarray(x) * 255
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-3)
    assert not np.allclose(levels, images)


def test_random_resized_crop_excludes_the_padding_crop_and_checks_its_ranges():
    with pytest.raises(ValueError, match=r"random_resized_crop=True and crop_padding=4.*set crop_padding=0"):
        AugmentConfig(random_resized_crop=True)
    for bad in [(0.0, 1.0), (0.5, 0.4), (0.5, 1.5), (0.5,)]:
        with pytest.raises(ValueError, match=r"crop_scale=.*0 < lo <= hi <= 1"):
            AugmentConfig(crop_padding=0, random_resized_crop=True, crop_scale=bad)
    for bad in [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)]:
        with pytest.raises(ValueError, match=r"crop_ratio=.*0 < lo <= hi"):
            AugmentConfig(crop_padding=0, random_resized_crop=True, crop_ratio=bad)
    # Lists (as from JSON) become tuples: the config stays hashable, as jit's static argument must be.
    cfg = AugmentConfig(crop_padding=0, random_resized_crop=True, crop_scale=[0.2, 1], crop_ratio=[0.5, 2])
    assert cfg.crop_scale == (0.2, 1.0) and cfg.crop_ratio == (0.5, 2.0) and hash(cfg) is not None


def test_mixup_cutmix_mixes_targets_like_images():
    cfg = AugmentConfig(cutmix_alpha=1.0, mix_prob=1.0)
    images = jnp.zeros((4, 32, 32, 3)).at[:2].set(1.0)  # first half white, second black
    targets = jax.nn.one_hot(jnp.asarray([0, 0, 1, 1]), 2)
    mixed, t = augment.mix(jax.random.key(5), images, targets, cfg)
    # The white fraction of each image equals its target weight on class 0 (CutMix's area lambda).
    np.testing.assert_allclose(np.asarray(mixed).mean((1, 2, 3)), np.asarray(t)[:, 0], atol=1e-6)


SHARDED = r"""
import json
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from train.jax_loop.augment import augment_batch
from train.recipes import RECIPES

import dataclasses
default = RECIPES["default"].augment
# The default recipe (padding crop), and the same with the random-resized crop in its place.
configs = {"default": default, "resized": dataclasses.replace(default, crop_padding=0, random_resized_crop=True)}
mesh = Mesh(np.asarray(jax.devices()), ("data",))
batch, whole = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
labels = rng.integers(0, 10, 64).astype(np.int32)
key = jax.random.key(1)
result = {"devices": jax.device_count()}
for name, cfg in configs.items():
    fn = lambda k, i, l: augment_batch(k, i, l, 10, cfg)
    sharded = jax.jit(fn, in_shardings=(whole, batch, batch), out_shardings=(batch, batch))
    hlo = sharded.lower(key, images, labels).compile().as_text()
    outputs = zip(sharded(key, images, labels), jax.jit(fn)(key, images, labels))
    same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in outputs)
    collectives = sorted({op for op in ("all-gather", "all-reduce", "all-to-all") if op + "(" in hlo})
    result[name] = {"same": same, "collectives": collectives}
print("RESULT " + json.dumps(result))
"""


def test_augmentation_is_per_device_and_the_same_on_8_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SHARDED], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["devices"] == 8
    for name in ("default", "resized"):  # the padding crop, and the random-resized crop in its place
        assert result[name]["same"], f"{name}: the batch sharded over 8 devices is augmented otherwise than on one"
        # Each device augments its own images: no gathering of the batch, no batch-wide histogram (mixing
        # with the reversed batch moves the partner images, by collective-permute, and nothing else).
        assert result[name]["collectives"] == [], (name, result[name]["collectives"])
