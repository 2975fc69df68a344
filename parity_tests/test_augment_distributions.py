"""The twins' augmentations draw from the same distributions: train.torch_loop.augment (torchvision) against
train.jax_loop.augment (JAX), by two-sample tests on what each output reveals of its draws.

- crop offsets and flips, read off an image whose pixels encode their own row and column;
- the random-resized crop's boxes (area fraction, aspect, placement), read off the same kind of image;
- the mixing coefficient lambda of mixup and of CutMix, read off the targets of a two-image batch;
- how often a batch is mixed at all (mix_prob), and how often by CutMix (switch_prob);
- how often RandAugment changes an image (its per-op probability, over 12 of the 14 ops that change it).

The RNGs differ, so the draws do not match one for one; their distributions must. Seeds are fixed, so
every test is deterministic; a test fails when the two samples differ at p < P_MIN. Each statistic has
a negative control: the same test, given a wrong distribution, rejects it.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import pytest
import torch
from scipy import stats
from torchvision.transforms import v2

from train.augment_config import AugmentConfig
from train.jax_loop import augment
from train.torch_loop import augment as torch_augment

P_MIN = 1e-3
SEED = 0
N_IMAGES = 4096  # crops and flips per framework
N_BATCHES = 3000  # mixing draws (one per batch) per framework
SIZE = 16  # side of the position-encoding image
MIX_SIZE = 32  # side of the mixing test's images: CutMix's box, so its lambda, depends on it

# Outputs read as pixel values: normalisation with mean 0, std 1 is x / 255.
PLAIN = dict(randaugment_ops=0, mixup_alpha=0.0, cutmix_alpha=0.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
CROP_FLIP = AugmentConfig(crop_padding=4, flip=True, **PLAIN)


# --- crops and flips -------------------------------------------------------------------------------

def position_image(size: int = SIZE) -> np.ndarray:
    """(size, size, 3) uint8: channel 0 is row + 1, channel 1 is column + 1 (0 is left to the padding)."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.stack([rows + 1, cols + 1, np.zeros_like(rows)], -1).astype(np.uint8)


def read_shifts_and_flips(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, H, W, 3) crops of `position_image`, maybe flipped -> each one's (dy, dx) shift and whether it flipped.

    Output pixel (i, j) of an unflipped crop shows source pixel (i + dy, j + dx); dy, dx in [-padding, padding].
    Checks every output is exactly that window of the zero-padded image, so a misread cannot pass.
    """
    n, h, w, _ = pixels.shape
    c = h // 2  # the centre pixels stay inside the source for any padding < h / 2
    flipped = pixels[:, c, c + 1, 1] < pixels[:, c, c, 1]
    unflipped = np.where(flipped[:, None, None, None], pixels[:, :, ::-1], pixels)
    dy = unflipped[:, c, c, 0].astype(int) - 1 - c
    dx = unflipped[:, c, c, 1].astype(int) - 1 - c
    source = position_image(h)
    pad = max(np.abs(dy).max(), np.abs(dx).max())
    padded = np.pad(source, ((pad, pad), (pad, pad), (0, 0)))
    for k in range(n):
        window = padded[pad + dy[k] : pad + dy[k] + h, pad + dx[k] : pad + dx[k] + w]
        assert np.array_equal(unflipped[k], window), f"output {k} is no zero-padded crop of the position image"
    return dy, dx, flipped


def _pixels(x: np.ndarray) -> np.ndarray:
    return np.rint(x * 255).astype(np.int32)


@functools.lru_cache(maxsize=None)
def torch_crops(cfg: AugmentConfig, n: int = N_IMAGES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    torch.manual_seed(SEED)
    images = torch.from_numpy(position_image()).expand(n, -1, -1, -1).contiguous()
    x, _ = torch_augment.augment_batch(images, torch.zeros(n, dtype=torch.int64), 10, cfg)
    return read_shifts_and_flips(_pixels(x.numpy().transpose(0, 2, 3, 1)))


@functools.lru_cache(maxsize=None)
def jax_crops(cfg: AugmentConfig, n: int = N_IMAGES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.broadcast_to(position_image(), (n, SIZE, SIZE, 3))
    fn = jax.jit(augment.augment_batch, static_argnums=(3, 4))
    x, _ = fn(jax.random.key(SEED), images, np.zeros(n, np.int32), 10, cfg)
    return read_shifts_and_flips(_pixels(np.asarray(x)))


def shift_counts(dy: np.ndarray, dx: np.ndarray, max_shift: int = 4) -> np.ndarray:
    """(2 max_shift + 1) ** 2 counts of the (dy, dx) shifts, row-major from (-max_shift, -max_shift)."""
    side = 2 * max_shift + 1
    return np.bincount((dy + max_shift) * side + dx + max_shift, minlength=side * side)


def two_sample_counts_p(counts_a: np.ndarray, counts_b: np.ndarray) -> float:
    """Chi-square test that two histograms come from one distribution (bins empty in both left out)."""
    table = np.stack([counts_a, counts_b])
    table = table[:, table.sum(0) > 0]
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def crop_comparison(torch_cfg: AugmentConfig, jax_cfg: AugmentConfig) -> tuple[float, str]:
    """p-value that both frameworks shift alike, and what to print if they do not."""
    t_counts = shift_counts(*torch_crops(torch_cfg)[:2])
    j_counts = shift_counts(*jax_crops(jax_cfg)[:2])
    p = two_sample_counts_p(t_counts, j_counts)
    grid = lambda c: "\n".join(" ".join(f"{v:4d}" for v in row) for row in c.reshape(9, 9))
    return p, (
        f"crop shift (dy, dx) distributions differ, chi-square p = {p:.3g}\n"
        f"torch (padding {torch_cfg.crop_padding}), rows dy = -4..4, columns dx = -4..4:\n{grid(t_counts)}\n"
        f"jax (padding {jax_cfg.crop_padding}):\n{grid(j_counts)}"
    )


def test_crop_offsets_match_jax_and_are_uniform():
    p, message = crop_comparison(CROP_FLIP, CROP_FLIP)
    assert p >= P_MIN, message
    for name, (dy, dx, _) in {"torch": torch_crops(CROP_FLIP), "jax": jax_crops(CROP_FLIP)}.items():
        counts = shift_counts(dy, dx)
        uniform_p = stats.chisquare(counts).pvalue
        assert uniform_p >= P_MIN, (
            f"{name} crop shifts are not uniform on 9 x 9: p = {uniform_p:.3g}\n{counts.reshape(9, 9)}"
        )


def test_crop_negative_control_padding_3_against_4():
    p, message = crop_comparison(dataclasses.replace(CROP_FLIP, crop_padding=3), CROP_FLIP)
    assert p < P_MIN, "the crop test cannot tell padding 3 from 4:\n" + message


def flip_comparison(torch_flipped: np.ndarray, jax_flipped: np.ndarray) -> tuple[float, str]:
    """Two-proportion z test of the flip rates (the 2 x 2 chi-square test without continuity correction)."""
    counts = lambda f: np.asarray([f.sum(), (~f).sum()])
    p = two_sample_counts_p(counts(torch_flipped), counts(jax_flipped))
    return p, (
        f"flip rates differ, p = {p:.3g}: torch {torch_flipped.mean():.4f} of {torch_flipped.size}, "
        f"jax {jax_flipped.mean():.4f} of {jax_flipped.size}"
    )


def test_flip_rate_matches_jax_and_is_one_half():
    torch_flipped, jax_flipped = torch_crops(CROP_FLIP)[2], jax_crops(CROP_FLIP)[2]
    p, message = flip_comparison(torch_flipped, jax_flipped)
    assert p >= P_MIN, message
    for name, flipped in {"torch": torch_flipped, "jax": jax_flipped}.items():
        half_p = stats.binomtest(int(flipped.sum()), flipped.size, 0.5).pvalue
        assert half_p >= P_MIN, f"{name} flips {flipped.mean():.4f} of images, not one half: p = {half_p:.3g}"


def test_flip_negative_control_p_04_against_05():
    # torch_augment always flips with 0.5, so the control runs torchvision's flip itself with 0.4.
    torch.manual_seed(SEED)
    flip = v2.RandomHorizontalFlip(0.4)
    image = torch.from_numpy(position_image()).permute(2, 0, 1)
    pixels = np.stack([flip(image).numpy().transpose(1, 2, 0) for _ in range(N_IMAGES)])
    p, message = flip_comparison(read_shifts_and_flips(pixels)[2], jax_crops(CROP_FLIP)[2])
    assert p < P_MIN, "the flip test cannot tell p 0.4 from 0.5:\n" + message


# --- random-resized crops --------------------------------------------------------------------------

N_RESIZED = 2048  # random-resized crops per framework
# Not square, so that width and height are not interchangeable; sides below 255, so that the position
# image's values fit in uint8.
RESIZED_SHAPE = (40, 56)
RESIZED = AugmentConfig(**{**PLAIN, "crop_padding": 0, "random_resized_crop": True, "flip": False})


def position_ramp(shape: tuple[int, int]) -> np.ndarray:
    """`position_image` of any (H, W): channel 0 is row + 1, channel 1 is column + 1."""
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return np.stack([rows + 1, cols + 1, np.zeros_like(rows)], -1).astype(np.uint8)


def read_boxes(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) random-resized crops of `position_ramp` -> each one's box (N, 4): top, left, height, width.

    A box is never larger than the image, so the resize never shrinks: the triangle spans one source pixel
    either side, and the first and last output rows, whose centres lie within half a pixel of the box's
    edges, show the box's first and last source rows exactly. The rows between are the bilinear ramp
    between them; each output is checked to be it (to a level), so a misread cannot pass.
    """
    n, h, w, _ = pixels.shape
    top, bottom = pixels[:, 0, 0, 0].astype(int) - 1, pixels[:, -1, 0, 0].astype(int) - 1
    left, right = pixels[:, 0, 0, 1].astype(int) - 1, pixels[:, 0, -1, 1].astype(int) - 1
    boxes = np.stack([top, left, bottom - top + 1, right - left + 1], 1)
    for axis, (start, length, size) in enumerate([(top, boxes[:, 2], h), (left, boxes[:, 3], w)]):
        # Output i samples the box at start + length / size * (i + 0.5) - 0.5, clamped to its pixels.
        centre = (np.arange(size) + 0.5) * (length[:, None] / size) - 0.5
        want = start[:, None] + 1 + np.clip(centre, 0, length[:, None] - 1)
        got = pixels[:, :, 0, 0] if axis == 0 else pixels[:, 0, :, 1]
        apart = np.abs(got - want).max(1)
        assert (apart <= 1.0).all(), f"output {np.argmax(apart)} is no resized box of the position image"
    assert (boxes[:, 2:] >= 1).all() and (boxes[:, 0] + boxes[:, 2] <= h).all() and (boxes[:, 1] + boxes[:, 3] <= w).all()
    return boxes


@functools.lru_cache(maxsize=None)
def torch_boxes(cfg: AugmentConfig, shape: tuple[int, int], n: int = N_RESIZED) -> np.ndarray:
    torch.manual_seed(SEED)
    images = torch.from_numpy(position_ramp(shape)).expand(n, -1, -1, -1).contiguous()
    x, _ = torch_augment.augment_batch(images, torch.zeros(n, dtype=torch.int64), 10, cfg)
    return read_boxes(_pixels(x.numpy().transpose(0, 2, 3, 1)))


@functools.lru_cache(maxsize=None)
def jax_boxes(cfg: AugmentConfig, shape: tuple[int, int], n: int = N_RESIZED) -> np.ndarray:
    images = np.broadcast_to(position_ramp(shape), (n, *shape, 3))
    fn = jax.jit(augment.augment_batch, static_argnums=(3, 4))
    x, _ = fn(jax.random.key(SEED), images, np.zeros(n, np.int32), 10, cfg)
    return read_boxes(_pixels(np.asarray(x)))


def box_statistics(boxes: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """What each box says of its draws: area fraction, log aspect (width / height), and where it lies in
    the room left to it (top / (H - height), left / (W - width), for boxes with room on that axis)."""
    top, left, bh, bw = boxes.T.astype(np.float64)
    h, w = shape
    return {
        "area fraction": bh * bw / (h * w),
        "log aspect": np.log(bw / bh),
        "relative top": top[bh < h] / (h - bh[bh < h]),
        "relative left": left[bw < w] / (w - bw[bw < w]),
    }


def binned_counts(a: np.ndarray, b: np.ndarray, bins: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both samples counted in the same bins: quantiles of the pooled sample (values are discrete, so
    repeated edges merge)."""
    edges = np.unique(np.quantile(np.concatenate([a, b]), np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    return np.histogram(a, edges)[0], np.histogram(b, edges)[0], edges


def box_comparisons(
    torch_cfg: AugmentConfig, jax_cfg: AugmentConfig, shape: tuple[int, int]
) -> list[tuple[str, float, str]]:
    """Per statistic of `box_statistics`: its name, the chi-square p-value that both frameworks draw it
    alike, and what to print if they do not."""
    t_stats = box_statistics(torch_boxes(torch_cfg, shape), shape)
    j_stats = box_statistics(jax_boxes(jax_cfg, shape), shape)
    out = []
    for name in t_stats:
        t_counts, j_counts, edges = binned_counts(t_stats[name], j_stats[name])
        p = two_sample_counts_p(t_counts, j_counts)
        describe = lambda cfg, v: (
            f"scale {cfg.crop_scale}, ratio {tuple(round(r, 3) for r in cfg.crop_ratio)}: mean {v.mean():.4f}"
        )
        out.append((name, p, (
            f"random-resized crop {name} distributions differ on {shape}, chi-square p = {p:.3g}\n"
            f"bin edges {np.round(edges[1:-1], 3).tolist()}\n"
            f"torch ({describe(torch_cfg, t_stats[name])}), counts {t_counts.tolist()}\n"
            f"jax ({describe(jax_cfg, j_stats[name])}), counts {j_counts.tolist()}"
        )))
    return out


def test_random_resized_crop_boxes_match_jax():
    shape = RESIZED_SHAPE
    for _, p, message in box_comparisons(RESIZED, RESIZED, shape):
        assert p >= P_MIN, message
    # And against what the draws should give: at scale (0.08, 1) an area fraction below 0.08 only by
    # rounding a side, and placement uniform in the room left.
    for name, boxes in {"torch": torch_boxes(RESIZED, shape), "jax": jax_boxes(RESIZED, shape)}.items():
        area = box_statistics(boxes, shape)["area fraction"]
        assert area.min() > 0.06 and area.max() <= 1.0, f"{name} area fractions in [{area.min():.3f}, {area.max():.3f}]"
        top, bh = boxes[:, 0], boxes[:, 2]
        room = shape[0] - bh
        # top is uniform on 0..room: its mean over boxes with room is half the room's
        ratio = top[room > 0].sum() / room[room > 0].sum()
        assert abs(ratio - 0.5) < 0.03, f"{name} boxes lie at {ratio:.3f} of their room on average, not 0.5"


def test_random_resized_crop_negative_control_scale_008_against_02():
    shape = RESIZED_SHAPE
    wrong = dataclasses.replace(RESIZED, crop_scale=(0.2, 1.0))
    rejected = {name: p < P_MIN for name, p, _ in box_comparisons(wrong, RESIZED, shape)}
    messages = "\n".join(message for _, _, message in box_comparisons(wrong, RESIZED, shape))
    assert rejected["area fraction"], "the box test cannot tell scale (0.08, 1) from (0.2, 1):\n" + messages


def test_random_resized_crop_negative_control_ratio():
    shape = RESIZED_SHAPE
    wrong = dataclasses.replace(RESIZED, crop_ratio=(0.9, 1 / 0.9))
    rejected = {name: p < P_MIN for name, p, _ in box_comparisons(wrong, RESIZED, shape)}
    messages = "\n".join(message for _, _, message in box_comparisons(wrong, RESIZED, shape))
    assert rejected["log aspect"], "the box test cannot tell ratio (0.9, 1.11) from (0.75, 1.33):\n" + messages


# --- mixup and CutMix ------------------------------------------------------------------------------

def _white_and_black() -> tuple[np.ndarray, np.ndarray]:
    """Two one-channel images, white (label 0) and black (label 1): each is the other's partner in
    both frameworks (batch rolled by one, or reversed, is the same for two)."""
    images = np.zeros((2, MIX_SIZE, MIX_SIZE, 1), np.uint8)
    images[0] = 255
    return images, np.asarray([0, 1])


def read_mixing(white_image: np.ndarray, white_target: np.ndarray) -> dict[str, np.ndarray]:
    """From the white image of each batch and its target weight on "white": lambda, whether the batch was
    mixed, and whether by CutMix (pasted pixels, all 0 or 1) rather than mixup (one flat blend)."""
    lam = white_target.astype(np.float64)
    mixed = lam < 1.0
    pasted = np.all((white_image == 0.0) | (white_image == 1.0), axis=(1, 2))
    return {"lam": lam, "mixed": mixed, "cutmix": mixed & pasted}


MIX_PLAIN = dict(crop_padding=0, flip=False, randaugment_ops=0, mean=(0.0,), std=(1.0,))


@functools.lru_cache(maxsize=None)
def torch_mixing(cfg: AugmentConfig, n: int = N_BATCHES) -> dict[str, np.ndarray]:
    images, labels = _white_and_black()
    images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels)
    torch.manual_seed(SEED)
    white_images, white_targets = [], []
    for _ in range(n):
        x, targets = torch_augment.augment_batch(images_t, labels_t, 2, cfg)
        white_images.append(x[0, 0].numpy())
        white_targets.append(float(targets[0, 0]))
    return read_mixing(np.stack(white_images), np.asarray(white_targets))


@functools.lru_cache(maxsize=None)
def jax_mixing(cfg: AugmentConfig, n: int = N_BATCHES) -> dict[str, np.ndarray]:
    images, labels = _white_and_black()

    @jax.jit
    @jax.vmap
    def white_of_one_batch(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        x, targets = augment.augment_batch(key, images, labels.astype(np.int32), 2, cfg)
        return x[0, :, :, 0], targets[0, 0]

    white_images, white_targets = white_of_one_batch(jax.random.split(jax.random.key(SEED), n))
    return read_mixing(np.asarray(white_images), np.asarray(white_targets))


def _describe(lam: np.ndarray) -> str:
    quantiles = np.quantile(lam, [0.1, 0.25, 0.5, 0.75, 0.9])
    hist = np.histogram(lam, bins=10, range=(0.0, 1.0))[0]
    return (
        f"mean {lam.mean():.4f}, quantiles 10/25/50/75/90% {np.round(quantiles, 3).tolist()}, "
        f"histogram of 10 bins {hist.tolist()}"
    )


def lambda_comparison(torch_cfg: AugmentConfig, jax_cfg: AugmentConfig) -> tuple[float, str]:
    """Two-sample KS p-value of lambda over the mixed batches, and what to print if they differ."""
    t, j = torch_mixing(torch_cfg), jax_mixing(jax_cfg)
    t_lam, j_lam = t["lam"][t["mixed"]], j["lam"][j["mixed"]]
    p = float(stats.ks_2samp(t_lam, j_lam).pvalue)
    alphas = lambda cfg: f"mixup alpha {cfg.mixup_alpha}, cutmix alpha {cfg.cutmix_alpha}"
    return p, (
        f"mixing lambda distributions differ, KS p = {p:.3g}\n"
        f"torch ({alphas(torch_cfg)}), {t_lam.size} batches: {_describe(t_lam)}\n"
        f"jax ({alphas(jax_cfg)}), {j_lam.size} batches: {_describe(j_lam)}"
    )


MIXUP = AugmentConfig(mixup_alpha=0.8, cutmix_alpha=0.0, mix_prob=1.0, **MIX_PLAIN)
CUTMIX = AugmentConfig(mixup_alpha=0.0, cutmix_alpha=1.0, mix_prob=1.0, **MIX_PLAIN)
# Probabilities away from 1/2, so that swapping mixup for CutMix, or mixed for unmixed, shows.
BOTH = AugmentConfig(mixup_alpha=0.8, cutmix_alpha=1.0, mix_prob=0.8, switch_prob=0.3, **MIX_PLAIN)


@pytest.mark.parametrize("cfg", [MIXUP, CUTMIX], ids=["mixup_0.8", "cutmix_1.0"])
def test_mixing_lambda_matches_jax(cfg):
    p, message = lambda_comparison(cfg, cfg)
    assert p >= P_MIN, message
    t = torch_mixing(cfg)
    assert t["mixed"].mean() > 0.99, f"mix_prob 1 mixed only {t['mixed'].mean():.3f} of torch batches"
    assert (t["cutmix"] == (cfg.cutmix_alpha > 0))[t["mixed"]].all(), "torch mixed by the other method"
    if cfg.mixup_alpha > 0:  # lambda itself is Beta(alpha, alpha)
        beta_p = stats.kstest(t["lam"], stats.beta(cfg.mixup_alpha, cfg.mixup_alpha).cdf).pvalue
        assert beta_p >= P_MIN, (
            f"torch mixup lambda is not Beta({cfg.mixup_alpha}): p = {beta_p:.3g}, {_describe(t['lam'])}"
        )


@pytest.mark.parametrize(
    ("wrong", "right"),
    [(dataclasses.replace(MIXUP, mixup_alpha=0.4), MIXUP), (dataclasses.replace(CUTMIX, cutmix_alpha=0.4), CUTMIX)],
    ids=["mixup_0.4_against_0.8", "cutmix_0.4_against_1.0"],
)
def test_lambda_negative_control(wrong, right):
    p, message = lambda_comparison(wrong, right)
    assert p < P_MIN, "the lambda test cannot tell the alphas apart:\n" + message


def rate_comparison(what: str, torch_hits: np.ndarray, jax_hits: np.ndarray) -> tuple[float, str]:
    counts = lambda h: np.asarray([h.sum(), (~h).sum()])
    p = two_sample_counts_p(counts(torch_hits), counts(jax_hits))
    return p, (
        f"{what} differs, p = {p:.3g}: torch {torch_hits.mean():.4f} of {torch_hits.size}, "
        f"jax {jax_hits.mean():.4f} of {jax_hits.size}"
    )


def mix_and_switch_comparisons(torch_cfg: AugmentConfig, jax_cfg: AugmentConfig) -> list[tuple[float, str]]:
    t, j = torch_mixing(torch_cfg), jax_mixing(jax_cfg)
    return [
        rate_comparison("the fraction of mixed batches (mix_prob)", t["mixed"], j["mixed"]),
        rate_comparison(
            "the fraction of CutMix among mixed batches (switch_prob)", t["cutmix"][t["mixed"]], j["cutmix"][j["mixed"]]
        ),
        lambda_comparison(torch_cfg, jax_cfg),
    ]


def test_mix_prob_and_switch_prob_match_jax():
    for p, message in mix_and_switch_comparisons(BOTH, BOTH):
        assert p >= P_MIN, message
    t = torch_mixing(BOTH)
    # Against the nominal rates too. A CutMix box can come out empty (lambda 1, counted unmixed) with
    # probability about 1/256 at 32 x 32: far below what these sample sizes see.
    rates = [("mixed", t["mixed"], BOTH.mix_prob), ("CutMix", t["cutmix"][t["mixed"]], BOTH.switch_prob)]
    for what, hits, rate in rates:
        rate_p = stats.binomtest(int(hits.sum()), hits.size, rate).pvalue
        assert rate_p >= P_MIN, f"torch {what} {hits.mean():.4f} of batches, not {rate}: p = {rate_p:.3g}"


def test_mix_and_switch_negative_control():
    wrong = dataclasses.replace(BOTH, mix_prob=0.7, switch_prob=0.4)
    for p, message in mix_and_switch_comparisons(wrong, BOTH)[:2]:
        assert p < P_MIN, "the rate test cannot tell 0.7 from 0.8 (mix_prob) or 0.4 from 0.3 (switch_prob):\n" + message


# --- RandAugment -------------------------------------------------------------------------------------

N_RANDAUGMENT = 2000
RANDAUGMENT = AugmentConfig(
    **{**PLAIN, "randaugment_ops": 1}, crop_padding=0, flip=False, randaugment_magnitude=9.0, randaugment_prob=0.5
)
# Of the 14 ops, identity and autocontrast leave `randaugment_image` alone (every channel already spans
# 0..255); the other 12 change it, whichever sign. So one layer changes it with probability p * 12 / 14.
CHANGING_OPS = 12 / 14


def randaugment_image() -> np.ndarray:
    image = np.random.default_rng(SEED).integers(0, 256, (MIX_SIZE, MIX_SIZE, 3), dtype=np.uint8)
    image[0, 0], image[0, 1] = 0, 255
    return image


@functools.lru_cache(maxsize=None)
def torch_randaugment_changed(cfg: AugmentConfig, n: int = N_RANDAUGMENT) -> np.ndarray:
    image = randaugment_image()
    torch.manual_seed(SEED)
    images = torch.from_numpy(image).expand(n, -1, -1, -1).contiguous()
    x, _ = torch_augment.augment_batch(images, torch.zeros(n, dtype=torch.int64), 10, cfg)
    return np.any(_pixels(x.numpy().transpose(0, 2, 3, 1)) != image, axis=(1, 2, 3))


@functools.lru_cache(maxsize=None)
def jax_randaugment_changed(cfg: AugmentConfig, n: int = N_RANDAUGMENT) -> np.ndarray:
    image = randaugment_image()
    fn = jax.jit(augment.augment_batch, static_argnums=(3, 4))
    x, _ = fn(jax.random.key(SEED), np.broadcast_to(image, (n, *image.shape)), np.zeros(n, np.int32), 10, cfg)
    return np.any(_pixels(np.asarray(x)) != image, axis=(1, 2, 3))


def test_randaugment_changes_as_many_images_as_jax():
    torch_changed, jax_changed = torch_randaugment_changed(RANDAUGMENT), jax_randaugment_changed(RANDAUGMENT)
    p, message = rate_comparison("the fraction of images RandAugment changes", torch_changed, jax_changed)
    assert p >= P_MIN, message
    rate = RANDAUGMENT.randaugment_prob * CHANGING_OPS
    for name, changed in {"torch": torch_changed, "jax": jax_changed}.items():
        rate_p = stats.binomtest(int(changed.sum()), changed.size, rate).pvalue
        assert rate_p >= P_MIN, (
            f"{name} RandAugment changed {changed.mean():.4f} of images, not {rate:.4f}: p = {rate_p:.3g}"
        )


def test_randaugment_negative_control_prob_04_against_05():
    wrong = dataclasses.replace(RANDAUGMENT, randaugment_prob=0.4)
    p, message = rate_comparison(
        "the fraction of images RandAugment changes", torch_randaugment_changed(wrong), jax_randaugment_changed(RANDAUGMENT)
    )
    assert p < P_MIN, "the RandAugment rate test cannot tell prob 0.4 from 0.5:\n" + message
