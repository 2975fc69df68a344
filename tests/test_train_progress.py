"""The progress bar counts finished steps, not dispatched ones, and starts a resumed run at its step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train.data import Dataset, Split
from train.jax_loop import trainer
from train.jax_loop.trainer import TrainOptions, train
from train.metrics import Progress


@jax.jit
def _slowly(x: jax.Array) -> jax.Array:
    """x, after tens of milliseconds of work it depends on: a result that is not ready when dispatch returns."""
    a = jnp.full((192, 192), 0.01) + 0.0 * x
    a = jax.lax.fori_loop(0, 40, lambda i, a: jnp.tanh(a @ a), a)
    return x + 0.0 * a[0, 0]


class RecordingProgress(Progress):
    """A Progress without a bar that checks, at each count, that the steps it counts have finished."""

    instances: list["RecordingProgress"] = []

    def __init__(self, total: int, initial: int, enabled: bool, **kwargs: Any):
        super().__init__(total, initial, enabled=False, **kwargs)
        self.total, self.initial = total, initial
        self.results: list[Any] = []  # every dispatched step's metrics, in order (filled by the step)
        self.counted = 0
        self.counted_at_dispatch: list[int] = []
        RecordingProgress.instances.append(self)

    def update(self, n: int = 1) -> None:
        finishing = self.results[self.counted : self.counted + n]
        assert len(finishing) == n, "the bar counted steps that were not dispatched"
        for metrics in finishing:
            assert all(leaf.is_ready() for leaf in jax.tree_util.tree_leaves(metrics)), "the bar counted an unfinished step"
        self.counted += n


def test_progress_counts_calls_as_they_finish():
    progress = RecordingProgress(total=10, initial=0, enabled=True, in_flight=2)
    x = jnp.ones(())
    for i in range(6):
        result = _slowly(x + i)
        progress.results.append(result)
        progress.dispatched(1, result)
        assert progress.counted >= i + 1 - 2  # never more than 2 calls unfinished behind the bar
    progress.drain()
    assert progress.counted == 6


def _tiny_dataset() -> Dataset:
    rng = np.random.default_rng(0)

    def split(n: int) -> Split:
        return Split(rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8), rng.integers(0, 10, n).astype(np.int32))

    return Dataset("tiny", 10, split(128), split(32))


def test_training_bar_follows_finished_steps_and_resumes_at_the_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    made = trainer.make_train_step

    def slow_train_step(*args: Any, **kwargs: Any):
        step = made(*args, **kwargs)

        def run(state: Any, batch: Any, rng: jax.Array):
            state, metrics = step(state, batch, rng)
            metrics = {**metrics, "loss": _slowly(metrics["loss"])}  # finishes well after dispatch returns
            progress = RecordingProgress.instances[-1]
            progress.counted_at_dispatch.append(progress.counted)
            progress.results.append(metrics)
            return state, metrics

        return run

    monkeypatch.setattr(trainer, "make_train_step", slow_train_step)
    monkeypatch.setattr(trainer, "Progress", RecordingProgress)
    RecordingProgress.instances.clear()
    # No log, evaluation or checkpoint before the end: only finishing steps can move the bar.
    common = dict(workdir=str(tmp_path / "run"), model="mu/8", recipe="tutorial", batch_size=16, eval_every=0,
                  log_every=1000, checkpoint_every=1000, progress=True, validation=0)
    train(TrainOptions(steps=8, **common), dataset=_tiny_dataset())
    first = RecordingProgress.instances[-1]
    assert (first.initial, first.total, first.counted) == (0, 8, 8)
    # The bar moved during the run, a step or two behind the dispatch, not all at once at the end.
    for dispatched, counted in enumerate(first.counted_at_dispatch):
        assert counted >= dispatched - 3, first.counted_at_dispatch

    train(TrainOptions(steps=11, **common), dataset=_tiny_dataset())  # resumes from the checkpoint at step 8
    resumed = RecordingProgress.instances[-1]
    assert (resumed.initial, resumed.total, resumed.counted) == (8, 11, 3)
