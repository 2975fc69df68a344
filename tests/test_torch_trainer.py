"""`vit train --framework torch` end to end on small data: what it writes, resume (also after SIGKILL), faults,
refused workdirs; the same data order, recipe and schedule as the JAX trainer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_train_distributed import kill_at_random_moments
from tests.test_train_run import assert_same_weights, tiny_dataset, weights
from train.recipes import length_scaled_regularisation
from train.run import CheckpointMismatchError, DivergedError, RunFinishedError, TrainOptions
from train.torch_loop.checkpoint import TorchCheckpoints
from train.torch_loop.trainer import train

pytestmark = pytest.mark.xdist_group("torch_trainer")

ROOT = Path(__file__).resolve().parents[1]


def options(workdir: Path, **changes) -> TrainOptions:
    """A run of a few steps on tiny data, nothing held out (as tests/test_train_run.py's, for PyTorch)."""
    base = dict(workdir=str(workdir), model="mu/8", recipe="tutorial", batch_size=32, steps=6, eval_every=0,
                log_every=1, checkpoint_every=3, progress=False, validation=0, framework="torch")
    if changes.get("recipe") == "default":
        base["regularisation"] = length_scaled_regularisation(200)
    base.update(changes)
    return TrainOptions(**base)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 6-step run with checkpoints at steps 3 and 6."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    train(options(workdir), dataset=tiny_dataset())
    return workdir


def test_run_writes_what_the_user_sees(reference):
    assert TorchCheckpoints(reference).steps() == [3, 6]
    for name in ("config.json", "metrics.jsonl", "curves.png", "model.safetensors"):
        assert (reference / name).is_file(), name
    records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert all(r["images_per_s"] > 0 and np.isfinite(r["loss"]) for r in records if r["kind"] == "train")
    assert records[-1]["kind"] == "eval" and records[-1]["split"] == "test" and 0.0 <= records[-1]["accuracy"] <= 1.0
    config = json.loads((reference / "config.json").read_text())
    assert config["framework"] == "torch" and config["model_config"]["width"] == 32
    assert config["recipe"]["name"] == "tutorial" and config["recipe"]["optimizer"] == "adam_l2"


def test_resume_continues_exactly(reference, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    (workdir / "checkpoints" / "step_6.pt").unlink()  # as if killed after the checkpoint at step 3
    (workdir / "model.safetensors").unlink()
    result = train(options(workdir), dataset=tiny_dataset())
    assert result.step == 6
    assert_same_weights(weights(workdir), weights(reference))
    steps = [r["step"] for r in result.records if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6], "metrics.jsonl repeats or loses the re-run steps"


def test_truncated_checkpoint_falls_back_to_the_previous_one(reference, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    (workdir / "model.safetensors").unlink()
    last = workdir / "checkpoints" / "step_6.pt"
    with open(last, "r+b") as handle:
        handle.truncate(last.stat().st_size // 2)
    result = train(options(workdir), dataset=tiny_dataset())
    err = capsys.readouterr().err
    assert "checkpoint step 6" in err and "unreadable" in err, err
    assert "previous good checkpoint, step 3" in err, err
    assert (workdir / "broken_checkpoints" / "step_6.pt").is_file()
    assert result.step == 6
    assert_same_weights(weights(workdir), weights(reference))


def test_workdir_of_another_run_is_refused(reference, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference / "checkpoints", workdir / "checkpoints")
    with pytest.raises(CheckpointMismatchError, match="another model"):
        train(options(workdir, model="mu/16"), dataset=tiny_dataset())
    with pytest.raises(CheckpointMismatchError, match="another recipe"):
        train(options(workdir, recipe="default"), dataset=tiny_dataset())
    assert TorchCheckpoints(workdir).steps() == [3, 6]  # refused, not moved aside as broken


def test_each_framework_refuses_the_others_workdir(reference, tmp_path):
    from tests.test_train_run import options as jax_options
    from train.jax_loop import trainer

    with pytest.raises(CheckpointMismatchError, match="PyTorch run"):
        trainer.train(jax_options(reference), dataset=tiny_dataset())
    jax_dir = tmp_path / "jax"
    trainer.train(jax_options(jax_dir, steps=3), dataset=tiny_dataset())
    with pytest.raises(CheckpointMismatchError, match="JAX run"):
        train(options(jax_dir, steps=3), dataset=tiny_dataset())


def test_a_run_past_the_requested_end_is_refused(reference, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    with pytest.raises(RunFinishedError, match=r"already trained 6 steps, past the requested end at step 3"):
        train(options(workdir, steps=3), dataset=tiny_dataset())
    again = train(options(workdir), dataset=tiny_dataset())  # the same end: nothing to train, still reports
    assert again.step == 6
    assert_same_weights(weights(workdir), weights(reference))


def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(DivergedError, match="NaN or infinite") as info:
        train(options(workdir, lr=1e30, checkpoint_every=1, log_every=100), dataset=tiny_dataset())
    steps = TorchCheckpoints(workdir).steps()
    assert steps, "the good checkpoints before the divergence are kept"
    assert f"last good checkpoint is step {steps[-1]}" in str(info.value)
    assert not (workdir / "model.safetensors").exists()
    saved = torch.load(TorchCheckpoints(workdir).path(steps[-1]), weights_only=True)
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


def test_default_recipe_with_every_augmentation_and_bfloat16(tmp_path):
    result = train(options(tmp_path / "run", recipe="default", dtype="bfloat16", steps=3), dataset=tiny_dataset())
    assert all(v.dtype == np.float32 for v in result.params.values())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["regularisation"]["mixup_alpha"] > 0 and config["regularisation"]["randaugment_ops"] == 2


def test_same_data_order_and_schedule_as_the_jax_trainer(reference, tmp_path):
    """The records of both trainers: the same learning rate at every step, and (with nothing random in the
    tutorial recipe but crop, flip and dropout) losses of the same size."""
    from tests.test_train_run import options as jax_options
    from train.jax_loop import trainer

    jax_run = trainer.train(jax_options(tmp_path / "jax"), dataset=tiny_dataset())
    torch_records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    jax_lr = [r["lr"] for r in jax_run.records if r["kind"] == "train"]
    torch_lr = [r["lr"] for r in torch_records if r["kind"] == "train"]
    np.testing.assert_allclose(torch_lr, jax_lr, rtol=1e-6)


def test_a_run_shorter_than_log_every_logs_its_last_step_once(tmp_path):
    """As the JAX trainer (tests/test_train_run.py): a train record at the last step, none repeated on resume."""
    from tests.test_train_run import train_steps

    workdir = tmp_path / "run"
    train(options(workdir, steps=5, log_every=50, checkpoint_every=50), dataset=tiny_dataset())
    assert train_steps(workdir) == [5]
    train(options(workdir, steps=7, log_every=50, checkpoint_every=50), dataset=tiny_dataset())
    assert train_steps(workdir) == [5, 7]


def test_bad_options_are_refused_with_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--streaming is an option of the JAX trainer"):
        train(options(tmp_path / "a", streaming=True), dataset=tiny_dataset())
    with pytest.raises(ValueError, match="--steps-per-dispatch is an option of the JAX trainer"):
        train(options(tmp_path / "b", steps_per_dispatch=4), dataset=tiny_dataset())
    with pytest.raises(ValueError, match="unknown --dtype"):
        train(options(tmp_path / "c", dtype="float16"), dataset=tiny_dataset())


RUNNER = r'''
import json, sys
from tests.test_train_run import tiny_dataset
from train.run import TrainOptions
from train.torch_loop.trainer import train
result = train(TrainOptions(**json.loads(sys.argv[1])), dataset=tiny_dataset())
print("RESULT " + json.dumps({"step": result.step}), flush=True)
'''


def _latest(workdir: Path) -> int:
    return max(TorchCheckpoints(workdir).steps(), default=-1) if (workdir / "checkpoints").is_dir() else -1


def test_sigkill_at_any_moment_then_resume_is_bit_identical(tmp_path):
    common = dict(steps=40, checkpoint_every=2, keep_checkpoints=2, recipe="default")
    reference = tmp_path / "reference"
    train(options(reference, **common), dataset=tiny_dataset())
    killed = tmp_path / "killed"
    args = json.dumps({**vars(options(killed, **common))})
    start = lambda: subprocess.Popen([sys.executable, "-c", RUNNER, args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kill_at_random_moments(start, lambda: _latest(killed))
    proc = start()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert_same_weights(weights(killed), weights(reference))
