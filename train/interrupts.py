"""Ctrl-C and preemption (SIGTERM) stop a training run at a step boundary, with a checkpoint of that step.

Without this, Ctrl-C raised KeyboardInterrupt wherever the run was (once even inside a computation in flight,
which ended in a segmentation fault), and SIGTERM, what a preemptible VM, Kubernetes, SLURM and `docker stop`
send before SIGKILL, killed the process at once: both lost everything since the last checkpoint, up to an epoch.

`StopSignals`, around a trainer's loop, turns the first SIGINT or SIGTERM into a request the loop reads after
each step: it finishes the step in flight, writes the metrics and a checkpoint of that step, says so in one line
and raises `Interrupted`, which `vit` turns into the conventional exit code (130 for SIGINT, 143 for SIGTERM). A
second signal stops at once: checkpoints are written under a temporary name and renamed when whole, so the
previous one stays valid.

In a multi-process JAX run the processes must save the same step. There JAX's preemption service (set up by
jax.distributed.initialize) handles SIGTERM: any process's notice reaches all, and
multihost_utils.reached_preemption_sync_point names the same step everywhere; SIGINT is passed to it as SIGTERM.
Framework-free: the JAX trainer passes the sync point in.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any, Callable

NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class Interrupted(Exception):
    """A run stopped by a signal after saving the checkpoint of `step`: the process exits with `exit_code`."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step
        self.exit_code = 128 + signum
        super().__init__(f"interrupted at step {step} by {NAMES.get(signum, signum)}: checkpoint saved; run the same "
                         "command to resume")


class StopSignals:
    """Within the block, the first SIGINT or SIGTERM sets `requested` (the signal's number) instead of stopping
    the process; a second one stops it at once (KeyboardInterrupt, or SystemExit(143) for SIGTERM). The previous
    handlers come back on exit. Outside the main thread (where Python cannot handle signals) it does nothing.

    Args:
        preemption_sync: in a multi-process run, `step -> bool`, True at the step every process saves at
            (multihost_utils.reached_preemption_sync_point); SIGTERM is then left to JAX's preemption
            service, and SIGINT forwarded to it.
        say: where the line acknowledging the first signal goes (stderr).
    """

    def __init__(self, preemption_sync: Callable[[int], bool] | None = None, say: Callable[[str], None] | None = None):
        self.requested: int | None = None
        self._sync = preemption_sync
        self._say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        handled = (signal.SIGINT,) if self._sync else (signal.SIGINT, signal.SIGTERM)
        for signum in handled:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._sync:  # multi-process: every process learns of it through JAX's preemption service
            if self.requested is None:
                self.requested = signum
                self._say(f"{NAMES[signum]}: every process stops after an agreed step and saves it "
                          "(press Ctrl-C again to stop at once, without saving)")
                os.kill(os.getpid(), signal.SIGTERM)
                return
            raise KeyboardInterrupt
        if self.requested is not None:  # the second: stop now; the last whole checkpoint stays valid
            if signum == signal.SIGTERM:
                raise SystemExit(128 + signum)
            raise KeyboardInterrupt
        self.requested = signum
        self._say(f"{NAMES[signum]}: stopping after the step in flight and saving a checkpoint "
                  "(press Ctrl-C again to stop at once, without saving)")

    def stop_at(self, step: int) -> bool:
        """Whether the loop stops after `step` (called once per step or call, with increasing steps): a signal
        here, or, multi-process, the step all processes agreed on."""
        if self._sync is not None:
            return self._sync(step)
        return self.requested is not None

    @property
    def signum(self) -> int:
        """The signal the run stops for (SIGTERM where another process of a multi-process run received it)."""
        return self.requested or signal.SIGTERM
