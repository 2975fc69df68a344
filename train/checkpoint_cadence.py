"""When a run writes a checkpoint: every N steps, every so much time, or (the default) each epoch and at most
30 minutes after the last one, so that a long epoch on an accelerator never leaves a run more than a bounded
time from its checkpoint. And always at the run's last step.

The time is read at train-record steps only (every --log-every steps), so that every process of a multi-process
run decides at the same steps (the JAX trainer also agrees on the decision: process 0's clock rules).
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Callable

DEFAULT_SECONDS = 30 * 60
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)$")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_every(text: str) -> tuple[int | None, float | None]:
    """--checkpoint-every's value: (steps, None) for "500", (None, seconds) for a duration ("90s", "10m", "1.5h").

    Raises ValueError naming both forms."""
    text = text.strip()
    if text.isdigit():
        if int(text) < 1:
            raise ValueError(f"must be at least 1 step, got {text}")
        return int(text), None
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"expected steps (500) or a duration (90s, 10m, 1.5h), got {text!r}")
    return None, float(match.group(1)) * _UNITS[match.group(2)]


def duration_text(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


@dataclasses.dataclass
class CheckpointCadence:
    """A run's checkpoint cadence: `every_steps` (None: not by steps), `every_seconds` (None: not by time).

    `due(done, total, log_every)` after each step or call; `saved()` after each save (the clock starts again).
    """

    every_steps: int | None
    every_seconds: float | None
    clock: Callable[[], float] = time.monotonic
    last_save: float = dataclasses.field(default=0.0)

    def __post_init__(self) -> None:
        self.last_save = self.clock()

    @classmethod
    def of_run(cls, steps: int | None, seconds: float | None, steps_per_epoch: int) -> "CheckpointCadence":
        """The cadence of a run's --checkpoint-every (steps or seconds); neither: each epoch and every 30 minutes."""
        if steps is None and seconds is None:
            return cls(steps_per_epoch, DEFAULT_SECONDS)
        return cls(steps, seconds)

    def time_due(self, done: int, log_every: int) -> bool:
        """By time: at a train-record step, every_seconds or more after the last save."""
        return (self.every_seconds is not None and done % log_every == 0
                and self.clock() - self.last_save >= self.every_seconds)

    def due(self, done: int, total: int, time_due: bool) -> bool:
        """At the run's end, every every_steps steps, or when time_due (this process's, or the agreed one)."""
        return done == total or bool(self.every_steps and done % self.every_steps == 0) or time_due

    def saved(self) -> None:
        self.last_save = self.clock()

    def text(self) -> str:
        parts = ([f"every {self.every_steps} steps"] if self.every_steps else []) + (
            [f"every {duration_text(self.every_seconds)}"] if self.every_seconds else [])
        return " and ".join(parts)
