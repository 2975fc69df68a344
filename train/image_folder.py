"""A folder of images as a classification dataset: the layout, reading one file robustly, per-image transforms.

The layout is torchvision's `ImageFolder` and Hugging Face's `imagefolder`, one folder per split:

    PATH/train/CLASS/image.jpg          (required; CLASS names, sorted, give the labels 0, 1, ...)
    PATH/validation/CLASS/image.jpg     (optional; also accepted as PATH/val/)
    PATH/test/CLASS/image.jpg           (optional)

`scan` finds the files and checks the layout before anything is decoded; `read_image` decodes one file
to (H, W, 3) uint8 RGB or raises `BadImageError` with a one-line reason; `resize_center_crop` (timm's
evaluation transform) and `random_resized_crop` (torchvision's training crop, drawing from a numpy
Generator) cut a decoded image to the model's size. Everything here is framework-free (numpy and
Pillow), per image and module-level, so worker processes of a decoding pipeline can call it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import stat
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Suffixes Pillow reads out of the box (compared lower-cased); every other file is ignored and counted.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SPLITS = ("train", "validation", "test")
LAYOUT = (
    "PATH/train/CLASS/image.jpg (optionally PATH/validation/CLASS/... or PATH/val/CLASS/..., and PATH/test/CLASS/...)"
)

# timm's names for the Pillow filters (timm.data.transforms.str_to_interp_mode).
FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


class FolderError(ValueError):
    """A folder that is not a dataset in the expected layout; the message names the problem and the fix."""


class BadImageError(ValueError):
    """One file that cannot be read as an image. str() is one line, `NAME: REASON`."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason

    def __reduce__(self):  # the default pickles args=(message,), which __init__ cannot take back
        return (type(self), (self.name, self.reason))


@dataclasses.dataclass(frozen=True)
class ImageFile:
    """One image of a split: its path relative to the root (posix), its label, and what the decode cache keys on."""

    path: str
    label: int
    size: int  # bytes
    mtime_ns: int


@dataclasses.dataclass(frozen=True)
class FolderLayout:
    """The images of a dataset folder, by split, in a deterministic order (classes in label order, then paths)."""

    root: Path
    class_names: tuple[str, ...]
    splits: dict[str, tuple[ImageFile, ...]]  # keys among SPLITS, only the splits present
    ignored: dict[str, int]  # per split: files under its folder that are not used (hidden, not images, outside a class)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fingerprint(self, split: str) -> str:
        """sha1 of what decoding `split` depends on: the root, the class names and each file's path, label,
        size and mtime. The class names count because adding a class to train/ relabels the other splits."""
        if split not in self.splits:
            raise FolderError(f"{self.root} has no {split} split (it has {', '.join(self.splits)})")
        digest = hashlib.sha1()
        digest.update(f"{self.root.resolve()}\0{split}\0".encode())
        digest.update("\0".join(self.class_names).encode() + b"\n")
        for f in self.splits[split]:
            digest.update(f"{f.path}\0{f.label}\0{f.size}\0{f.mtime_ns}\n".encode())
        return digest.hexdigest()


def is_image_name(name: str) -> bool:
    """Whether `scan` takes a file of this name as an image: not hidden, and a suffix in IMAGE_SUFFIXES."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def scan(root: str | os.PathLike) -> FolderLayout:
    """Finds the images of a dataset folder and checks its layout (see the module docstring).

    Within a class folder, images in nested folders count too (as torchvision's ImageFolder takes them), in
    sorted order of their path. Hidden files and folders (names starting with '.') and files of other
    suffixes are skipped and counted in `ignored`. Symbolic links are followed.

    Raises FolderError, naming the problem and the fix, where the layout is wrong; nothing is decoded.
    """
    root = Path(root)
    if not root.exists():
        raise FolderError(f"{root} does not exist: give the dataset folder, laid out as {LAYOUT}")
    if not root.is_dir():
        raise FolderError(f"{root} is a file, not a folder: give the dataset folder, laid out as {LAYOUT}")
    folders = _split_folders(root)
    train = folders["train"]
    class_names = tuple(_class_folders(train))
    if not class_names:
        loose = sum(1 for n, kind, _ in _entries(train) if kind == "file" and is_image_name(n))
        raise FolderError(
            f"{train} holds no class folder: put each class's images in a folder of its own, "
            f"{root}/train/CLASS/image.jpg"
            + (f" ({_count(loose, 'image')} lying directly in train/)" if loose else "")
        )
    if len(class_names) < 2:
        raise FolderError(
            f"{train} holds one class folder ({class_names[0]}): a classifier needs at least two classes, "
            f"so add a folder per class, {root}/train/CLASS/image.jpg"
        )
    labels = {name: i for i, name in enumerate(class_names)}
    for split, folder in folders.items():
        classes = _class_folders(folder)
        if not classes:
            raise FolderError(
                f"{folder} holds no class folder: put its images in one folder per class, "
                f"{folder}/CLASS/image.jpg, with the class names of train/ (or remove the empty {folder.name}/)"
            )
        extra = sorted(set(classes) - set(labels))
        if extra:
            raise FolderError(
                f"{folder.name}/ has class folders that train/ lacks: {', '.join(extra)}: every class needs training "
                f"images, so add them under {root}/train/ (or remove these folders)"
            )
    splits, ignored, empty = {}, {}, []
    for split, folder in folders.items():
        files, skipped = [], 0
        for entry_name, kind, _ in _entries(folder):
            if kind != "dir" or entry_name.startswith("."):
                # loose files, links to nothing, hidden folders (.ipynb_checkpoints, ...): not a class
                skipped += sum(1 for _ in _walk(folder / entry_name, "", set())) if kind == "dir" else 1
                continue
            found, not_images = [], 0
            for rel, is_image, info in _walk(folder / entry_name, "", set()):
                if is_image:
                    found.append((rel, info))
                else:
                    not_images += 1
            skipped += not_images
            if not found:
                verb = "is not an image" if not_images == 1 else "are not images"
                others = f" ({_count(not_images, 'file')} that {verb})" if not_images else ""
                empty.append(f"{folder.name}/{entry_name}{others}")
            for rel, info in sorted(found, key=lambda item: item[0]):
                path = f"{folder.name}/{entry_name}/{rel}"
                files.append(ImageFile(path, labels[entry_name], info.st_size, info.st_mtime_ns))
        splits[split], ignored[split] = tuple(files), skipped
    if empty:
        raise FolderError(
            f"class folders with no image files ({', '.join(IMAGE_SUFFIXES)}) in {root}: {'; '.join(empty)}: add "
            "images to them or remove them (every class of train/ needs at least one image)"
        )
    return FolderLayout(root, class_names, splits, ignored)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _split_folders(root: Path) -> dict[str, Path]:
    """The split folders of `root`, by split name; raises FolderError where train/ is missing or val/ is doubled."""
    names = {"train": ["train"], "validation": ["validation", "val"], "test": ["test"]}
    found = {}
    for split, candidates in names.items():
        present = [root / n for n in candidates if (root / n).exists()]
        for p in present:
            if not p.is_dir():
                raise FolderError(f"{p} is a file, not a folder: the layout is {LAYOUT}")
        if len(present) > 1:
            raise FolderError(
                f"{root} holds both validation/ and val/: keep one validation split (merge them, or rename or "
                "remove one)"
            )
        if present:
            found[split] = present[0]
    if "train" not in found:
        hint = ""
        entries = _entries(root)
        classes = [n for n, kind, _ in entries if kind == "dir" and not n.startswith(".") and n not in ("val", *SPLITS)
                   and any(is_image for _, is_image, _ in _walk(root / n, "", set()))]
        if classes:
            hint = f"; it looks like the class folders are directly in {root}: move them into {root}/train/"
        elif any(kind == "file" and is_image_name(n) for n, kind, _ in entries):
            hint = (f"; the images lie directly in {root}: put each class's images in a folder of its own "
                    f"under {root}/train/")
        raise FolderError(f"{root} has no train/ folder: the expected layout is {LAYOUT}{hint}")
    return found


def _entries(folder: Path) -> list[tuple[str, str, os.stat_result | None]]:
    """(name, "dir" | "file" | "other", stat) of each entry of `folder`, sorted by name; links are followed."""
    out = []
    with os.scandir(folder) as it:
        for e in it:
            try:
                info = e.stat()
                kind = "dir" if stat.S_ISDIR(info.st_mode) else "file" if stat.S_ISREG(info.st_mode) else "other"
            except OSError:  # a link to nothing
                info, kind = None, "other"
            out.append((e.name, kind, info))
    return sorted(out, key=lambda entry: entry[0])


def _class_folders(split_folder: Path) -> list[str]:
    return [n for n, kind, _ in _entries(split_folder) if kind == "dir" and not n.startswith(".")]


def _walk(folder: Path, prefix: str, seen: set[tuple[int, int]]) -> Iterator[tuple[str, bool, os.stat_result | None]]:
    """(path relative to the walk's start, is an image, stat) of every file below `folder`; files in hidden
    folders count as non-images. `seen` holds the folders visited, so a link back up the tree is not followed
    round and round."""
    here = folder.stat()
    if (here.st_dev, here.st_ino) in seen:
        return
    seen.add((here.st_dev, here.st_ino))
    for name, kind, info in _entries(folder):
        rel = f"{prefix}{name}"
        if kind == "dir":
            for rel_path, is_image, sub in _walk(folder / name, rel + "/", seen):
                yield rel_path, is_image and not name.startswith("."), sub
        else:
            yield rel, kind == "file" and is_image_name(name), info


def _file_problem(path: str | os.PathLike) -> str | None:
    """Why the file cannot be an image before opening it (gone, a folder, empty), or None."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "no longer exists"
    except OSError as e:
        return f"cannot be read ({_one_line(e)})"
    if stat.S_ISDIR(info.st_mode):
        return "a folder, not an image file"
    if info.st_size == 0:
        return "empty file"
    return None


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(error: Exception) -> str:
    """The one-line reason for a Pillow failure."""
    if isinstance(error, FileNotFoundError):
        return "no longer exists"
    if isinstance(error, UnidentifiedImageError):
        return "not an image Pillow can read"
    if isinstance(error, Image.DecompressionBombError):
        return f"too many pixels to decode safely (Pillow's decompression-bomb check: {_one_line(error)})"
    if isinstance(error, PermissionError):
        return f"cannot be read ({_one_line(error)})"
    if isinstance(error, EOFError) or "truncated" in str(error).lower():
        return f"truncated ({_one_line(error)})"
    if isinstance(error, MemoryError):
        return "too large to decode in the memory available"
    return f"cannot be decoded ({type(error).__name__}: {_one_line(error)})"


def check_header(path: str | os.PathLike) -> str | None:
    """A cheap check for the streaming path: None where the file looks like an image, else the one-line reason
    (the text a BadImageError would give after the file's name).

    Reads the header only (Pillow's lazy `Image.open`): empty files, non-images and decompression bombs are
    caught here; a truncated file only when it is decoded (`read_image`).
    """
    problem = _file_problem(path)
    if problem is not None:
        return problem
    try:
        with Image.open(path):
            pass
    except Exception as e:  # Pillow raises many types for a bad header; each is a reason, not a crash
        return _reason(e)
    return None


def header_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of the image `read_image` returns for the file, from its header alone (the file must pass
    `check_header`): EXIF orientations 5 to 8, the quarter turns, swap the sides."""
    with Image.open(path) as image:
        w, h = image.size
        try:
            turned = image.getexif().get(0x0112) in (5, 6, 7, 8)
        except Exception:  # a damaged EXIF block: read_image returns the image as stored, and so do we
            turned = False
    return (w, h) if turned else (h, w)


def read_image(path: str | os.PathLike, *, name: str | None = None) -> np.ndarray:
    """Decodes one image file to (H, W, 3) uint8 RGB, as a classifier's loader should.

    The EXIF orientation is applied (as Hugging Face's loader does; torchvision's ImageFolder does not).
    Animated GIF and WebP files give their first frame. Every colour mode becomes RGB: alpha is dropped as
    `convert("RGB")` drops it (no compositing on a background: what torchvision's and Hugging Face's loaders
    do), palette images go through RGBA, CMYK and YCbCr are converted by Pillow, 16-bit greyscale (I;16, I)
    is scaled to 0..255 by round(value / 257) (Pillow's own conversion clips at 255 instead), float images
    (F) are rounded and clipped to 0..255. Pillow itself reads 16-bit-per-channel colour PNGs as RGB of
    their high bytes (floor(value / 256), within one level of round(value / 257)).

    Args:
        path: the file.
        name: how the file is named in an error (the layout's relative path, say); the path by default.

    Raises BadImageError, one line `NAME: REASON`, for any failure: gone, empty, not an image, truncated
    (the whole image is decoded here, so a cut-off file fails now, not in a batch), decompression bomb.
    """
    name = str(path) if name is None else name
    problem = _file_problem(path)
    if problem is not None:
        raise BadImageError(name, problem)
    try:
        with Image.open(path) as image:
            image.load()  # the full decode: truncation raises here (ImageFile.LOAD_TRUNCATED_IMAGES stays False)
            return _rgb(_upright(image))
    except BadImageError:
        raise
    except Exception as e:  # any failure of one file is that file's problem, reported in one line
        raise BadImageError(name, _reason(e)) from None


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; a damaged EXIF block leaves it as stored rather than
    losing an image whose pixels decoded fine."""
    try:
        if image.getexif().get(0x0112, 1) == 1:  # upright already: skip exif_transpose's copy
            return image
        return ImageOps.exif_transpose(image)
    except Exception:
        return image


def _rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded image of any mode."""
    mode = image.mode
    if mode == "RGB":
        return np.array(image, dtype=np.uint8)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale: 0..65535 onto 0..255 by rounding v / 257 (exact in integers: 257 is odd, no ties).
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        return _grey_to_rgb(((values + 128) // 257).astype(np.uint8))
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        return _grey_to_rgb(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    if mode in ("P", "PA"):
        # Through RGBA, as Pillow asks for palettes with transparency; the colours are those of convert("RGB").
        image = image.convert("RGBA")
    return np.array(image.convert("RGB"), dtype=np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


def _check_pixels(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"images must be (H, W, 3) uint8 (read_image gives them), got {got}")


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be (height, width) of at least 1 pixel, got {tuple(size)}")
    return h, w


def _filter(interpolation: str) -> Image.Resampling:
    if interpolation not in FILTERS:
        raise ValueError(f"interpolation must be one of {', '.join(FILTERS)}, got {interpolation!r}")
    return FILTERS[interpolation]


def eval_resize_size(image_hw: tuple[int, int], size: tuple[int, int], crop_pct: float = 1.0) -> tuple[int, int]:
    """(height, width) that timm's eval transform resizes an image of `image_hw` to before its centre crop.

    The scale size is floor(side / crop_pct). For a square `size`, torchvision's Resize(int): the shorter side
    to the scale size, the longer int(scale * long / short). Otherwise timm's ResizeKeepRatio: both sides
    divided by min(H / scale_h, W / scale_w), rounded (so the aspect ratio is kept, and the crop covers the
    scale size on the side that limits it).
    """
    ih, iw = image_hw
    h, w = size
    if not crop_pct > 0:
        raise ValueError(f"crop_pct must be positive, got {crop_pct}")
    if h == w:
        scale = math.floor(h / crop_pct)
        if iw <= ih:
            return int(scale * ih / iw), scale
        return scale, int(scale * iw / ih)
    scale_h, scale_w = math.floor(h / crop_pct), math.floor(w / crop_pct)
    ratio = min(ih / scale_h, iw / scale_w)
    return round(ih / ratio), round(iw / ratio)


def resize_center_crop(
    image: np.ndarray, size: tuple[int, int], crop_pct: float = 1.0, interpolation: str = "bicubic"
) -> np.ndarray:
    """timm's evaluation transform (transforms_imagenet_eval, crop_mode "center") on a uint8 image, without
    ToTensor/Normalize: resize keeping the aspect ratio (`eval_resize_size`), then centre-crop `size`.

    Args:
        image: (H, W, 3) uint8.
        size: (height, width) of the result.
        crop_pct: the fraction of the resized image the crop keeps (timm's; 0.875 for ImageNet-style eval).
        interpolation: the Pillow filter by timm's name: "bicubic" (timm's default for ViTs), "bilinear", ...
    """
    _check_pixels(image)
    size = _check_size(size)
    resample = _filter(interpolation)
    new_hw = eval_resize_size(image.shape[:2], size, crop_pct)
    if new_hw != image.shape[:2]:  # torchvision skips an identity resize too (no resampling blur)
        image = np.asarray(Image.fromarray(image).resize((new_hw[1], new_hw[0]), resample))
    return _centre_crop(image, size)


def _centre_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """torchvision's CenterCrop: offsets round((side - crop) / 2) (half to even), zero padding where the crop is
    larger than the image (only with crop_pct > 1)."""
    h, w = size
    ih, iw = image.shape[:2]
    if h > ih or w > iw:
        top, left = max(h - ih, 0) // 2, max(w - iw, 0) // 2
        bottom, right = (max(h - ih, 0) + 1) // 2, (max(w - iw, 0) + 1) // 2
        image = np.pad(image, ((top, bottom), (left, right), (0, 0)))
        ih, iw = image.shape[:2]
    top, left = int(round((ih - h) / 2.0)), int(round((iw - w) / 2.0))
    return np.ascontiguousarray(image[top : top + h, left : left + w])


def random_resized_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop of a height x width image: torchvision's RandomResizedCrop.get_params.

    Up to 10 tries of an area fraction uniform in `scale` and an aspect ratio (w / h) log-uniform in `ratio`,
    sides rounded, taken where the box fits, at a uniform position; else the centred box of the whole
    image, clamped to the ratio range. Every draw comes from `rng` (its `uniform` and `integers`), so a
    generator seeded from (seed, step, position) gives the same crop on every run and in every process.
    """
    if not 0 <= scale[0] <= scale[1]:
        raise ValueError(f"scale must be (low, high) with 0 <= low <= high, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must be (low, high) with 0 < low <= high, got {ratio}")
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * float(rng.uniform(scale[0], scale[1]))
        aspect = math.exp(float(rng.uniform(log_ratio[0], log_ratio[1])))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
    image: np.ndarray,
    size: tuple[int, int],
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    interpolation: str = "bicubic",
) -> np.ndarray:
    """torchvision's RandomResizedCrop on a uint8 image: a box from `random_resized_crop_box`, resized to `size`
    (height, width) with the Pillow filter `interpolation` (crop, then resize, as torchvision's resized_crop)."""
    _check_pixels(image)
    h, w = _check_size(size)
    resample = _filter(interpolation)
    top, left, ch, cw = random_resized_crop_box(image.shape[0], image.shape[1], rng, scale, ratio)
    crop = image[top : top + ch, left : left + cw]
    if (ch, cw) == (h, w):
        return np.ascontiguousarray(crop)
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((w, h), resample))
