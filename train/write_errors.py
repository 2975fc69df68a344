"""A full disk (or a quota, a read-only remount, a failing device) while a run writes: one line naming the file
system, what was being written and the last good checkpoint, instead of orbax's or torch's multi-line error.

The writes themselves are atomic (orbax renames a whole temporary folder, the rest go through
vit_spec.atomic_path), so a failed one leaves the previous files intact; what a killed save leaves behind is
removed at the next start (`remove_leftovers`), and said.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

# The errors of the place written to, not of the program: a full disk, a quota, a file too large for the file
# system, a read-only one, a failing device.
WRITE_ERRNOS = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large",
                errno.EROFS: "read-only file system", errno.EIO: "input/output error"}
# orbax and tensorstore report the OS error as text inside their own exceptions.
_TEXTS = {re.compile(r"No space left on device|ENOSPC|RESOURCE_EXHAUSTED.*space", re.I): errno.ENOSPC,
          re.compile(r"Disk quota exceeded", re.I): errno.EDQUOT,
          re.compile(r"File too large", re.I): errno.EFBIG,
          re.compile(r"Read-only file system", re.I): errno.EROFS}


FULL_BYTES = 2**20  # a file system with less free space than this is full, for a failed write


class WriteError(ValueError):
    """A write the run needs failed because of where it writes; the message is one line."""


def write_errno(error: BaseException, path: str | Path | None = None) -> int | None:
    """The WRITE_ERRNOS errno behind `error` (itself, its causes and contexts, or their text), or None. With
    `path` (where the failed write went), also ENOSPC for any error while its file system has under FULL_BYTES
    free: orbax's asynchronous writes, abandoned, sometimes fail with errors that no longer carry the cause."""
    if path is not None and write_errno(error) is None:
        return errno.ENOSPC if _free_bytes(path) < FULL_BYTES else None
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
            return error.errno
        for pattern, number in _TEXTS.items():
            if pattern.search(str(error)):
                return number
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return None


def _mount(path: str | Path) -> Path:
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _free_bytes(path: str | Path) -> float:
    try:
        return shutil.disk_usage(_mount(path)).free
    except OSError:
        return float("inf")


def file_system(path: str | Path) -> str:
    """The mount point holding `path`, and its free space: "/data (120.0 MB free)"."""
    free = _free_bytes(path)
    return f"{_mount(path)} ({f'{free / 1e6:.1f} MB free' if free != float('inf') else 'free space unknown'})"


@contextlib.contextmanager
def writing(what: str, path: str | Path, workdir: str | Path | None = None) -> Iterator[None]:
    """Turns a write error of the file system into a WriteError: "could not write WHAT to PATH: no space left
    on the file system MOUNT (N MB free); the last good checkpoint is step S: free space and run the same command
    to resume".

    Args:
        what: what was being written ("the checkpoint of step 60").
        path: where.
        workdir: the run's, whose whole checkpoints are listed when the error happens.
    """
    try:
        yield
    except WriteError:
        raise
    except Exception as e:  # noqa: BLE001 - anything whose cause is the file system's; the rest is re-raised
        number = write_errno(e, path)
        if number is None:
            raise
        steps = checkpoint_steps(workdir) if workdir is not None else []
        resume = (f"the last good checkpoint is step {max(steps)}" if steps else "there is no checkpoint yet")
        raise WriteError(f"could not write {what} to {path}: {WRITE_ERRNOS[number]} on the file system "
                         f"{file_system(path)}; {resume}: free space and run the same command to resume") from None


@contextlib.contextmanager
def quiet_unless_it_succeeds(path: str | Path) -> Iterator[None]:
    """What the block writes to stderr (fd 2: Python's, C++'s, logging's) is held back, and shown once the block
    returns or fails for any other reason than a write error of the file system `path` is on.

    For orbax's saves: on a full disk, its abandoned asynchronous writes report a traceback per pending callback
    (a hundred for a small model), from threads and C++, during the save and after it, until the process exits;
    the run says what happened in one line. So after such a failure the process's stderr is Python's sys.stderr
    alone (file descriptor 2, which the abandoned work writes to, goes to /dev/null), and uncaught errors of
    other threads are not reported."""
    sys.stderr.flush()
    original = os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException as e:
            failed = write_errno(e, path) is not None
            raise
        finally:
            sys.stderr.flush()
            if failed:
                _mute_abandoned_work(original)
            else:
                os.dup2(original, 2)
                os.close(original)
                held.seek(0)
                text = held.read()
                if text:
                    os.write(2, text)


def _mute_abandoned_work(stderr_fd: int) -> None:
    """sys.stderr on `stderr_fd` (the real stderr), file descriptor 2 on /dev/null, and quiet hooks and loggers
    for what orbax's abandoned save still reports."""
    sys.stderr = io.TextIOWrapper(os.fdopen(stderr_fd, "wb", buffering=0), write_through=True)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    for name in ("asyncio", "concurrent.futures", "absl"):
        logging.getLogger(name).addFilter(lambda record: False)
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
    sys.excepthook = _without_closed_loops(sys.excepthook)
    threading.excepthook = lambda args: None


def _without_closed_loops(hook: Callable[..., None]) -> Callable[..., None]:
    """`hook` (sys.excepthook), but silent for the "Event loop is closed" errors of orbax's abandoned callbacks,
    which C++ reports through it (PyErr_Print) as they fire, even after the save has failed."""

    def quiet(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        hook(kind, value, tb)

    return quiet


def checkpoint_steps(workdir: str | Path) -> list[int]:
    """The steps of the whole checkpoints in WORKDIR/checkpoints: orbax's STEP/ folders, torch's step_STEP.pt."""
    directory = Path(workdir) / "checkpoints"
    if not directory.is_dir():
        return []
    steps = []
    for p in directory.iterdir():
        if p.is_dir() and p.name.isdigit():
            steps.append(int(p.name))
        elif (m := re.fullmatch(r"step_(\d+)\.pt", p.name)) and p.is_file():
            steps.append(int(m.group(1)))
    return sorted(steps)


# What a save that never finished leaves: orbax's temporary step folders, vit_spec.atomic_path's temporary files
# (checkpoints, metrics.jsonl, config.json, model.safetensors, curves.png).
UNFINISHED = {"checkpoints": ("*.orbax-checkpoint-tmp*", ".step_*.pt.*.tmp"), ".": (".*.tmp",)}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def check_room(workdir: str | Path, step: int) -> None:
    """Before the checkpoint of `step` is written: a WriteError when the file system has less free space than the
    newest whole checkpoint took (and a tenth more), so that a save that cannot fit is not begun. (A save begun on
    a disk that fills meanwhile fails inside orbax or torch instead; `writing` reports it the same.)"""
    steps = checkpoint_steps(workdir)
    if not steps:
        return
    directory = Path(workdir) / "checkpoints"
    newest = directory / str(steps[-1])
    if not newest.exists():
        newest = directory / f"step_{steps[-1]}.pt"
    need = 1.1 * _size(newest)
    if _free_bytes(directory) < need:
        raise WriteError(f"could not write the checkpoint of step {step} to {directory}: {WRITE_ERRNOS[errno.ENOSPC]} on "
                         f"the file system {file_system(directory)}, a checkpoint needs {need / 1e6:.1f} MB; the last "
                         f"good checkpoint is step {steps[-1]}: free space and run the same command to resume")


def remove_unfinished_saves(workdir: str | Path, say: Callable[[str], None] | None = None) -> list[str]:
    """remove_leftovers of UNFINISHED in the workdir and its checkpoints/, with the run's lock held."""
    return [name for folder, patterns in UNFINISHED.items()
            for name in remove_leftovers(Path(workdir) / folder, patterns, say)]


def remove_leftovers(directory: Path, patterns: tuple[str, ...], say: Callable[[str], None] | None = None) -> list[str]:
    """Removes what saves that never finished left in `directory` (files or folders matching `patterns`), says
    so in one line and returns their names."""
    if not directory.is_dir():
        return []
    found = sorted({p for pattern in patterns for p in directory.glob(pattern)})
    for p in found:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    if found:
        names = ", ".join(p.name for p in found)
        (say or (lambda text: print(text, file=sys.stderr)))(
            f"note: removed what an unfinished save left in {directory} ({names})")
    return [p.name for p in found]
