"""Decoding image files in worker processes, in the order a run's BatchOrder gives.

Two jobs, both a sequence of elements computed by a picklable, per-element function (`_DecodeChunk`,
`_DecodeStep`) in `workers` spawned processes, or in this process with `workers=0`; the elements come back in
order whatever the worker count, so a run is the same function of (seed, step) either way:
  decode_files   every file of a list, resized and centre-cropped once (the in-memory path, and its cache)
  FolderStream   the batches of steps start..stop, each image decoded, random-resized-cropped and returned as
                 uint8 at the model's resolution (the streaming path, for folders too large to keep decoded)

The workers are grain's (the JAX ecosystem's loader: MapDataset, mp_prefetch) in a process that has loaded JAX,
a spawned multiprocessing pool in one that has not (ordered_map). Elements cross the process boundary as bytes,
not arrays: grain moves numpy arrays through shared memory, whose blocks outlive an iterator that stops early
and are then reported as leaked at exit.

This module imports no framework (grain, imported only where JAX is loaded already, imports JAX)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from train import image_folder

CHUNK = 64  # files per element of decode_files: enough to amortise the hand-off between processes


def _grain_ready() -> Any:
    """grain, with absl's flags marked parsed: its worker processes read flags that a program which never
    called absl's app.run has not parsed, and stop with UnparsedFlagAccessError."""
    import grain
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return grain


def ordered_map(function: Any, count: int, workers: int, start: int = 0) -> Iterator[Any]:
    """function(i) for i in start..count-1, in order, computed in `workers` processes (0: here, one by one).

    `function` must be picklable (a module-level class instance): spawned workers receive it by pickle. The
    workers are grain's (MapDataset.map, mp_prefetch) in a process that has loaded JAX; grain imports JAX
    itself, so a process without it (the PyTorch trainer, which never loads JAX) uses a spawned
    multiprocessing pool instead: the same elements in the same order."""
    if workers <= 0:
        for i in range(start, count):
            yield function(i)
        return
    if "jax" not in sys.modules:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            yield from pool.imap(function, range(start, count))
        return
    grain = _grain_ready()
    dataset = (grain.MapDataset.range(start, count).map(function)
               .to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
               .mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2)))
    iterator = iter(dataset)
    try:
        yield from iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


@dataclasses.dataclass(frozen=True)
class Transform:
    """What becomes of one decoded image: resize_center_crop to `size` (h, w) with `crop_pct` (eval), or a
    random-resized crop to `size` (train, streaming)."""

    size: tuple[int, int]
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    random_crop: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        if self.random_crop:
            assert rng is not None, "a random crop draws from the example's generator"
            return image_folder.random_resized_crop(image, self.size, rng, self.scale, self.ratio, self.interpolation)
        return image_folder.resize_center_crop(image, self.size, self.crop_pct, self.interpolation)

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _DecodeChunk:
    """Element i of decode_files: files [i * CHUNK, (i + 1) * CHUNK), as (bytes of uint8 pixels, [(position,
    reason) of each unreadable file])."""

    root: str
    paths: tuple[str, ...]
    transform: Transform

    def __call__(self, chunk: int) -> tuple[bytes, list[tuple[int, str]]]:
        h, w = self.transform.size
        part = self.paths[chunk * CHUNK : (chunk + 1) * CHUNK]
        out = np.zeros((len(part), h, w, 3), np.uint8)
        bad = []
        for k, path in enumerate(part):
            try:
                out[k] = self.transform(image_folder.read_image(Path(self.root) / path, name=path))
            except image_folder.BadImageError as e:
                bad.append((chunk * CHUNK + k, e.reason))
        return out.tobytes(), bad


def decode_files(
    root: str | Path, paths: Sequence[str], transform: Transform, workers: int = 0
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Every file of `paths` (relative to `root`) decoded and transformed: (N, h, w, 3) uint8 in the order of
    `paths`, and the (path, reason) of each unreadable one (BadImageError.reason) (its row left zero: the caller drops it).

    Args:
        root: the folder the paths are relative to.
        paths: the files, in the order wanted.
        transform: a deterministic one (transform.random_crop False).
        workers: processes decoding in parallel (0: this one).
    """
    if transform.random_crop:
        raise ValueError("decode_files decodes once, for keeps: give it a deterministic transform (no random crop)")
    h, w = transform.size
    job = _DecodeChunk(str(root), tuple(paths), transform)
    chunks = -(-len(paths) // CHUNK)
    images, bad = np.zeros((len(paths), h, w, 3), np.uint8), []
    for chunk, (pixels, unreadable) in enumerate(ordered_map(job, chunks, workers)):
        block = np.frombuffer(pixels, np.uint8).reshape(-1, h, w, 3)
        images[chunk * CHUNK : chunk * CHUNK + len(block)] = block
        bad += [(paths[i], reason) for i, reason in unreadable]
    return images, bad


def example_rng(seed: int, step: int, position: int) -> np.random.Generator:
    """The generator of the example at `position` of global batch `step`: what it draws (its crop) depends on
    neither the worker nor the process that decodes it."""
    return np.random.default_rng([seed, step, position])


@dataclasses.dataclass(frozen=True)
class _DecodeStep:
    """Element `step` of FolderStream: this process's share of global batch `step`, decoded and cropped, as
    (bytes of uint8 pixels, bytes of int32 labels, [(path, reason) of files replaced because they could not be read])."""

    root: str
    paths: tuple[str, ...]
    labels: np.ndarray
    order: Any  # train.data.BatchOrder (duck-typed: this module does not import train.data)
    transform: Transform
    seed: int
    process_index: int
    process_count: int

    def __call__(self, step: int) -> tuple[bytes, bytes, list[tuple[str, str]]]:
        idx = self.order.indices(step, self.process_index, self.process_count)
        h, w = self.transform.size
        out = np.zeros((len(idx), h, w, 3), np.uint8)
        labels = np.zeros(len(idx), np.int32)
        offset = self.process_index * len(idx)  # position in the global batch
        replaced = []
        for k, i in enumerate(idx):
            image, used, failures = self._read_or_next(int(i))
            replaced += failures
            out[k] = self.transform(image, example_rng(self.seed, step, offset + k))
            labels[k] = self.labels[used]
        return out.tobytes(), labels.tobytes(), replaced

    def _read_or_next(self, i: int) -> tuple[np.ndarray, int, list[tuple[str, str]]]:
        """The image of example i, or, where its file cannot be read (changed, truncated or gone since the run
        began), of the next readable example: the batch keeps its size, and the replacement is the same in
        every run that meets the same files."""
        failures = []
        for j in (np.arange(len(self.paths)) + i) % len(self.paths):
            try:
                return image_folder.read_image(Path(self.root) / self.paths[j], name=self.paths[j]), int(j), failures
            except image_folder.BadImageError as e:
                failures.append((self.paths[j], str(e)))
        raise image_folder.BadImageError(self.root, "no file of the training split can be read any more")


class FolderStream:
    """The streaming path's batches: this process's (images, labels) of steps start..stop-1, each image read
    from its file and random-resized-cropped to the model's size by `workers` processes as the steps need them.

    The same batches whatever `workers` (tests hold 0 and 2 equal) and wherever a run resumes: each element is a
    pure function of the step. A file that cannot be read when its turn comes is replaced by the next readable
    example and named once on stderr.
    """

    def __init__(self, root: str | Path, paths: Sequence[str], labels: np.ndarray, order: Any, transform: Transform,
                 seed: int, start: int, stop: int, workers: int = 0, process_index: int = 0, process_count: int = 1):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self._job = _DecodeStep(str(root), tuple(paths), np.asarray(labels, np.int32), order, transform, seed,
                                process_index, process_count)
        self._range = (start, stop)
        self._workers = workers
        self.replaced: dict[str, str] = {}  # path -> why it was replaced, each said once

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        h, w = self._job.transform.size
        start, stop = self._range
        for pixels, labels, replaced in ordered_map(self._job, stop, self._workers, start=start):
            for path, reason in replaced:
                if path not in self.replaced:
                    self.replaced[path] = reason
                    print(f"warning: {reason}; the next readable image takes its place in this run", file=sys.stderr)
            yield np.frombuffer(pixels, np.uint8).reshape(-1, h, w, 3), np.frombuffer(labels, np.int32)
