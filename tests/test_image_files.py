"""Image files as a model's input (vit_spec.image_files): crop, resize, channels, and clear errors per file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vit_spec import ViTConfig
from vit_spec.image_files import ImageFileError, centre_crop_box, fit_pixels, normalise, read_image, read_images

RGB = ViTConfig(image_size=32, patch_size=4, num_classes=10, width=32, depth=1, heads=2, mlp_dim=64)
GREY = RGB.replace(channels=1, image_mean=None, image_std=None)


def write_image(path, pixels: np.ndarray, **save_kwargs) -> str:
    Image.fromarray(pixels).save(path, **save_kwargs)
    return str(path)


def test_a_png_is_read_at_the_models_size_as_uint8(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    image = read_image(write_image(tmp_path / "a.png", pixels), RGB)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    # A 2x downscale of a constant image is that constant.
    flat = read_image(write_image(tmp_path / "c.png", np.full((64, 64, 3), 77, np.uint8)), RGB)
    assert (flat == 77).all()


def test_an_image_of_the_models_size_is_unchanged(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "a.png", pixels), RGB), pixels)
    np.testing.assert_array_equal(fit_pixels(pixels, RGB), pixels)


def test_a_wide_image_is_centre_cropped_not_squashed(tmp_path):
    # Left and right thirds red, the centre third blue: the square crop is all blue.
    pixels = np.zeros((30, 90, 3), np.uint8)
    pixels[:, :30, 0] = pixels[:, 60:, 0] = 255
    pixels[:, 30:60, 2] = 255
    image = read_image(write_image(tmp_path / "wide.png", pixels), RGB)
    assert image[..., 0].max() < 10 and image[..., 2].min() > 245
    assert centre_crop_box((90, 30), (32, 32)) == (30, 0, 60, 30)
    assert centre_crop_box((40, 100), (20, 10)) == (0, 40, 40, 60)


def test_jpeg_and_grey_images_follow_the_models_channels(tmp_path):
    colour = write_image(tmp_path / "a.jpg", np.full((40, 40, 3), (200, 100, 50), np.uint8), quality=95)
    grey = write_image(tmp_path / "g.png", np.full((40, 40), 128, np.uint8))
    assert read_image(colour, GREY).shape == (32, 32, 1)
    rgb_of_grey = read_image(grey, RGB)
    assert rgb_of_grey.shape == (32, 32, 3) and (rgb_of_grey == 128).all()


def test_normalise_is_the_trainers_normalisation():
    images = np.array([[[[0, 128, 255]]]], np.uint8)
    config = RGB.replace(image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.5, 1.0))
    np.testing.assert_allclose(normalise(images, config)[0, 0, 0], [-2.0, (128 / 255 - 0.5) / 0.5, 0.5], atol=1e-7)


def test_each_kind_of_bad_file_gets_an_error_naming_it(tmp_path):
    good = write_image(tmp_path / "good.png", np.zeros((8, 8, 3), np.uint8))
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(open(write_image(tmp_path / "big.png", np.random.default_rng(0).integers(
        0, 256, (64, 64, 3), dtype=np.uint8)), "rb").read()[:300])
    with pytest.raises(ImageFileError, match="notes.txt: not an image file"):
        read_image(text, RGB)
    with pytest.raises(ImageFileError, match="cut.png: unreadable image"):
        read_image(truncated, RGB)
    with pytest.raises(ImageFileError, match="missing.png: no such file"):
        read_image(tmp_path / "missing.png", RGB)
    images, read, errors = read_images([text, good, truncated, tmp_path / "missing.png"], RGB)
    assert images.shape == (1, 32, 32, 3) and read == [good]
    assert len(errors) == 3 and "notes.txt" in errors[0] and "cut.png" in errors[1] and "missing.png" in errors[2]


def test_a_model_of_other_channel_counts_reads_no_files(tmp_path):
    path = write_image(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ImageFileError, match="4-channel model"):
        read_image(path, RGB.replace(channels=4, image_mean=None, image_std=None))
