"""Position-embedding resampling in numpy, matching timm's `resample_abs_pos_embed`.

timm resizes the patch part of a learned position table with `torch.nn.functional.interpolate`
(align_corners=False, antialias=True by default; its Google-npz loader uses bilinear without
antialias). This module reproduces those kernels in numpy, so that converting a checkpoint to a new
image size gives the table timm would give, without importing torch:

- corner convention: align_corners=False, i.e. pixel centres at (i + 0.5) * in / out - 0.5; the
  corners of the old and new grids coincide, not their corner samples.
- "bilinear": triangle filter. "bicubic": Keys' cubic with a = -0.75 (torch's non-antialiased
  kernel; taps beyond the border are clamped to it) or a = -0.5 (the antialiased kernel, as PIL;
  taps beyond the border are dropped and the weights renormalised).
- antialias=True widens the filter by in/out when shrinking (as PIL), so that each new position
  averages the old ones it covers; when enlarging it changes only the bicubic kernel (a = -0.5
  and border handling as above).

Prefix tokens ([CLS]) are kept as they are, never resampled.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

MODES = ("bicubic", "bilinear")


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    h, w = value
    return int(h), int(w)


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel, zero outside |x| < 2."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _weights_plain(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """(n_out, n_in) matrix of torch's non-antialiased interpolation along one axis."""
    scale = n_in / n_out
    out = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        src = (i + 0.5) * scale - 0.5
        if mode == "bilinear":
            src = max(src, 0.0)  # torch clamps negative source coordinates for linear modes only
            i0 = min(int(math.floor(src)), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            t = src - i0
            out[i, i0] += 1.0 - t
            out[i, i1] += t
        else:
            i0 = int(math.floor(src))
            t = src - i0
            taps = np.array([t + 1, t, 1 - t, 2 - t])
            for k, w in zip(range(i0 - 1, i0 + 3), _cubic(taps, -0.75)):
                out[i, min(max(k, 0), n_in - 1)] += w  # border taps are clamped (replicated)
    return out


def _weights_antialiased(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """(n_out, n_in) matrix of torch's antialiased interpolation (PIL's separable filter) along one axis."""
    scale = n_in / n_out
    size = 2.0 if mode == "bilinear" else 4.0
    support = size * 0.5 * scale if scale >= 1.0 else size * 0.5
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    out = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        center = scale * (i + 0.5)
        # int() truncates toward zero, as torch's static_cast<int64_t>.
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        x = (np.arange(lo, hi) - center + 0.5) * invscale
        w = np.maximum(1.0 - np.abs(x), 0.0) if mode == "bilinear" else _cubic(x, -0.5)
        total = w.sum()
        out[i, lo:hi] = w / total if total != 0 else w
    return out


def interpolation_matrix(n_in: int, n_out: int, mode: str = "bicubic", antialias: bool = True) -> np.ndarray:
    """The (n_out, n_in) float64 matrix that F.interpolate(mode, align_corners=False, antialias) applies along one axis."""
    if mode not in MODES:
        raise ValueError(f"unknown resampling mode {mode!r}: use one of {MODES}")
    if n_in == n_out:
        return np.eye(n_in)
    return (_weights_antialiased if antialias else _weights_plain)(n_in, n_out, mode)


def resample_grid(grid: np.ndarray, new_size: Sequence[int], mode: str = "bicubic", antialias: bool = True) -> np.ndarray:
    """Resizes a (H, W, D) table to (new_h, new_w, D); separable, rows first, as torch."""
    new_h, new_w = _pair(new_size)
    rows = interpolation_matrix(grid.shape[0], new_h, mode, antialias)
    cols = interpolation_matrix(grid.shape[1], new_w, mode, antialias)
    out = np.einsum("ih,hwd->iwd", rows, grid.astype(np.float64))
    return np.einsum("jw,iwd->ijd", cols, out)


def resample_pos_embed(
    pos_embed: np.ndarray,
    new_size: int | Sequence[int],
    old_size: int | Sequence[int] | None = None,
    num_prefix_tokens: int = 1,
    mode: str = "bicubic",
    antialias: bool = True,
) -> np.ndarray:
    """Resamples a (1, prefix + H*W, D) position table to a new patch grid, as timm's resample_abs_pos_embed.

    Args:
        pos_embed: the table; prefix tokens ([CLS]) first.
        new_size: the new grid (patches along height, width).
        old_size: the table's grid; None means square (as timm assumes).
        num_prefix_tokens: leading entries kept unchanged.
        mode: "bicubic" (timm's default) or "bilinear".
        antialias: as F.interpolate's antialias (timm's default True; its npz loader uses False).

    Returns:
        The new table, in the input's dtype (computed in float64).
    """
    if mode not in MODES:
        raise ValueError(f"unknown resampling mode {mode!r}: use one of {MODES}")
    pos_embed = np.asarray(pos_embed)
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"a position table of shape (1, tokens, width) was expected, got {pos_embed.shape}")
    n = pos_embed.shape[1] - num_prefix_tokens
    if old_size is None:
        side = math.isqrt(max(n, 0))
        if side * side != n:
            raise ValueError(
                f"the position table has {n} patch entries, not a square grid: give its grid (old_size)"
            )
        old_size = (side, side)
    old_h, old_w = _pair(old_size)
    if old_h * old_w != n:
        raise ValueError(f"the position table has {n} patch entries but the grid {old_h}x{old_w} needs {old_h * old_w}")
    new_h, new_w = _pair(new_size)
    if (new_h, new_w) == (old_h, old_w):
        return pos_embed.copy()
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[0, num_prefix_tokens:]
    grid = resample_grid(grid.reshape(old_h, old_w, -1), (new_h, new_w), mode, antialias)
    grid = grid.reshape(1, new_h * new_w, -1).astype(pos_embed.dtype)
    return np.concatenate([prefix, grid], axis=1)
