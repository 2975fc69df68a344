"""What the user sees: WORKDIR/metrics.jsonl, WORKDIR/curves.png and the progress bar."""

from __future__ import annotations

import collections
import json
import math
import sys
from pathlib import Path
from typing import Any

from train.write_errors import writing
from vit_spec import atomic_path


class MetricsLog:
    """metrics.jsonl: one JSON object per logged train step ("kind": "train") and per evaluation ("eval",
    with "split": "validation" during the run, "test" once at its end)."""

    def __init__(self, workdir: str | Path, resume_step: int, enabled: bool = True):
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the half-written last line of a killed run
                # Steps after the checkpoint we resume from are re-run, and re-logged.
                if isinstance(record, dict) and record.get("step", math.inf) <= resume_step:
                    self.records.append(record)
        if enabled:
            with writing("metrics.jsonl", self.path, self.path.parent), atomic_path(self.path) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.enabled:
            # A full disk may leave half a line: reading skips it (above), and the run stops with the error.
            with writing("metrics.jsonl", self.path, self.path.parent), open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def plot(self, path: str | Path) -> None:
        """Redraws the run's curves.png as `vit plot WORKDIR` draws them (vit_figures.curves: loss, accuracy and
        learning rate; atomically: a reader never sees half a PNG)."""
        if not self.enabled:
            return
        from vit_figures import curves

        with writing(Path(path).name, path, self.path.parent):
            curves.save(curves.draw([curves.group(self.records)], [self.path.parent.name or "run"]), path)


class Progress:
    """A tqdm bar over the run's steps with loss, accuracy and images/s (ETA comes from tqdm).

    The bar counts finished steps, not dispatched ones: jitted steps run asynchronously, so the loop
    hands each call's result to `dispatched` and the bar advances when that result is ready. At most
    `in_flight` calls stay unfinished: enough that the device always has the next step queued while
    the host prepares another, few enough that the bar (and tqdm's rate and ETA) follow the device.
    The window holds without a bar too, so runs with and without one dispatch alike.
    """

    def __init__(self, total: int, initial: int, enabled: bool, in_flight: int = 2):
        self.bar = None
        self.in_flight = in_flight
        self._unfinished: collections.deque[tuple[int, Any]] = collections.deque()  # (steps, result)
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def dispatched(self, steps: int, result: Any) -> None:
        """A call of `steps` steps was dispatched; `result` (a pytree of its arrays) is ready when it finished.

        Counts the calls that have finished, oldest first, then waits for the oldest while more than
        `in_flight` are unfinished.
        """
        self._unfinished.append((steps, result))
        while self._unfinished and (len(self._unfinished) > self.in_flight or _is_ready(self._unfinished[0][1])):
            self._count_oldest()

    def drain(self) -> None:
        """Waits for every dispatched call and counts it (before a log, an evaluation or a checkpoint)."""
        while self._unfinished:
            self._count_oldest()

    def _count_oldest(self) -> None:
        steps, result = self._unfinished.popleft()
        _wait(result)
        self.update(steps)

    def show(self, **values: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_ready(tree: Any) -> bool:
    """Whether every jax array in `tree` has been computed (without waiting). Plain values (the PyTorch
    trainer's, computed synchronously) always are."""
    jax = sys.modules.get("jax")  # framework-free: only a JAX trainer hands over jax arrays
    if jax is None:
        return True
    return all(leaf.is_ready() for leaf in jax.tree_util.tree_leaves(tree) if isinstance(leaf, jax.Array))


def _wait(tree: Any) -> None:
    jax = sys.modules.get("jax")
    if jax is not None:
        jax.block_until_ready(tree)
