"""One run per workdir: a live `vit train` holds an OS lock on WORKDIR/.lock, which names it.

Two runs on one workdir (the same command typed twice) both wrote checkpoints into the same checkpoints/ and
interleaved their metrics.jsonl rows. The lock is flock(2)'s: the kernel drops it when its process ends, however
it ends (SIGKILL, a crash), so a lock is never left held by a dead run; the file's text (host, process,
start, command) is what the next run reads to name the live holder, or the dead one whose lock it takes over.
The readers of a workdir (`vit eval`, `vit plot`, ...) take no lock and are never blocked.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable

LOCK_NAME = ".lock"


class WorkdirBusyError(ValueError):
    """Another live run holds the workdir."""


def _holder_text(holder: dict[str, Any]) -> str:
    return (f"process {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
            + (f": {holder['command']}" if holder.get("command") else ""))


class WorkdirLock:
    """Holds WORKDIR/.lock for the block (the workdir is created). Raises WorkdirBusyError, naming the live run,
    when another process holds it; takes over, saying so, a lock file left by a run that no longer exists.

    Args:
        workdir: the run's workdir.
        say: where the take-over line goes (stderr).
    """

    def __init__(self, workdir: str | Path, say: Callable[[str], None] | None = None):
        self.path = Path(workdir) / LOCK_NAME
        self._say = say or (lambda text: print(text, file=sys.stderr))
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> "WorkdirLock":
        self._created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise WorkdirBusyError(
                f"{self.path.parent} is in use by another `vit train` ({_holder_text(holder)}): wait for it to end, "
                f"or stop it (Ctrl-C, or kill {holder.get('pid', 'PID')}: it saves a checkpoint first), or give this "
                "run another --workdir"
            ) from None
        left = _read(fd)
        if left:  # a run that ended without releasing (killed, lost power): the kernel has dropped its lock
            self._say(f"note: taking over {self.path.parent}'s lock from {_holder_text(left)}, which no longer runs "
                      "(killed, or its machine lost power): resuming from its last checkpoint")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_this_process()).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if self._fd is None:
            return
        # Emptied, not removed: removing a lock file another process may have open lets two runs hold "it".
        os.ftruncate(self._fd, 0)
        workdir = self.path.parent
        if kind is not None and self._created and [p.name for p in workdir.iterdir()] == [LOCK_NAME]:
            # A run refused before it wrote anything (a bad flag, missing data) leaves no workdir behind.
            self.path.unlink()
            workdir.rmdir()
        os.close(self._fd)  # releases the lock
        self._fd = None


def _read(fd: int) -> dict[str, Any]:
    """The holder a lock file names ({} when empty or unreadable)."""
    try:
        text = os.pread(fd, 4096, 0).decode()
        holder = json.loads(text) if text.strip() else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def _this_process() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["vit", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("vit") else " ".join(sys.argv),
    }
