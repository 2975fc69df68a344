"""Image files (PNG, JPEG, ...) as a model's input: uint8 (H, W, C) at its image size, as a dataset holds them.

The model's own normalisation ((x / 255 - image_mean) / image_std) is applied by whoever runs the model,
exactly as for dataset images, so a file and a dataset example take one path through each twin.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vit_spec.config import ViTConfig


class ImageFileError(ValueError):
    """A file that is not a readable image (missing, truncated, not an image, or of an unusable mode)."""


def read_image(path: str | os.PathLike, config: ViTConfig) -> np.ndarray:
    """Reads one image file as the model `config` sees it: (H, W, channels) uint8 at config.image_hw.

    The image is centre-cropped to the model's aspect ratio, then resized (bicubic, antialiased), as
    timm's eval transform with crop_pct=1 does; colour images become grey for one-channel models and
    grey ones RGB for three-channel models.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise ImageFileError(f"{path}: a folder, not an image file")
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    if config.channels not in (1, 3):
        raise ImageFileError(f"{path}: a {config.channels}-channel model reads no image files (only 1 or 3 channels)")
    try:
        with Image.open(path) as image:
            image.load()  # decodes now: a truncated file fails here, not later
            image = image.convert("L" if config.channels == 1 else "RGB")
    except UnidentifiedImageError:
        raise ImageFileError(f"{path}: not an image file that Pillow can read (PNG, JPEG, ...)") from None
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for truncated or corrupt data
        raise ImageFileError(f"{path}: unreadable image ({e})") from None
    return _fit(image, config)


def fit_pixels(pixels: np.ndarray, config: ViTConfig) -> np.ndarray:
    """A (H, W, C) uint8 image (a dataset's) as the model `config` sees it, cropped and resized as read_image does.
    An image already of the model's size is returned unchanged."""
    from PIL import Image

    if pixels.shape == (*config.image_hw, config.channels):
        return pixels
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3):
        raise ImageFileError(f"images must be (H, W, 1 or 3) uint8, got {pixels.shape}")
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    return _fit(image.convert("L" if config.channels == 1 else "RGB"), config)


def _fit(image, config: ViTConfig) -> np.ndarray:
    from PIL import Image

    h, w = config.image_hw
    image = image.crop(centre_crop_box(image.size, (w, h)))
    image = image.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=None)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def normalise(images: np.ndarray, config: ViTConfig) -> np.ndarray:
    """(N, H, W, C) uint8 -> float32 model input, (x / 255 - image_mean) / image_std, as the trainers normalise."""
    mean = np.asarray(config.image_mean, np.float32)
    std = np.asarray(config.image_std, np.float32)
    return (images.astype(np.float32) / np.float32(255.0) - mean) / std


def centre_crop_box(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest centred (left, top, right, bottom) box of `size` (w, h) with the aspect ratio of `target` (w, h)."""
    w, h = size
    tw, th = target
    if w * th > h * tw:  # too wide: crop the sides
        cw, ch = max(1, round(h * tw / th)), h
    else:
        cw, ch = w, max(1, round(w * th / tw))
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def read_images(paths: list[str | os.PathLike], config: ViTConfig) -> tuple[np.ndarray, list[str], list[str]]:
    """Reads every file that can be read: (images (N, H, W, C) uint8, the paths read, one error per file not read).

    One bad file does not stop the others; the caller reports the errors.
    """
    images, read, errors = [], [], []
    for path in paths:
        try:
            images.append(read_image(path, config))
            read.append(str(path))
        except ImageFileError as e:
            errors.append(str(e))
    h, w = config.image_hw
    stacked = np.stack(images) if images else np.zeros((0, h, w, config.channels), np.uint8)
    return stacked, read, errors
