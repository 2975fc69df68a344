"""--checkpoint-every takes steps or a duration; the default checkpoints each epoch and at most 30 minutes
after the last checkpoint (train.checkpoint_cadence)."""

from __future__ import annotations

import pytest

from train.checkpoint_cadence import DEFAULT_SECONDS, CheckpointCadence, parse_every
from vit_cli.main import main


@pytest.mark.parametrize("text, parsed", [("500", (500, None)), ("90s", (None, 90.0)), ("10m", (None, 600.0)),
                                          ("10min", (None, 600.0)), ("1.5h", (None, 5400.0))])
def test_steps_or_a_duration(text, parsed):
    assert parse_every(text) == parsed


@pytest.mark.parametrize("text", ["0", "10x", "-5", "m", "0s", "1.5"])
def test_anything_else_is_refused_naming_both_forms(text, capsys):
    assert pytest.raises(SystemExit, main, ["train", "--checkpoint-every", text]).value.code == 2
    err = capsys.readouterr().err
    assert "argument --checkpoint-every" in err
    assert "at least 1 step" in err or "expected steps (500) or a duration (90s, 10m, 1.5h)" in err


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_default_checkpoints_each_epoch_and_at_most_30_minutes_apart():
    clock = Clock()
    cadence = CheckpointCadence.of_run(None, None, steps_per_epoch=1000)
    cadence = CheckpointCadence(cadence.every_steps, cadence.every_seconds, clock=clock)
    assert (cadence.every_steps, cadence.every_seconds) == (1000, DEFAULT_SECONDS) == (1000, 1800)
    assert cadence.due(1000, 5000, cadence.time_due(1000, 50))
    clock.now = 1799.0
    assert not cadence.due(950, 5000, cadence.time_due(950, 50))
    clock.now = 1800.0
    assert not cadence.time_due(951, 50), "time is read at train-record steps only"
    assert cadence.due(1050, 5000, cadence.time_due(1050, 50))
    cadence.saved()
    clock.now = 2000.0
    assert not cadence.due(1100, 5000, cadence.time_due(1100, 50))
    assert cadence.due(5000, 5000, False), "the run's last step always saves"


def test_a_given_cadence_replaces_the_default():
    assert (CheckpointCadence.of_run(500, None, 1000).every_steps, CheckpointCadence.of_run(500, None, 1000).every_seconds) == (500, None)
    by_time = CheckpointCadence.of_run(None, 600.0, 1000)
    assert (by_time.every_steps, by_time.every_seconds) == (None, 600.0)
    assert not by_time.due(1000, 5000, False), "no epoch cadence when a duration is given"
    assert by_time.text() == "every 10 min"
