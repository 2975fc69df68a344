"""CIFAR-10 written out as two image folders: the transfer-learning example of the README, rerunnable offline.

    python -m train.cifar_folders --out ~/data

writes
  OUT/cifar5-pretrain/  airplane, automobile, bird, cat, deer: every CIFAR-10 training image of those five
                        classes (25000) as 32x32 PNG under train/, their test images (5000) under test/
  OUT/cifar5-custom/    dog, frog, horse, ship, truck: a small custom dataset of JPEGs at another resolution,
                        upscaled to 64x64 (bicubic, quality 90): 300 training and 100 validation images per class
                        from CIFAR-10's training split, 200 test images per class from its test split

The two share no class and no image: a model pretrained on the first (`vit train --dataset
folder:OUT/cifar5-pretrain`) is fine-tuned on the second (`--init-from`), which it has never seen, at twice its
resolution (the position embedding is resampled). Which images go where is a fixed function of CIFAR-10's order
(np.random.default_rng(SEED)), so every machine writes the same folders.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from train import data as data_lib

SEED = 0
PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
CUSTOM_CLASSES = (5, 6, 7, 8, 9)
CUSTOM_SIZE = 64
CUSTOM_PER_CLASS = {"train": 300, "validation": 100, "test": 200}
JPEG_QUALITY = 90


def _pick(labels: np.ndarray, label: int, count: int, skip: int = 0) -> np.ndarray:
    """`count` indices of class `label`, after the first `skip`, in a fixed random order of that class's examples."""
    of_class = np.flatnonzero(labels == label)
    order = np.random.default_rng([SEED, label]).permutation(len(of_class))
    return np.sort(of_class[order[skip : skip + count]])


def _write(root: Path, split: str, name: str, images: np.ndarray, indices: np.ndarray, size: int | None) -> None:
    folder = root / split / name
    folder.mkdir(parents=True, exist_ok=True)
    for i in indices:
        image = Image.fromarray(images[i])
        if size is None:
            image.save(folder / f"{i:05d}.png")
        else:
            image.resize((size, size), Image.Resampling.BICUBIC).save(folder / f"{i:05d}.jpg", quality=JPEG_QUALITY)


def write_folders(out: Path, data_dir: str | None = None) -> tuple[Path, Path]:
    """Writes both folders under `out` (each written whole into a temporary folder, then renamed into place: an
    interrupted run leaves nothing half-written). Returns their paths."""
    cifar = data_lib.load("cifar10", data_lib.resolve_data_dir(data_dir))
    names = cifar.class_names
    pretrain, custom = out / "cifar5-pretrain", out / "cifar5-custom"
    for target in (pretrain, custom):
        if target.exists():
            raise FileExistsError(f"{target} exists: remove it, or give another --out")
    out.mkdir(parents=True, exist_ok=True)

    tmp = out / ".cifar5-pretrain.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for label in PRETRAIN_CLASSES:
        _write(tmp, "train", names[label], cifar.train.images, np.flatnonzero(cifar.train.labels == label), None)
        _write(tmp, "test", names[label], cifar.test.images, np.flatnonzero(cifar.test.labels == label), None)
    tmp.rename(pretrain)

    tmp = out / ".cifar5-custom.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    n_train, n_val = CUSTOM_PER_CLASS["train"], CUSTOM_PER_CLASS["validation"]
    for label in CUSTOM_CLASSES:
        _write(tmp, "train", names[label], cifar.train.images, _pick(cifar.train.labels, label, n_train), CUSTOM_SIZE)
        _write(tmp, "validation", names[label], cifar.train.images,
               _pick(cifar.train.labels, label, n_val, skip=n_train), CUSTOM_SIZE)
        _write(tmp, "test", names[label], cifar.test.images,
               _pick(cifar.test.labels, label, CUSTOM_PER_CLASS["test"]), CUSTOM_SIZE)
    tmp.rename(custom)
    return pretrain, custom


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.cifar_folders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the folder to write cifar5-pretrain/ and cifar5-custom/ into")
    parser.add_argument("--data-dir", help="tfds data directory holding cifar10 (default: $TFDS_DATA_DIR)")
    args = parser.parse_args(argv)
    try:
        pretrain, custom = write_folders(Path(args.out).expanduser(), args.data_dir)
    except (FileExistsError, data_lib.DatasetNotFoundError, data_lib.DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {pretrain} (5 classes, 32x32 PNG) and {custom} (5 other classes, {CUSTOM_SIZE}x{CUSTOM_SIZE} JPEG)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
