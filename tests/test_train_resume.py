"""Resuming a workdir, in both trainers: a resume of another trajectory (batch size, learning rate, explicit
regularisation) is refused naming the field and the fix; a length-scaled run extended to more steps keeps the
regularisation it began with; --keep-checkpoints means the same in both."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.test_train_run import options as jax_options
from tests.test_train_run import tiny_dataset
from train.recipes import length_scaled_regularisation
from train.run import CheckpointMismatchError

# One worker runs the module: its fixtures are runs, shared by its tests.
pytestmark = pytest.mark.xdist_group("train_resume")

FRAMEWORKS = ("jax", "torch")


def options(framework: str, workdir: Path, **changes):
    """tests.test_train_run.options (a few steps of mu/8 on tiny data, nothing held out), in `framework`."""
    return jax_options(workdir, **{"framework": framework, **changes})


def train(framework: str, opts, **kwargs):
    if framework == "jax":
        from train.jax_loop.trainer import train as run
    else:
        from train.torch_loop.trainer import train as run
    return run(opts, **kwargs)


def checkpoint_steps(framework: str, workdir: Path) -> list[int]:
    if framework == "jax":
        from train.jax_loop.checkpoint import Checkpoints

        return Checkpoints(workdir).steps()
    from train.torch_loop.checkpoint import TorchCheckpoints

    return TorchCheckpoints(workdir).steps()


@pytest.fixture(scope="module", params=FRAMEWORKS)
def three_steps(request, tmp_path_factory) -> tuple[str, Path]:
    """(framework, workdir) of a 3-step tutorial run at batch 32 and the recipe's rate, checkpointed at step 3."""
    framework = request.param
    workdir = tmp_path_factory.mktemp(f"three-{framework}") / "run"
    train(framework, options(framework, workdir, steps=3), dataset=tiny_dataset())
    return framework, workdir


# Item 2: another batch size or rate is another trajectory.

@pytest.mark.parametrize("change, field, old, new, fix", [
    (dict(batch_size=64), "batch_size", "32", "64", "--batch-size 32"),
    (dict(lr=1e-2), "lr", "0.0003", "0.01", "--lr 0.0003"),
])
def test_a_resume_with_another_batch_size_or_rate_is_refused(three_steps, tmp_path, change, field, old, new, fix):
    framework, reference = three_steps
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    before = (workdir / "config.json").read_text()
    with pytest.raises(CheckpointMismatchError) as info:
        train(framework, options(framework, workdir, steps=6, **change), dataset=tiny_dataset())
    message = str(info.value)
    assert f"{field} {old} there, {new} here" in message, message
    assert f"resume with {fix}, or start a new run in another --workdir" in message, message
    assert checkpoint_steps(framework, workdir) == [3]  # refused, not moved aside as broken
    assert (workdir / "config.json").read_text() == before  # still the run's own record


def rewrite_meta(framework: str, workdir: Path, change) -> None:
    """Replaces the meta of every checkpoint in `workdir` by change(meta)."""
    if framework == "jax":
        for path in (workdir / "checkpoints").glob("*/meta/metadata"):
            path.write_text(json.dumps(change(json.loads(path.read_text()))))
        return
    import torch

    for path in (workdir / "checkpoints").glob("step_*.pt"):
        saved = torch.load(path, weights_only=True)
        torch.save({**saved, "meta": json.dumps(change(json.loads(saved["meta"])))}, path)


def test_an_older_checkpoint_without_the_recorded_fields_still_resumes(three_steps, tmp_path):
    """Fields a checkpoint does not record (written before they were) are not compared."""
    framework, reference = three_steps
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)

    def older(meta):
        recipe = {k: v for k, v in meta["recipe"].items() if k not in ("batch_size", "architecture", "length_scaled")}
        recipe["augment"] = {k: v for k, v in recipe["augment"].items() if not k.startswith(("randaugment", "mix", "cutmix"))}
        return {k: v for k, v in meta.items() if k != "regularisation"} | {"recipe": recipe}

    rewrite_meta(framework, workdir, older)
    assert train(framework, options(framework, workdir, steps=6), dataset=tiny_dataset()).step == 6


# Item 4: extending a length-scaled run.

# 64 examples, batch 32: an epoch is 2 steps, so 22 steps are 11 epochs (strength > 0: drop_path 0.0041).
SHORT, LONGER = 22, 24


def default_run(framework: str, workdir: Path, steps: int, **flags):
    """The default recipe, its regularisation scaled to the run's length, on 64 examples; but for RandAugment,
    off by a flag (as each run of the test gives it, a flag that agrees with the checkpoint: faster to compile)."""
    return options(framework, workdir, recipe="default", regularisation={"randaugment_ops": 0, **flags}, steps=steps,
                   checkpoint_every=SHORT, log_every=SHORT)


def drop_path_of(length_in_epochs: float) -> float:
    return length_scaled_regularisation(length_in_epochs)["drop_path"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_length_scaled_run_extended_keeps_its_regularisation_and_finishes(framework, tmp_path, capsys):
    began, longer = drop_path_of(SHORT / 2), drop_path_of(LONGER / 2)
    assert 0 < began < longer  # the length rule would give the longer run more
    data = tiny_dataset(n_train=64, n_test=32)
    workdir = tmp_path / "run"
    first = train(framework, default_run(framework, workdir, SHORT), dataset=data)
    assert first.config.drop_path == began
    capsys.readouterr()

    result = train(framework, default_run(framework, workdir, LONGER), dataset=data)
    err = capsys.readouterr().err
    assert result.step == LONGER
    assert result.config.drop_path == began, "the extended run changed its stochastic depth"
    assert f"note: the run now ends at step {LONGER}, not {SHORT}; the schedule follows" in err, err
    assert f"the regularisation stays as the run began (drop_path {began:g}" in err, err
    config = json.loads((workdir / "config.json").read_text())
    assert config["total_steps"] == LONGER
    assert config["model_config"]["drop_path"] == began and config["regularisation"]["drop_path"] == began
    assert config["regularisation"]["epochs"] == SHORT / 2  # the length it was scaled for
    assert checkpoint_steps(framework, workdir)[-1] == LONGER  # recording the same meta as config.json

    # An explicit flag that differs from the run's regularisation is another trajectory: refused.
    with pytest.raises(CheckpointMismatchError) as info:
        train(framework, default_run(framework, workdir, LONGER + 2, drop_path=longer), dataset=data)
    message = str(info.value)
    assert f"drop_path {began!r} there, {longer!r} here" in message, message
    assert f"resume with --drop-path {began!r}" in message, message


# The small item: --keep-checkpoints 0.

@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_keep_checkpoints_must_keep_at_least_one(framework, tmp_path):
    """0 used to keep every PyTorch checkpoint and no JAX one (orbax deleted even the last): now refused by
    both, before anything is read or written; 1 keeps the newest in both."""
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"--keep-checkpoints must be at least 1 .*got 0"):
        train(framework, options(framework, workdir, steps=3, checkpoint_every=1, keep_checkpoints=0),
              dataset=tiny_dataset())
    assert not workdir.exists()
    meta = {"framework": framework}
    if framework == "jax":
        import numpy as np

        from train.jax_loop.checkpoint import Checkpoints

        checkpoints = Checkpoints(workdir, keep=1)
        for step in (1, 2, 3):
            checkpoints.save(step, {"w": np.full(2, step, np.float32)}, np.zeros(2, np.uint32), meta)
        checkpoints.close()
    else:
        import torch

        from train.torch_loop.checkpoint import TorchCheckpoints

        checkpoints = TorchCheckpoints(workdir, keep=1)
        for step in (1, 2, 3):
            checkpoints.save(step, torch.nn.Linear(1, 1), {}, meta)
    assert checkpoint_steps(framework, workdir) == [3]
