"""`--dataset folder:PATH`: a folder of the user's own images as a run's data.

PATH holds `train/CLASS/*` and optionally `validation/CLASS/*` (or `val/`) and `test/CLASS/*`, the layout of
torchvision's ImageFolder and Hugging Face's imagefolder (train.image_folder.scan). Images of any size, mode and
format Pillow reads are brought to the model's resolution:
  training images   resized (shorter side) and centre-cropped to it, whole (crop_pct 1): the train step's
                    random-resized crop then cuts its boxes from that square
  held-out images   timm's evaluation transform: resized to size / crop_pct (DEFAULT_CROP_PCT 1), centre-cropped
A folder whose decoded training images fit MEMORY_LIMIT is decoded once, by worker processes, and cached as uint8
(like a tfds dataset: train.data); a larger one streams (FolderPlan.streamed): its training images are read
and random-resized-cropped by the workers for each step (train.image_pipeline.FolderStream).

An unreadable file (empty, not an image, truncated) is named once, counted and left out; the count goes into
config.json and the run's first lines. What would make the run meaningless (a class without a readable image)
is an error before training starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from train import data as data_lib
from train import image_folder, image_pipeline
from vit_spec import atomic_path

PREFIX = "folder:"
# The most bytes of decoded training images kept in memory (VIT_FOLDER_MEMORY_LIMIT overrides); beyond it the
# folder streams. 8 GiB: a third of this 24 GiB machine, ~56000 images at 224x224.
MEMORY_LIMIT = 8 << 30
# The evaluation crop's share of the resized image. 1: the whole centre square, as `vit predict` reads an image
# file (vit_spec.image_files), so a prediction sees what an evaluation saw; timm's ImageNet models use 0.875-0.9.
DEFAULT_CROP_PCT = 1.0
NAMED_UNREADABLE = 20  # unreadable files named one by one in a run's first lines; the rest are counted
VALIDATION_FRACTION = 10  # without a validation/ folder (and no --validation), a tenth of train is held out


def is_folder(name: str) -> bool:
    return name.startswith(PREFIX)


def folder_root(name: str) -> Path:
    """The folder of a `folder:PATH` dataset name (~ expanded)."""
    path = name[len(PREFIX):]
    if not path:
        raise image_folder.FolderError("--dataset folder: needs a path: --dataset folder:PATH, where PATH holds train/CLASS/*")
    return Path(path).expanduser()


def memory_limit() -> int:
    value = os.environ.get("VIT_FOLDER_MEMORY_LIMIT")
    return int(value) if value else MEMORY_LIMIT


@dataclasses.dataclass(frozen=True)
class FolderPlan:
    """What a folder run reads, decided before any image is decoded."""

    layout: image_folder.FolderLayout
    size: tuple[int, int]
    crop_pct: float
    train: tuple[int, ...]  # indices into layout.splits["train"] that train
    held_out: tuple[int, ...]  # ... held out for validation (empty with a validation/ folder, or none)
    validation_folder: bool  # the validation split is the folder's validation/ (else held out of train, or none)
    streamed: bool
    unreadable: dict[str, str]  # path -> reason, found by the header check (more are found while decoding)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.layout.class_names

    def train_transform(self, random_crop: bool = False, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> image_pipeline.Transform:
        return image_pipeline.Transform(self.size, 1.0, random_crop=random_crop, scale=scale, ratio=ratio)

    def eval_transform(self) -> image_pipeline.Transform:
        return image_pipeline.Transform(self.size, self.crop_pct)


def plan(name: str, image_size: int | tuple[int, int] | None, crop_pct: float | None, validation: int | None,
         streaming: bool = False, workers: int = 0,
         fallback_size: Callable[[], tuple[int, int]] | None = None) -> FolderPlan:
    """Scans the folder, checks every file's header and decides the image size, the hold-out and the path.

    Args:
        name: `folder:PATH`.
        image_size: --image-size; None: the training images' own size where they all share one.
        crop_pct: --crop-pct of the evaluation transform; None: DEFAULT_CROP_PCT.
        validation: --validation: None takes the validation/ folder, else holds out a tenth of train; N > 0
            holds out N (an error beside a validation/ folder); 0 evaluates nothing while training.
        streaming: --streaming: stream even a folder that would fit in memory.
        workers: processes checking headers.
        fallback_size: the size where neither image_size nor one size shared by all the training images gives
            it: a fine-tuned checkpoint's own (train.finetune.checkpoint_image_size); None: an error.
    """
    layout = image_folder.scan(folder_root(name))
    crop_pct = DEFAULT_CROP_PCT if crop_pct is None else crop_pct
    if not 0 < crop_pct <= 1:
        raise ValueError(f"--crop-pct must be in (0, 1] (timm's convention: the centre crop's share of the resized "
                         f"image), got {crop_pct}")
    sizes, unreadable = _headers(layout, workers)
    train_files = layout.splits["train"]
    readable = [i for i, f in enumerate(train_files) if f.path not in unreadable]
    _check_classes(layout, "train", readable, unreadable)
    size = _image_size(image_size, [sizes[train_files[i].path] for i in readable], layout.root, fallback_size)
    has_folder = "validation" in layout.splits
    if has_folder and validation:
        raise ValueError(f"{layout.root} has a validation/ folder, which is the run's validation split: drop "
                         f"--validation {validation} (or give --validation 0 to evaluate nothing while training)")
    if has_folder or validation == 0:
        train, held_out = tuple(readable), ()
    else:
        size_out = validation if validation is not None else max(1, len(readable) // VALIDATION_FRACTION)
        keep, out = data_lib.validation_indices(len(readable), size_out)
        train, held_out = tuple(readable[i] for i in keep), tuple(readable[i] for i in out)
    decoded_bytes = len(train) * size[0] * size[1] * 3
    return FolderPlan(layout, size, crop_pct, train, held_out, has_folder and validation != 0,
                      streaming or decoded_bytes > memory_limit(), unreadable)


def _image_size(given: int | tuple[int, int] | None, sizes: list[tuple[int, int]], root: Path,
                fallback: Callable[[], tuple[int, int]] | None) -> tuple[int, int]:
    if given is not None:
        return (given, given) if isinstance(given, int) else tuple(given)  # type: ignore[return-value]
    distinct = sorted(set(sizes))
    if len(distinct) == 1:
        return distinct[0]
    if fallback is not None:
        return tuple(fallback())  # type: ignore[return-value]
    shown = ", ".join(f"{w}x{h}" for h, w in distinct[:3])
    raise ValueError(f"the training images under {root} come in {len(distinct)} sizes ({shown}, ...): give the "
                     "model's resolution with --image-size (e.g. 224; fine-tuning with --init-from takes the checkpoint's own)")


def _check_classes(layout: image_folder.FolderLayout, split: str, readable: list[int], unreadable: dict[str, str]) -> None:
    """A class of the training split with no readable image is an error: it could never be learned."""
    files = layout.splits[split]
    have = {files[i].label for i in readable}
    empty = [name for label, name in enumerate(layout.class_names) if label not in have]
    if empty:
        raise image_folder.FolderError(
            f"{layout.root / split}: no readable image in class folder(s) {', '.join(empty)} "
            f"({sum(1 for f in files if f.path in unreadable)} unreadable files in {split}): add images "
            "or remove the folder"
        )


def _headers(layout: image_folder.FolderLayout, workers: int) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Every file's (height, width) as its header gives it (EXIF-rotated), and the reason of each file whose
    header is no image's; cached per folder state (train.data's cache folder)."""
    files = [f.path for split in layout.splits.values() for f in split]
    key = hashlib.sha1(("headers", *[layout.fingerprint(s) for s in sorted(layout.splits)]).__repr__().encode()).hexdigest()[:16]
    root = data_lib.cache_root()
    path = root / f"folder-headers-{key}.json" if root else None
    if path is not None and path.is_file():
        try:
            cached = json.loads(path.read_text())
            return {p: tuple(s) for p, s in cached["sizes"].items()}, cached["unreadable"]  # type: ignore[misc]
        except (OSError, ValueError, KeyError):
            pass  # rebuilt, never trusted
    job = _HeaderChunk(str(layout.root), tuple(files))
    sizes: dict[str, tuple[int, int]] = {}
    unreadable: dict[str, str] = {}
    for chunk in image_pipeline.ordered_map(job, -(-len(files) // image_pipeline.CHUNK), workers):
        for file, size, reason in chunk:
            if reason is None:
                sizes[file] = size
            else:
                unreadable[file] = reason
    if path is not None:
        _write_json(path, {"sizes": sizes, "unreadable": unreadable})
    return sizes, unreadable


@dataclasses.dataclass(frozen=True)
class _HeaderChunk:
    root: str
    paths: tuple[str, ...]

    def __call__(self, chunk: int) -> list[tuple[str, tuple[int, int] | None, str | None]]:
        part = self.paths[chunk * image_pipeline.CHUNK : (chunk + 1) * image_pipeline.CHUNK]
        out = []
        for path in part:
            reason = image_folder.check_header(Path(self.root) / path)
            out.append((path, None, reason) if reason else (path, image_folder.header_size(Path(self.root) / path), None))
        return out


def _write_json(path: Path, value: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(value))
    except OSError:
        pass  # a read-only cache only costs the next start its time


def decode(plan_: FolderPlan, split: str, indices: tuple[int, ...], transform: image_pipeline.Transform,
           workers: int = 0) -> tuple[data_lib.Split, dict[str, str]]:
    """The files `indices` of `split`, decoded by `transform` into a uint8 Split (unreadable files left out),
    from the cache where it holds them; and the reasons of the files left out."""
    files = plan_.layout.splits[split]
    chosen = [files[i] for i in indices if files[i].path not in plan_.unreadable]
    key = hashlib.sha1(repr((plan_.layout.fingerprint(split), [f.path for f in chosen], transform.record()))
                       .encode()).hexdigest()[:16]
    root = data_lib.cache_root()
    path = root / f"folder-{split}-{key}.npz" if root else None
    if path is not None and path.is_file():
        try:
            with np.load(path) as f:
                bad = json.loads(str(f["bad"]))
                return data_lib.Split(f["images"], f["labels"]), bad
        except (OSError, ValueError, KeyError):
            pass
    images, bad_list = image_pipeline.decode_files(plan_.layout.root, [f.path for f in chosen], transform, workers)
    bad = dict(bad_list)
    keep = np.asarray([f.path not in bad for f in chosen], bool)
    labels = np.asarray([f.label for f in chosen], np.int32)
    out = data_lib.Split(np.ascontiguousarray(images[keep]), labels[keep])
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, images=out.images, labels=out.labels, bad=np.asarray(json.dumps(bad)))
        except OSError:
            pass
    return out, bad


@dataclasses.dataclass(frozen=True)
class FolderData:
    """A folder run's data: the training split in memory (None when streamed: `plan.streamed`), the validation and
    test splits in memory (None where there are none), and what was left out."""

    plan: FolderPlan
    train: data_lib.Split | None
    validation: data_lib.Split | None
    test: data_lib.Split | None
    unreadable: dict[str, str]  # every file left out, and why

    @property
    def name(self) -> str:
        """What config.json and checkpoints call the dataset: folder: and the folder's absolute path."""
        return f"{PREFIX}{self.plan.layout.root.resolve()}"

    @property
    def examples(self) -> int:
        """The training split's readable images, before the hold-out."""
        return len(self.plan.train) + len(self.plan.held_out)

    def __len__(self) -> int:
        """The images that train (a streamed folder's, which a BatchOrder indexes)."""
        return len(self.train) if self.train is not None else len(self.plan.train)

    def record(self) -> dict[str, Any]:
        """What config.json says of the data."""
        layout = self.plan.layout
        return {
            "folder": str(layout.root.resolve()),
            "classes": len(layout.class_names),
            "files": {split: len(files) for split, files in layout.splits.items()},
            "unreadable": len(self.unreadable),
            "ignored": sum(layout.ignored.values()),
            "image_size": list(self.plan.size),
            "crop_pct": self.plan.crop_pct,
            "streamed": self.plan.streamed,
        }

    def validation_record(self) -> dict[str, Any] | None:
        """config.json's "validation": the folder's validation/ split, or the held-out training files."""
        if self.validation is None:
            return None
        if self.plan.validation_folder:
            return {"examples": len(self.validation), "folder": "validation"}
        return {"examples": len(self.validation), "of": len(self.plan.train) + len(self.plan.held_out),
                "rule": "data.validation_indices over the readable training files, in scan order",
                "sha1": hashlib.sha1(repr(sorted(self.plan.layout.splits["train"][i].path
                                                 for i in self.plan.held_out)).encode()).hexdigest()}

    def lines(self) -> list[str]:
        """The run's first lines about its data: classes, sizes, and each file left out (named once)."""
        layout, plan_ = self.plan.layout, self.plan
        out = []
        named = sorted(self.unreadable.items())
        out += [f"warning: left out {path}: {reason}" for path, reason in named[:NAMED_UNREADABLE]]
        if len(named) > NAMED_UNREADABLE:
            out.append(f"warning: and {len(named) - NAMED_UNREADABLE} more unreadable files, left out")
        h, w = plan_.size
        counts = ", ".join(f"{len(files)} {split}" for split, files in layout.splits.items())
        ignored = sum(layout.ignored.values())
        out.append(
            f"folder {layout.root}: {len(layout.class_names)} classes, {counts} files"
            + (f"; {len(self.unreadable)} unreadable left out" if self.unreadable else "")
            + (f"; {ignored} files that are not images ignored" if ignored else "")
            + f"; images at {h}x{w}" + (" (streamed: decoded for each step)" if plan_.streamed else " (decoded once, cached)")
        )
        return out


def load(name: str, image_size: int | tuple[int, int] | None = None, crop_pct: float | None = None,
         validation: int | None = None, streaming: bool = False, workers: int = 0,
         fallback_size: Callable[[], tuple[int, int]] | None = None) -> FolderData:
    """A folder's splits as a run reads them (plan's arguments): decoded in `workers` processes, or the training
    split left to stream when it would not fit in memory."""
    p = plan(name, image_size, crop_pct, validation, streaming, workers, fallback_size)
    unreadable = dict(p.unreadable)
    train = None
    if not p.streamed:
        train, bad = decode(p, "train", p.train, p.train_transform(), workers)
        unreadable.update(bad)
        if len(np.unique(train.labels)) < len(p.class_names):
            readable = [i for i in p.train if p.layout.splits["train"][i].path not in unreadable]
            _check_classes(p.layout, "train", readable, unreadable)
    validation_split = None
    if p.validation_folder:
        validation_split, bad = decode(p, "validation", tuple(range(len(p.layout.splits["validation"]))),
                                       p.eval_transform(), workers)
        unreadable.update(bad)
    elif p.held_out:
        validation_split, bad = decode(p, "train", p.held_out, p.eval_transform(), workers)
        unreadable.update(bad)
    test = None
    if "test" in p.layout.splits:
        test, bad = decode(p, "test", tuple(range(len(p.layout.splits["test"]))), p.eval_transform(), workers)
        unreadable.update(bad)
    return FolderData(p, train, validation_split, test, unreadable)


def stream(data: FolderData, order: Any, seed: int, start: int, stop: int, workers: int,
           random_crop: bool, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
           process_index: int = 0, process_count: int = 1) -> image_pipeline.FolderStream:
    """The streamed training batches of a folder run (data.plan.streamed): `order` indexes its training files.
    With `random_crop` the workers cut each image's random-resized crop (`scale`, `ratio`: the recipe's), so the
    train step must not crop again; otherwise they resize and centre-crop it, as the in-memory path decodes it."""
    files = data.plan.layout.splits["train"]
    chosen = [files[i] for i in data.plan.train]
    return image_pipeline.FolderStream(
        data.plan.layout.root, [f.path for f in chosen], np.asarray([f.label for f in chosen], np.int32), order,
        data.plan.train_transform(random_crop=random_crop, scale=scale, ratio=ratio), seed, start, stop, workers,
        process_index, process_count)


def _split_name(layout: image_folder.FolderLayout, split: str) -> str:
    """--split as the layout names it (val is validation); an error naming the splits there are, where absent."""
    split = "validation" if split == "val" else split
    if split not in layout.splits:
        raise data_lib.DatasetError(f"{layout.root} has no {split}/ split (it has {', '.join(layout.splits)})")
    return split


def eval_split(name: str, split: str, image_size: tuple[int, int], class_names: tuple[str, ...] | None,
               num_classes: int, crop_pct: float | None = None, workers: int = 0) -> tuple[data_lib.Split, dict[str, str]]:
    """One split of a folder, decoded as a run evaluates it (`vit eval`), for a model of `image_size` whose
    classes are `class_names` (its weights file's; None where it records none: only their count is checked).
    Returns the split and the files left out, with why."""
    layout = image_folder.scan(folder_root(name))
    split = _split_name(layout, split)
    if class_names and tuple(class_names) != layout.class_names:
        raise data_lib.DatasetError(
            f"the model's classes ({', '.join(class_names)}) are not the folder's ({', '.join(layout.class_names)}): "
            "score it on the folder it was trained on")
    if layout.num_classes != num_classes:
        raise data_lib.DatasetError(f"the model has {num_classes} classes, the folder {layout.num_classes}: score it "
                                    "on the folder it was trained on")
    p = FolderPlan(layout, tuple(image_size), DEFAULT_CROP_PCT if crop_pct is None else crop_pct, (), (), False,
                   False, {})
    return decode(p, split, tuple(range(len(layout.splits[split]))), p.eval_transform(), workers)


def read_examples(name: str, split: str, indices: list[int]) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """(images as stored, each its own size; labels; class names) of the examples `indices` of a folder's split,
    in the scan's order (`vit attention --dataset folder:PATH --index N`)."""
    layout = image_folder.scan(folder_root(name))
    files = layout.splits[_split_name(layout, split)]
    bad = [i for i in indices if not 0 <= i < len(files)]
    if bad:
        raise ValueError(f"--index {bad} out of range: {layout.root / split} has images 0..{len(files) - 1}")
    images = [image_folder.read_image(layout.root / files[i].path, name=files[i].path) for i in indices]
    return images, np.asarray([files[i].label for i in indices], np.int32), list(layout.class_names)
