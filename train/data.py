"""tfds image-classification splits: read once through `tfds.data_source`, kept in memory as uint8.

The order of examples is a pure function of (seed, step), so a resumed run sees exactly the batches
an uninterrupted one would, and every process can cut its own slice of each global batch.
Datasets too large for memory take the streaming path: the same indices, read from the same
data source batch by batch (`StreamingBatches`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import queue
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from vit_spec import atomic_path

FIX_HINT = (
    "prepare it on a machine with internet access with the data extra "
    "(pip install 'vit-twins[data]', which brings tensorflow-cpu; then "
    "`tfds build {name} --data_dir DIR --file_format array_record`), "
    "or point --data-dir (or TFDS_DATA_DIR) at a prepared copy"
)


class DatasetNotFoundError(FileNotFoundError):
    """A tfds dataset that is neither prepared where we looked nor downloadable."""


class DatasetError(ValueError):
    """A dataset this trainer cannot use (not image classification, or images of varying size)."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split in memory: images (N, H, W, C) uint8 and labels (N,) int32."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise DatasetError(f"images must be (N, H, W, C) uint8, got {self.images.shape} {self.images.dtype}")
        if self.labels.shape != (self.images.shape[0],):
            raise DatasetError(f"labels {self.labels.shape} do not match images {self.images.shape}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, n: int) -> "Split":
        return Split(self.images[:n], self.labels[:n])


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test splits of an image-classification dataset of fixed image size."""

    name: str
    num_classes: int
    train: Split
    test: Split
    class_names: tuple[str, ...] = ()  # in label order; () where unknown (in-memory test data)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.train.images.shape[1:])  # type: ignore[return-value]


def resolve_data_dir(flag: str | None) -> str | None:
    """--data-dir, else $TFDS_DATA_DIR, else None (tfds's default, ~/tensorflow_datasets).

    Raises DatasetNotFoundError, naming where the folder came from, when it is not a folder.
    """
    env = os.environ.get("TFDS_DATA_DIR")
    data_dir, source = (flag, "--data-dir") if flag else (env, "TFDS_DATA_DIR") if env else (None, "")
    if data_dir is not None and not Path(data_dir).is_dir():
        what = "is a file, not a folder" if Path(data_dir).exists() else "does not exist"
        raise DatasetNotFoundError(
            f"{source} {data_dir} {what}: give the folder that holds the prepared tfds datasets (the one with "
            "cifar10/ in it)" + (", or unset TFDS_DATA_DIR to use tfds's default" if source == "TFDS_DATA_DIR" else "")
        )
    return data_dir


def _where(data_dir: str | None) -> str:
    if data_dir:
        return str(Path(data_dir).resolve())
    import tensorflow_datasets as tfds

    return f"{tfds.core.constants.DATA_DIR} (tfds's default; neither --data-dir nor TFDS_DATA_DIR was given)"


def open_sources(name: str, data_dir: str | None) -> dict[str, Any]:
    """The tfds random-access data sources of `name`, one per split (TensorFlow-free reading).

    Downloads and prepares the dataset only where that can work (TensorFlow installed); otherwise
    raises DatasetNotFoundError saying where it looked and how to fix it.
    """
    import tensorflow_datasets as tfds

    try:
        sources = dict(tfds.data_source(name, data_dir=data_dir, download=False))
        if sources:
            return sources
        # tfds answers {} (no error) where nothing is prepared under its default directory.
        reason = "no prepared splits found"
    except tfds.core.registered.DatasetNotFoundError:
        raise DatasetError(
            f"unknown dataset {name!r}: use a tfds image-classification dataset such as cifar10, cifar100 "
            "or svhn_cropped (see `tfds.list_builders()`)"
        ) from None
    except Exception as first:  # tfds raises several types for "not prepared here"
        folder = Path(data_dir or tfds.core.constants.DATA_DIR) / name.split(":")[0].split("/")[0]
        if not any(folder.glob("*/*/dataset_info.json")) and not any(folder.glob("*/dataset_info.json")):
            reason = f"there is no prepared {folder.name}/ folder in it"
        else:
            reason = f"{type(first).__name__}: {' '.join(str(first).split())[:300]}"
    if importlib.util.find_spec("tensorflow") is not None:
        try:
            sources = dict(tfds.data_source(name, data_dir=data_dir, download=True))
            if sources:
                return sources
        except Exception as e:
            reason = f"{reason}; downloading failed too ({type(e).__name__}: {str(e).splitlines()[0]})"
    raise DatasetNotFoundError(
        f"dataset {name!r} is not prepared (array_record) under {_where(data_dir)} ({reason}); "
        + FIX_HINT.format(name=name)
    )


def _keys(source: Any) -> tuple[str, str, int, tuple[int, ...]]:
    """(image key, label key, num_classes, image shape) of a tfds image-classification source."""
    info = source.dataset_info
    keys = info.supervised_keys
    if not keys or len(keys) != 2:
        raise DatasetError(f"{info.name} has no (image, label) supervised keys: it is not image classification")
    image_key, label_key = keys
    features = info.features
    shape = tuple(features[image_key].shape)
    if len(shape) != 3 or any(s is None for s in shape):
        raise DatasetError(
            f"{info.name} has images of varying size {shape}: this trainer needs a fixed image size "
            "(resize the dataset first, or pick one such as cifar10, cifar100, svhn_cropped)"
        )
    num_classes = getattr(features[label_key], "num_classes", None)
    if not num_classes:
        raise DatasetError(f"{info.name}: label {label_key!r} is not a class label")
    return image_key, label_key, int(num_classes), shape  # type: ignore[return-value]


def label_names(source: Any) -> list[str]:
    """The class names of a tfds image-classification source, in label order ([] where the dataset has none)."""
    _, label_key, _, _ = _keys(source)
    return list(getattr(source.dataset_info.features[label_key], "names", None) or [])


def read_split(source: Any, indices: Sequence[int], chunk: int = 5000) -> Split:
    """The given records of a data source, decoded into memory."""
    parts = [read_records(source, indices[i : i + chunk]) for i in range(0, len(indices), chunk)]
    return Split(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def read_records(source: Any, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8) and labels (int32) of the given records, decoded."""
    image_key, label_key, _, _ = _keys(source)
    records = source.__getitems__(list(map(int, indices)))
    images = np.stack([np.asarray(r[image_key], np.uint8) for r in records])
    labels = np.asarray([r[label_key] for r in records], np.int32)
    return images, labels


def cache_root() -> Path | None:
    """The folder of decoded-array caches ($VIT_DATA_CACHE, else ~/.cache/vit-twins); None where it is turned off
    ("", 0, off, none)."""
    root = os.environ.get("VIT_DATA_CACHE", str(Path.home() / ".cache" / "vit-twins"))
    return None if root.lower() in ("", "0", "off", "none") else Path(root)


def _cache_path(source: Any, split: str) -> Path | None:
    """Where decoded arrays of this split are cached: decoding PNGs costs ~15 s per CIFAR start."""
    root = cache_root()
    if root is None:
        return None
    info = source.dataset_info
    origin = hashlib.sha1(str(Path(info.data_dir).resolve()).encode()).hexdigest()[:10]
    return root / f"{info.name}-{info.version}-{split}-{len(source)}-{origin}.npz"


def load_split(source: Any, split: str, chunk: int = 5000) -> Split:
    """A whole split in memory, from the decoded-array cache when it holds it."""
    path = _cache_path(source, split)
    if path is not None and path.is_file():
        try:
            with np.load(path) as f:
                cached = Split(f["images"], f["labels"])
            if len(cached) == len(source):
                return cached
        except Exception:  # a damaged cache is rebuilt, never trusted
            pass
    out = read_split(source, range(len(source)), chunk)
    if path is not None:
        try:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, images=out.images, labels=out.labels)
        except OSError:
            pass  # a read-only home only costs the next start its decode time
    return out


def load(name: str, data_dir: str | None, test_split: str = "test") -> Dataset:
    """Both splits of `name` in memory, as uint8."""
    sources = open_sources(name, data_dir)
    for split in ("train", test_split):
        if split not in sources:
            raise DatasetError(f"{name} has no {split!r} split (it has {sorted(sources)})")
    _, _, num_classes, _ = _keys(sources["train"])
    return Dataset(name, num_classes, load_split(sources["train"], "train"), load_split(sources[test_split], test_split),
                   tuple(label_names(sources["train"])))


def describe(source: Any) -> tuple[int, tuple[int, ...]]:
    """(num_classes, image shape) of a data source, without reading any image."""
    _, _, num_classes, shape = _keys(source)
    return num_classes, shape


# Every run holds out the same examples of a split of a given size, whatever its --seed: runs stay comparable.
VALIDATION_SEED = 0


def validation_indices(num_examples: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices into a training split of `num_examples`: the validation set is the first
    `size` of a fixed permutation (np.random.default_rng(VALIDATION_SEED)), both returned sorted."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise DatasetError(f"--validation must be a number of examples >= 0 (0: none held out), got {size!r}")
    if size >= num_examples:
        raise DatasetError(
            f"--validation {size} leaves nothing to train on: the training split has {num_examples} examples "
            "(hold out fewer, e.g. a tenth)"
        )
    perm = np.random.default_rng(VALIDATION_SEED).permutation(num_examples)
    return np.sort(perm[size:]), np.sort(perm[:size])


def validation_record(num_examples: int, size: int) -> dict[str, Any]:
    """What config.json says about the held-out examples: enough to rebuild and check them."""
    _, held_out = validation_indices(num_examples, size)
    return {
        "examples": size,
        "of": num_examples,
        "rule": f"np.sort(np.random.default_rng({VALIDATION_SEED}).permutation({num_examples})[:{size}])",
        "sha1": hashlib.sha1(held_out.astype("<i8").tobytes()).hexdigest(),
    }


def hold_out(dataset: Dataset, size: int) -> tuple[Dataset, Split | None]:
    """The dataset with `size` training examples held out (validation_indices), and those examples."""
    if size == 0:
        return dataset, None
    train, held_out = validation_indices(len(dataset.train), size)
    take = lambda idx: Split(dataset.train.images[idx], dataset.train.labels[idx])
    return dataclasses.replace(dataset, train=take(train)), take(held_out)


class SourceSubset:
    """Some records of a tfds data source, renumbered 0..n-1 (the streaming path's training examples)."""

    def __init__(self, source: Any, indices: np.ndarray):
        self.source, self.indices = source, np.asarray(indices)
        self.dataset_info = source.dataset_info

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, positions: Sequence[int]) -> list[Any]:
        return self.source.__getitems__([int(self.indices[p]) for p in positions])


class BatchOrder:
    """Which examples make up global batch `step`: a fresh permutation per epoch, dropping the remainder.

    A pure function of (seed, step): resuming at step s continues the data order exactly.
    """

    def __init__(self, num_examples: int, global_batch: int, seed: int):
        if global_batch > num_examples:
            raise DatasetError(f"batch size {global_batch} exceeds the {num_examples} training examples")
        self.num_examples, self.global_batch, self.seed = num_examples, global_batch, seed
        self.steps_per_epoch = num_examples // global_batch
        self._epoch, self._perm = -1, np.empty(0, np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch, self._perm = epoch, rng.permutation(self.num_examples)
        return self._perm

    def indices(self, step: int, process_index: int = 0, process_count: int = 1) -> np.ndarray:
        """This process's slice of global batch `step` (processes take equal consecutive slices)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        b = self.global_batch
        batch = self.permutation(epoch)[i * b : (i + 1) * b]
        per = b // process_count
        return batch[process_index * per : (process_index + 1) * per]


def memory_batches(
    split: Split, order: BatchOrder, start: int, stop: int, process_index: int = 0, process_count: int = 1
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """This process's (images, labels) of steps start..stop-1, gathered from memory."""
    for step in range(start, stop):
        # Unsorted: position in the global batch picks the example's augmentation randomness,
        # which must not depend on how many processes share the batch.
        idx = order.indices(step, process_index, process_count)
        yield split.images[idx], split.labels[idx]


class StreamingBatches:
    """The streaming path: the same batches, read from the tfds data source as they are needed.

    For datasets that do not fit in memory. A background thread decodes `prefetch` batches ahead;
    swap in grain (grain.MapDataset.source(source) with worker processes) where decoding is the
    bottleneck. The indices, and so the run, are identical to the in-memory path.
    """

    def __init__(self, source: Any, order: BatchOrder, start: int, stop: int,
                 process_index: int = 0, process_count: int = 1, prefetch: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._args = (source, order, start, stop, process_index, process_count)
        self._thread = threading.Thread(target=self._fill, daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        source, order, start, stop, pi, pc = self._args
        try:
            for step in range(start, stop):
                self._queue.put(read_records(source, order.indices(step, pi, pc)))
            self._queue.put(None)
        except BaseException as e:  # re-raised in the consumer
            self._queue.put(e)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def read_examples(name: str, data_dir: str | None, split: str, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uint8 images, labels, the dataset's class names) of the examples `indices` of `name`'s `split`, each image
    as stored (`vit attention --dataset`)."""
    sources = open_sources(name, resolve_data_dir(data_dir))
    if split not in sources:
        raise DatasetError(f"{name} has no {split!r} split (it has {sorted(sources)})")
    source = sources[split]
    size = len(source)
    bad = [i for i in indices if not 0 <= i < size]
    if bad:
        raise ValueError(f"--index {bad} out of range: {name} {split} has examples 0..{size - 1}")
    pixels, labels = read_records(source, indices)
    return pixels, labels, label_names(source)
