"""A CPU run of a recipe's own length says once how long it takes here and which measured shorter runs exist
(train.length_advice); a run given its length, or on an accelerator, says nothing."""

from __future__ import annotations

import numpy as np
import pytest

from train import length_advice
from train.data import Dataset, Split
from train.run import TrainOptions


def test_the_first_runs_advice_gives_the_time_here_and_the_measured_shorter_runs():
    # The README's first command on this machine: 200 epochs of 352 steps at ~0.66 s a step.
    line = length_advice.advice("default", 200, 352, 0.66, cifar10_tutorial=True)
    assert line.startswith("no accelerator found: the recipe's 200 epochs take about 12.9 h on this machine (0.66 s a step)")
    assert "`vit train --epochs 5` reaches 66.9% test accuracy in about 19 min" in line
    assert "`vit train --epochs 50` reaches 81.4% test accuracy in about 3.2 h" in line
    assert "--recipe" not in line
    assert line.endswith("the same command resumes from the last checkpoint.")


def test_only_the_recipes_own_shorter_rows_are_offered():
    line = length_advice.advice("tutorial", 50, 352, 0.5, cifar10_tutorial=True)
    assert "`vit train --recipe tutorial --epochs 5` reaches 55.8%" in line and "66.9%" not in line
    assert "--epochs 50" not in line  # the tutorial recipe's own 50 epochs are not a shorter run
    # Another dataset or model: the table's accuracies are not its; the time alone is said.
    other = length_advice.advice("default", 200, 100, 0.5, cifar10_tutorial=False)
    assert "shorter runs" not in other and "about 2.8 h" in other
    # A recipe without measured shorter runs (finetune): the time alone.
    assert "shorter runs" not in length_advice.advice("finetune", 10, 100, 0.5, cifar10_tutorial=True)


@pytest.mark.parametrize("seconds, text", [(40, "40 s"), (16 * 60, "16 min"), (3 * 3600, "3.0 h"), (12.9 * 3600, "12.9 h")])
def test_durations_read_as_a_person_says_them(seconds, text):
    assert length_advice.duration(seconds) == text


def test_it_applies_to_a_cpu_run_of_the_recipes_own_length_only():
    assert length_advice.applies(None, None, accelerator=False)
    assert not length_advice.applies(5, None, accelerator=False)
    assert not length_advice.applies(None, 100, accelerator=False)
    assert not length_advice.applies(None, None, accelerator=True)
    assert length_advice.is_table_run("cifar10", "tutorial", None)
    assert not length_advice.is_table_run("folder:~/photos", "tutorial", None)
    assert not length_advice.is_table_run("cifar10", "S/16", None)
    assert not length_advice.is_table_run("cifar10", "tutorial", "vit_small.safetensors")


def _tiny() -> Dataset:
    rng = np.random.default_rng(0)
    split = lambda n: Split(rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8), rng.integers(0, 10, n).astype(np.int32))
    return Dataset("tiny", 10, split(128), split(16))


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_a_cpu_run_without_a_length_says_it_once_after_its_first_timed_steps(framework, tmp_path, capsys):
    if framework == "torch":
        pytest.importorskip("torch")
        from train.torch_loop.trainer import train
    else:
        from train.jax_loop.trainer import train
    # --recipe finetune's own length (10 epochs of 2 steps), from scratch on a tiny model.
    common = dict(model="mu/8", recipe="finetune", batch_size=64, validation=0, eval_every=0, log_every=2,
                  progress=False, framework=framework)
    train(TrainOptions(workdir=str(tmp_path / "own"), **common), dataset=_tiny())
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("no accelerator found")]
    assert len(said) == 1, said
    assert said[0].startswith("no accelerator found: the recipe's 10 epochs take about ")
    train(TrainOptions(workdir=str(tmp_path / "given"), epochs=2, **common), dataset=_tiny())
    assert "no accelerator found" not in capsys.readouterr().err
