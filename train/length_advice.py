"""What a run says once, on a machine without an accelerator, when no length was given: how long the recipe's
full length takes here, and which shorter runs the README's measured table offers instead.

The README's first command is `vit train`, the `default` recipe's 200 epochs: on a 2-core CPU a progress bar
with an ETA of about 13 hours, and nothing saying what a shorter run would give. Both trainers call
`advice` after their first timed steps (framework-free: they pass what they measured).
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class MeasuredRun:
    """A row of the README's table: a run of `recipe` on CIFAR-10 with the tutorial model, seed 0, batch 128,
    on the project's 2-core CPU machine."""

    recipe: str
    epochs: int
    test_accuracy: float


# The README's "Train" section and docs/training.md (commands `vit train --epochs N`, `--recipe tutorial --epochs N`).
MEASURED_RUNS = (
    MeasuredRun("default", 5, 0.669),
    MeasuredRun("default", 50, 0.8143),  # docs/runs/default-50
    MeasuredRun("tutorial", 5, 0.558),
    MeasuredRun("tutorial", 50, 0.7603),  # docs/runs/tutorial-50: the recipe's own length, never offered as shorter
)


def applies(epochs: int | None, steps: int | None, accelerator: bool) -> bool:
    """A run says it when it trains on a CPU for the recipe's own length (no --epochs, no --steps)."""
    return not accelerator and epochs is None and steps is None


def is_table_run(dataset: str, model: str, init_from: str | None) -> bool:
    """A run like the table's (CIFAR-10, the tutorial model, from scratch), whose shorter rows then apply."""
    return dataset == "cifar10" and model == "tutorial" and init_from is None


def duration(seconds: float) -> str:
    """A duration as a person says it: "40 s", "16 min", "3.3 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def advice(recipe: str, epochs: float, steps_per_epoch: int, seconds_per_step: float, cifar10_tutorial: bool) -> str:
    """The line a CPU run of the recipe's full length says after its first timed steps.

    Args:
        recipe: the recipe's name.
        epochs: the run's length in epochs (the recipe's).
        steps_per_epoch: of this run.
        seconds_per_step: measured here, over the first timed steps.
        cifar10_tutorial: the run is the table's (CIFAR-10, the tutorial model, from scratch): its shorter rows apply.
    """
    per_epoch = steps_per_epoch * seconds_per_step
    line = (f"no accelerator found: the recipe's {epochs:g} epochs take about {duration(epochs * per_epoch)} on this "
            f"machine ({seconds_per_step:.2f} s a step)")
    rows = [r for r in MEASURED_RUNS if r.recipe == recipe and r.epochs < epochs] if cifar10_tutorial else []
    if rows:
        flags = "" if recipe == "default" else f" --recipe {recipe}"
        offers = ", ".join(f"`vit train{flags} --epochs {r.epochs}` reaches {r.test_accuracy:.1%} test accuracy in "
                           f"about {duration(r.epochs * per_epoch)}" for r in rows)
        line += f"; shorter runs, measured (README, 'Train'): {offers}"
    return line + ". Going on; the same command resumes from the last checkpoint."


def for_run(options: Any, recipe: Any, total: int, steps_per_epoch: int, images_per_s: float) -> str:
    """`advice` for a run of train.run.TrainOptions `options` and resolved train.recipes.Recipe `recipe`, `total`
    steps long, whose first timed steps ran at `images_per_s`."""
    return advice(recipe.name, total / steps_per_epoch, steps_per_epoch, recipe.batch_size / images_per_s,
                  is_table_run(options.dataset, options.model, options.init_from))


class FirstRunAdvice:
    """The advice as a run's loop gives it: once, after the first train record that has a speed, where it
    applies (a fresh CPU run of the recipe's own length; the lead process of a multi-process one)."""

    def __init__(self, options: Any, recipe: Any, total: int, steps_per_epoch: int, accelerator: bool, fresh: bool):
        self.due = fresh and applies(options.epochs, options.steps, accelerator)
        self._run = (options, recipe, total, steps_per_epoch)

    def after(self, record: dict[str, Any], say: Any) -> None:
        """After a train record: say the advice (`say(line)`) if it is due and the record has a speed."""
        if self.due and record.get("images_per_s"):
            say(for_run(*self._run, record["images_per_s"]))
            self.due = False
