"""A folder of images as a dataset (train.image_folder): the layout and its errors, reading any image file
to RGB uint8 or one clear error, and the per-image transforms, checked pixel for pixel against timm's
evaluation transform and torchvision's RandomResizedCrop."""

from __future__ import annotations

import ast
import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from train import image_folder
from train.image_folder import (
    BadImageError,
    FolderError,
    FolderLayout,
    check_header,
    eval_resize_size,
    random_resized_crop,
    random_resized_crop_box,
    read_image,
    resize_center_crop,
    scan,
)


def put(path: Path, pixels: np.ndarray | None = None, **save_kwargs) -> Path:
    """Writes an image (random 8x8 RGB unless `pixels` is given), making its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if pixels is None:
        pixels = np.random.default_rng(len(str(path))).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, **save_kwargs)
    return path


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- the layout ---------------------------------------------------------------------------------------------


def test_train_only_classes_are_sorted_and_files_ordered_by_class_then_name(tmp_path):
    for name in ["zebra/b.png", "zebra/a.JPG", "ant/2.jpeg", "ant/10.webp", "mole/x.bmp"]:
        put(tmp_path / "train" / name)
    touch(tmp_path / "train/ant/.DS_Store")
    touch(tmp_path / "train/ant/._2.jpeg")  # macOS's resource-fork file beside 2.jpeg: hidden, not an image
    touch(tmp_path / "train/zebra/notes.txt")
    touch(tmp_path / "train/README.md")  # outside every class folder
    layout = scan(tmp_path)
    assert layout.class_names == ("ant", "mole", "zebra") and layout.num_classes == 3
    assert list(layout.splits) == ["train"]
    files = layout.splits["train"]
    assert [f.path for f in files] == [
        "train/ant/10.webp", "train/ant/2.jpeg", "train/mole/x.bmp", "train/zebra/a.JPG", "train/zebra/b.png"]
    assert [f.label for f in files] == [0, 0, 1, 2, 2]
    assert layout.ignored == {"train": 4}
    f = files[0]
    info = (tmp_path / f.path).stat()
    assert (f.size, f.mtime_ns) == (info.st_size, info.st_mtime_ns) and f.size > 0


def test_validation_and_test_splits_take_trains_labels(tmp_path):
    for split in ["train", "validation", "test"]:
        for cls in ["cat", "dog"]:
            put(tmp_path / split / cls / "1.png")
    put(tmp_path / "train/emu/1.png")  # validation and test may lack a class
    touch(tmp_path / "test/dog/notes.txt")
    layout = scan(tmp_path)
    assert layout.class_names == ("cat", "dog", "emu")
    assert list(layout.splits) == ["train", "validation", "test"]
    assert [(f.path, f.label) for f in layout.splits["validation"]] == [
        ("validation/cat/1.png", 0), ("validation/dog/1.png", 1)]
    assert [(f.path, f.label) for f in layout.splits["test"]] == [("test/cat/1.png", 0), ("test/dog/1.png", 1)]
    assert layout.ignored == {"train": 0, "validation": 0, "test": 1}


def test_val_is_the_validation_split(tmp_path):
    for split in ["train", "val"]:
        for cls in ["a", "b"]:
            put(tmp_path / split / cls / "x.png")
    layout = scan(str(tmp_path))
    assert list(layout.splits) == ["train", "validation"]
    assert [f.path for f in layout.splits["validation"]] == ["val/a/x.png", "val/b/x.png"]


def test_nested_folders_count_in_order_of_their_path_and_hidden_ones_do_not(tmp_path):
    for name in ["cat/sub/b.png", "cat/z.png", "cat/sub/a.png", "cat/a/deeper/1.png", "dog/1.png"]:
        put(tmp_path / "train" / name)
    put(tmp_path / "train/cat/.ipynb_checkpoints/c.png")  # a hidden folder: skipped, counted
    put(tmp_path / "train/.hidden_class/c.png")  # not a class
    layout = scan(tmp_path)
    assert layout.class_names == ("cat", "dog")
    assert [f.path for f in layout.splits["train"]] == [
        "train/cat/a/deeper/1.png", "train/cat/sub/a.png", "train/cat/sub/b.png", "train/cat/z.png", "train/dog/1.png"]
    assert layout.ignored == {"train": 2}


def test_the_fingerprint_follows_files_labels_and_splits(tmp_path):
    for split in ["train", "validation"]:
        for cls in ["b", "c"]:
            put(tmp_path / split / cls / "1.png")
    first = scan(tmp_path)
    assert first.fingerprint("train") == scan(tmp_path).fingerprint("train")
    assert first.fingerprint("train") != first.fingerprint("validation")
    path = tmp_path / "train/b/1.png"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    assert scan(tmp_path).fingerprint("train") != first.fingerprint("train")
    # A class added to train/ relabels validation's files, whose paths, sizes and times did not change.
    put(tmp_path / "train/a/1.png")
    assert scan(tmp_path).fingerprint("validation") != first.fingerprint("validation")
    (tmp_path / "train/a/1.png").unlink()
    (tmp_path / "train/a").rmdir()
    path.unlink()
    put(tmp_path / "train/b/1.png")
    assert scan(tmp_path).fingerprint("validation") == first.fingerprint("validation")
    put(tmp_path / "train/z/1.png")  # labels unchanged, but the class list (the model's head) is not
    assert scan(tmp_path).fingerprint("validation") != first.fingerprint("validation")
    with pytest.raises(FolderError, match="no test split"):
        first.fingerprint("test")


def test_a_layout_and_a_bad_image_error_survive_pickling(tmp_path):
    for cls in ["a", "b"]:
        put(tmp_path / "train" / cls / "1.png")
    layout = scan(tmp_path)
    assert pickle.loads(pickle.dumps(layout)) == layout
    error = pickle.loads(pickle.dumps(BadImageError("train/a/1.png", "truncated (x)")))
    assert (str(error), error.name, error.reason) == ("train/a/1.png: truncated (x)", "train/a/1.png", "truncated (x)")


# --- the layout's errors, each naming the fix ---------------------------------------------------------------


def test_a_missing_root_or_a_file(tmp_path):
    with pytest.raises(FolderError, match=r"does not exist: .*PATH/train/CLASS/image\.jpg"):
        scan(tmp_path / "nowhere")
    with pytest.raises(FolderError, match="is a file, not a folder"):
        scan(touch(tmp_path / "f.txt"))


def test_no_train_folder_names_the_layout_and_spots_class_folders_in_the_root(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FolderError, match=r"has no train/ folder: the expected layout is PATH/train/CLASS/image\.jpg"):
        scan(tmp_path / "empty")
    put(tmp_path / "flat/cat/1.png")
    put(tmp_path / "flat/dog/1.png")
    with pytest.raises(FolderError, match=r"class folders are directly in .*flat: move them into .*flat/train/"):
        scan(tmp_path / "flat")


def test_train_without_class_folders(tmp_path):
    put(tmp_path / "train/1.png")
    with pytest.raises(FolderError, match=r"holds no class folder: put each class's images in a folder of its own, "
                                          r".*/train/CLASS/image\.jpg \(1 image lying directly in train/\)"):
        scan(tmp_path)


def test_one_class_is_not_a_classifier(tmp_path):
    put(tmp_path / "train/cat/1.png")
    with pytest.raises(FolderError, match=r"one class folder \(cat\): a classifier needs at least two classes"):
        scan(tmp_path)


def test_class_folders_without_images_are_named_in_any_split(tmp_path):
    put(tmp_path / "train/cat/1.png")
    touch(tmp_path / "train/dog/notes.txt")
    with pytest.raises(FolderError, match=r"no image files .* train/dog \(1 file that is not an image\): add images "
                                          r"to them or remove them"):
        scan(tmp_path)
    put(tmp_path / "train/dog/1.png")
    put(tmp_path / "validation/cat/1.png")
    (tmp_path / "validation/dog").mkdir(parents=True)
    with pytest.raises(FolderError, match=r"no image files .*: validation/dog:"):
        scan(tmp_path)


def test_an_empty_validation_or_test_folder(tmp_path):
    for cls in ["a", "b"]:
        put(tmp_path / "train" / cls / "1.png")
    put(tmp_path / "test/1.png")
    with pytest.raises(FolderError, match=r"test holds no class folder: .*/test/CLASS/image\.jpg, with the class "
                                          r"names of train/ \(or remove the empty test/\)"):
        scan(tmp_path)


def test_validation_and_val_together(tmp_path):
    for split in ["train", "validation", "val"]:
        for cls in ["a", "b"]:
            put(tmp_path / split / cls / "1.png")
    with pytest.raises(FolderError, match=r"both validation/ and val/: keep one validation split"):
        scan(tmp_path)


def test_classes_that_train_lacks(tmp_path):
    for cls in ["a", "b"]:
        put(tmp_path / "train" / cls / "1.png")
    for cls in ["a", "c", "d"]:
        put(tmp_path / "test" / cls / "1.png")
    with pytest.raises(FolderError, match=r"test/ has class folders that train/ lacks: c, d: .*add them under"):
        scan(tmp_path)


# --- reading one image --------------------------------------------------------------------------------------


def test_rgb_png_and_jpeg_read_as_uint8_rgb(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = read_image(put(tmp_path / "a.png", pixels))
    assert image.dtype == np.uint8 and image.flags.writeable
    np.testing.assert_array_equal(image, pixels)
    flat = read_image(put(tmp_path / "a.jpg", np.full((16, 24, 3), (200, 100, 50), np.uint8), quality=95))
    assert flat.shape == (16, 24, 3) and np.abs(flat.astype(int) - (200, 100, 50)).max() <= 3
    assert check_header(tmp_path / "a.png") is None and check_header(tmp_path / "a.jpg") is None


def test_a_truncated_jpeg_fails_at_decode_naming_truncation(tmp_path):
    full = put(tmp_path / "train/cat/3.jpg", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 2])
    assert check_header(full) is None  # the header is intact: truncation shows only at decode
    with pytest.raises(BadImageError, match=r"^train/cat/3\.jpg: truncated \(image file is truncated") as caught:
        read_image(full, name="train/cat/3.jpg")
    assert "\n" not in str(caught.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_files_that_are_not_images(tmp_path):
    text = touch(tmp_path / "notes.jpg", "not a picture\nat all")
    with pytest.raises(BadImageError, match=r"^dog/notes\.jpg: not an image Pillow can read$"):
        read_image(text, name="dog/notes.jpg")
    assert check_header(text) == "not an image Pillow can read"
    empty = tmp_path / "x.png"
    empty.touch()
    with pytest.raises(BadImageError, match=r"x\.png: empty file$"):
        read_image(empty)
    assert check_header(empty) == "empty file"
    with pytest.raises(BadImageError, match="no longer exists"):
        read_image(tmp_path / "gone.png")
    assert check_header(tmp_path / "gone.png") == "no longer exists"
    assert check_header(tmp_path) == "a folder, not an image file"


def test_a_decompression_bomb_is_a_bad_image(tmp_path, monkeypatch):
    path = put(tmp_path / "big.png", np.zeros((40, 40, 3), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 pixels > 2 * 100: Pillow's error, not its warning
    assert check_header(path).startswith("too many pixels to decode safely")
    with pytest.raises(BadImageError, match="too many pixels to decode safely"):
        read_image(path)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "c.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    image = read_image(path)
    assert image.shape == (8, 8, 3) and np.abs(image.astype(int) - (255, 0, 0)).max() <= 3
    assert check_header(path) is None


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 65535, 32896, 257, 385, 386]], np.uint16)
    path = put(tmp_path / "g16.png", values)
    assert Image.open(path).mode == "I;16"
    image = read_image(path)
    # round(v / 257): 385 / 257 = 1.498 -> 1, 386 / 257 = 1.502 -> 2 (floor(v / 256) would give 1, clipping 255).
    np.testing.assert_array_equal(image[0, :, 0], [0, 255, 128, 1, 1, 2])
    assert (image == image[..., :1]).all()


def write_png16_rgb(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG (Pillow writes none), from its chunks."""
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def test_16_bit_rgb_png_keeps_pillows_high_bytes(tmp_path):
    values = np.array([[[65535, 32896, 0], [256, 511, 1000]]], np.uint16)
    path = write_png16_rgb(tmp_path / "rgb16.png", values)
    assert Image.open(path).mode == "RGB"  # Pillow has no 16-bit colour mode: it keeps each value's high byte
    image = read_image(path)
    np.testing.assert_array_equal(image, values >> 8)
    assert np.abs(image.astype(int) - np.round(values / 257)).max() <= 1


def test_palette_with_transparency_rgba_grey_and_bilevel(tmp_path):
    palette = Image.new("P", (2, 2))
    palette.putpalette([255, 0, 0, 0, 255, 0])
    palette.putpixel((1, 1), 1)
    palette.save(tmp_path / "p.png", transparency=0)
    assert Image.open(tmp_path / "p.png").mode == "P"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "palette images with transparency" warning
        image = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(image, [[[255, 0, 0], [255, 0, 0]], [[255, 0, 0], [0, 255, 0]]])

    rgba = np.array([[[10, 20, 30, 0], [40, 50, 60, 255]]], np.uint8)
    # Alpha dropped, colour kept even where fully transparent: convert("RGB"), as torchvision and HF read it.
    np.testing.assert_array_equal(read_image(put(tmp_path / "a.png", rgba)), rgba[..., :3])
    la = Image.fromarray(np.array([[[7, 0], [9, 255]]], np.uint8), "LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), [[[7] * 3, [9] * 3]])

    grey = np.array([[0, 128, 255]], np.uint8)
    np.testing.assert_array_equal(read_image(put(tmp_path / "l.png", grey)), np.repeat(grey[..., None], 3, -1))
    Image.fromarray(np.array([[False, True]])).save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), [[[0] * 3, [255] * 3]])


def test_float_32_bit_and_ycbcr_tiffs(tmp_path):
    Image.fromarray(np.array([[-5.0, 100.4, 100.6, 300.0]], np.float32)).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif")[0, :, 0], [0, 100, 101, 255])  # rounded, clipped
    Image.fromarray(np.array([[-5, 0, 386, 65535, 70000]], np.int32)).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    np.testing.assert_array_equal(read_image(tmp_path / "i.tif")[0, :, 0], [0, 0, 2, 255, 255])  # as 16-bit, clipped
    Image.new("YCbCr", (2, 2), (76, 85, 255)).save(tmp_path / "y.tif")  # pure red in YCbCr
    assert Image.open(tmp_path / "y.tif").mode == "YCbCr"
    assert np.abs(read_image(tmp_path / "y.tif").astype(int) - (255, 0, 0)).max() <= 2


def test_an_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(tmp_path / "a.gif").n_frames == 2
    image = read_image(tmp_path / "a.gif")
    assert image.shape == (4, 4, 3) and (image == (255, 0, 0)).all()


def test_exif_orientation_is_applied(tmp_path):
    # Stored 2 rows x 3 columns; orientation 6 says "turn 90 degrees clockwise to view".
    stored = np.array([[0, 50, 100], [150, 200, 250]], np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = put(tmp_path / "r.jpg", np.repeat(stored[..., None], 3, -1), exif=exif, quality=100, subsampling=0)
    assert Image.open(path).size == (3, 2)
    image = read_image(path)
    assert image.shape == (3, 2, 3)
    # Turned clockwise: the first column, read bottom to top, becomes the first row.
    np.testing.assert_allclose(image[..., 0], np.rot90(stored, k=-1), atol=8)
    assert check_header(path) is None
    assert image_folder.header_size(path) == (3, 2), "the header's size must be the turned image's"


def test_the_module_imports_only_the_standard_library_numpy_and_pillow():
    tree = ast.parse(Path(image_folder.__file__).read_text())
    nodes = list(ast.walk(tree))
    names = {alias.name.split(".")[0] for node in nodes if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module.split(".")[0] for node in nodes if isinstance(node, ast.ImportFrom) and node.module}
    third_party = names - {"__future__", "dataclasses", "hashlib", "math", "os", "stat", "pathlib", "typing"}
    assert third_party <= {"numpy", "PIL"}, third_party


# --- transforms ---------------------------------------------------------------------------------------------


def timm_eval_uint8(pixels: np.ndarray, size: tuple[int, int], crop_pct: float, interpolation: str) -> np.ndarray:
    """timm's eval transform on a PIL image, stopped before ToTensor/Normalize."""
    timm = pytest.importorskip("timm")
    transform = timm.data.create_transform(input_size=(3, *size), crop_pct=crop_pct, interpolation=interpolation)
    image = Image.fromarray(pixels)
    for step in transform.transforms:
        if type(step).__name__ in ("ToTensor", "MaybeToTensor", "Normalize"):
            break
        image = step(image)
    return np.asarray(image)


@pytest.mark.parametrize("source", [(300, 400), (400, 300), (256, 256), (97, 131), (500, 37)])
@pytest.mark.parametrize("size", [(224, 224), (48, 64), (64, 40)])
@pytest.mark.parametrize("crop_pct", [0.875, 1.0])
def test_resize_center_crop_is_timms_eval_transform_pixel_for_pixel(source, size, crop_pct):
    pixels = np.random.default_rng(sum(source)).integers(0, 256, (*source, 3), dtype=np.uint8)
    ours = resize_center_crop(pixels, size, crop_pct, "bicubic")
    assert ours.shape == (*size, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, timm_eval_uint8(pixels, size, crop_pct, "bicubic"))


@pytest.mark.parametrize("crop_pct", [0.9, 1.15])  # above 1 the crop is larger than the resize: zero padding
def test_resize_center_crop_bilinear_and_odd_crop_pcts_are_timms_too(crop_pct):
    pixels = np.random.default_rng(3).integers(0, 256, (123, 77, 3), dtype=np.uint8)
    for size in [(32, 32), (30, 40)]:
        np.testing.assert_array_equal(resize_center_crop(pixels, size, crop_pct, "bilinear"),
                                      timm_eval_uint8(pixels, size, crop_pct, "bilinear"))


def test_the_eval_resize_sizes():
    assert eval_resize_size((300, 400), (224, 224), 0.875) == (256, 341)  # shorter side to floor(224 / 0.875)
    assert eval_resize_size((400, 300), (224, 224), 1.0) == (298, 224)  # int(224 * 400 / 300) = 298
    assert eval_resize_size((300, 400), (48, 64), 1.0) == (48, 64)
    assert eval_resize_size((300, 400), (64, 48), 1.0) == (64, 85)  # round(400 / (300 / 64))
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_center_crop(pixels, (32, 32)), pixels)  # no resampling at the same size


def test_transforms_refuse_what_they_cannot_take():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        resize_center_crop(np.zeros((8, 8), np.uint8), (4, 4))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        random_resized_crop(np.zeros((8, 8, 3), np.float32), (4, 4), np.random.default_rng(0))
    with pytest.raises(ValueError, match="interpolation must be one of"):
        resize_center_crop(np.zeros((8, 8, 3), np.uint8), (4, 4), interpolation="cubic")
    with pytest.raises(ValueError, match="scale must be"):
        random_resized_crop_box(8, 8, np.random.default_rng(0), scale=(1.0, 0.5))


def test_random_resized_crop_boxes_are_in_bounds_reproducible_and_distributed_as_asked():
    for height, width in [(224, 224), (50, 400), (400, 50), (3, 5), (1, 1)]:
        rng = np.random.default_rng(0)
        for _ in range(300):
            top, left, h, w = random_resized_crop_box(height, width, rng)
            assert 0 < h and 0 < w and 0 <= top and 0 <= left and top + h <= height and left + w <= width
    boxes = [random_resized_crop_box(300, 200, np.random.default_rng(7)) for _ in range(3)]
    assert boxes[0] == boxes[1] == boxes[2]
    assert len({random_resized_crop_box(300, 200, np.random.default_rng(s)) for s in range(20)}) > 15
    assert random_resized_crop_box(64, 64, np.random.default_rng(0), scale=(1, 1), ratio=(1, 1)) == (0, 0, 64, 64)
    # No box of ratio 2..3 fits a square at full area: the fallback is the centred box clamped to ratio 2.
    assert random_resized_crop_box(64, 64, np.random.default_rng(0), scale=(1, 1), ratio=(2, 3)) == (16, 0, 32, 64)
    rng = np.random.default_rng(1)
    boxes = np.array([random_resized_crop_box(1000, 1000, rng) for _ in range(2000)])
    area, aspect = boxes[:, 2] * boxes[:, 3] / 1e6, boxes[:, 3] / boxes[:, 2]
    assert area.min() >= 0.079 and area.max() <= 1.0
    assert aspect.min() >= 0.74 and aspect.max() <= 1.34
    assert 0.4 < area.mean() < 0.56 and 0.9 < np.exp(np.log(aspect).mean()) < 1.1


class TorchDraws:
    """numpy's Generator interface drawing from torch's global generator in torchvision's order."""

    def __init__(self, seed: int):
        import torch

        self.torch = torch
        torch.manual_seed(seed)

    def uniform(self, low: float, high: float) -> float:
        return self.torch.empty(1).uniform_(low, high).item()

    def integers(self, low: int, high: int) -> int:
        return self.torch.randint(low, high, size=(1,)).item()


def test_random_resized_crop_is_torchvisions_draw_for_draw():
    torch = pytest.importorskip("torch")
    transforms = pytest.importorskip("torchvision.transforms")
    for height, width in [(224, 224), (100, 400), (37, 53)]:
        for scale, ratio in [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.9, 1.0), (0.5, 2.0))]:
            for seed in range(100):
                ours = random_resized_crop_box(height, width, TorchDraws(seed), scale, ratio)
                torch.manual_seed(seed)
                theirs = transforms.RandomResizedCrop.get_params(torch.zeros(1, height, width), scale, ratio)
                assert ours == tuple(theirs), (height, width, scale, ratio, seed)
    pixels = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    crop = transforms.RandomResizedCrop((32, 48), interpolation=transforms.InterpolationMode.BICUBIC)
    for seed in range(20):
        ours = random_resized_crop(pixels, (32, 48), TorchDraws(seed))
        torch.manual_seed(seed)
        np.testing.assert_array_equal(ours, np.asarray(crop(Image.fromarray(pixels))))


def test_random_resized_crop_of_the_whole_image_at_its_size_is_the_image():
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = random_resized_crop(pixels, (32, 32), np.random.default_rng(5), scale=(1, 1), ratio=(1, 1))
    np.testing.assert_array_equal(out, pixels)
    out = random_resized_crop(pixels, (16, 24), np.random.default_rng(5), interpolation="bilinear")
    assert out.shape == (16, 24, 3) and out.dtype == np.uint8


def test_layouts_are_frozen(tmp_path):
    for cls in ["a", "b"]:
        put(tmp_path / "train" / cls / "1.png")
    layout = scan(tmp_path)
    assert isinstance(layout, FolderLayout)
    with pytest.raises(AttributeError):
        layout.class_names = ("x",)  # type: ignore[misc]
