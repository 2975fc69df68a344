"""`vit train` end to end on small data: resume, faults, bad input; and a short real CIFAR-10 run that learns."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from train.data import Dataset, Split
from train.jax_loop.checkpoint import CheckpointMismatchError, Checkpoints
from train.jax_loop.trainer import DivergedError, TrainOptions, train
from train.recipes import RecipeError, length_scaled_regularisation
from vit_cli.main import main
from vit_spec import ConfigError, load_weights

# One worker runs the module: its fixtures are costly runs, shared by its tests.
pytestmark = pytest.mark.xdist_group("train_run")


def tiny_dataset(n_train: int = 256, n_test: int = 64, seed: int = 0) -> Dataset:
    """Learnable noise: each class tints its images with its own colour."""
    rng = np.random.default_rng(seed)
    tint = rng.integers(0, 128, (10, 1, 1, 3))

    def split(n: int) -> Split:
        labels = rng.integers(0, 10, n).astype(np.int32)
        images = (rng.integers(0, 128, (n, 32, 32, 3)) + tint[labels]).astype(np.uint8)
        return Split(images, labels)

    return Dataset("tiny", 10, split(n_train), split(n_test))


def options(workdir: Path, **changes) -> TrainOptions:
    """A run of a few steps on tiny data (nothing held out). The default recipe gets the regularisation of a
    long run, which its length would turn off, so that these runs go through every augmentation."""
    base = dict(workdir=str(workdir), model="mu/8", recipe="tutorial", batch_size=32, steps=6, eval_every=0,
                log_every=1, checkpoint_every=3, progress=False, validation=0)
    if changes.get("recipe") == "default":
        base["regularisation"] = length_scaled_regularisation(200)
    base.update(changes)
    return TrainOptions(**base)


def cli_options(monkeypatch, argv: list[str]) -> TrainOptions:
    """The TrainOptions that `vit train ARGV` hands to the trainer (which is not run)."""
    seen = {}

    def fake_train(options):
        seen["options"] = options
        raise SystemExit(0)

    monkeypatch.setattr("train.jax_loop.trainer.train", fake_train)
    with pytest.raises(SystemExit):
        main(["train", *argv])
    return seen["options"]


def weights(workdir: Path) -> dict[str, np.ndarray]:
    return load_weights(Path(workdir) / "model.safetensors")[1]


def assert_same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name  # bit-identical


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 6-step run with checkpoints at steps 3 and 6."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    train(options(workdir), dataset=tiny_dataset())
    return workdir


def test_run_writes_what_the_user_sees(reference):
    assert sorted(Checkpoints(reference).steps()) == [3, 6]
    for name in ("config.json", "metrics.jsonl", "curves.png", "model.safetensors"):
        assert (reference / name).is_file(), name
    import json

    records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == [1, 2, 3, 4, 5, 6]
    speeds = [r["images_per_s"] for r in records if r["kind"] == "train"]
    assert speeds[0] is None and all(s > 0 for s in speeds[1:])  # step 1 compiles: no speed for it
    for key in ("step", "epoch", "loss", "lr", "accuracy", "images_per_s"):
        assert key in records[-2], key
    assert records[-1]["kind"] == "eval" and 0.0 <= records[-1]["accuracy"] <= 1.0
    config = json.loads((reference / "config.json").read_text())
    assert config["model_config"]["width"] == 32 and config["recipe"]["name"] == "tutorial"


def test_resume_continues_exactly(reference, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    shutil.rmtree(workdir / "checkpoints" / "6")  # as if killed after the checkpoint at step 3
    (workdir / "model.safetensors").unlink()
    result = train(options(workdir), dataset=tiny_dataset())
    assert result.step == 6
    assert_same_weights(weights(workdir), weights(reference))
    steps = [r["step"] for r in result.records if r["kind"] == "train"]
    assert len(steps) == len(set(steps)), "metrics.jsonl repeats the re-run steps"


def test_a_run_past_the_requested_end_is_refused(reference, tmp_path):
    """Not "resuming from step 6 of 3", then reporting the step-6 weights as step 3."""
    from train.run import RunFinishedError

    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    with pytest.raises(RunFinishedError, match=r"already trained 6 steps, past the requested end at step 3"):
        train(options(workdir, steps=3), dataset=tiny_dataset())
    assert_same_weights(weights(workdir), weights(reference))  # untouched


def test_truncated_checkpoint_falls_back_to_the_previous_one(reference, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    (workdir / "model.safetensors").unlink()
    for f in (workdir / "checkpoints" / "6").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            with open(f, "r+b") as handle:
                handle.truncate(f.stat().st_size // 2)
    result = train(options(workdir), dataset=tiny_dataset())
    err = capsys.readouterr().err
    assert "checkpoint step 6" in err and "unreadable" in err, err
    assert "previous good checkpoint, step 3" in err, err
    assert result.step == 6
    assert_same_weights(weights(workdir), weights(reference))


def test_workdir_with_another_models_checkpoint_is_refused(reference, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference / "checkpoints", workdir / "checkpoints")
    with pytest.raises(CheckpointMismatchError, match="another model"):
        train(options(workdir, model="mu/16"), dataset=tiny_dataset())
    with pytest.raises(CheckpointMismatchError, match="another recipe"):
        train(options(workdir, recipe="default"), dataset=tiny_dataset())
    assert Checkpoints(workdir).steps() == [3, 6]  # refused, not moved aside as broken


def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(DivergedError, match="NaN or infinite") as info:
        train(options(workdir, lr=1e30, checkpoint_every=1, log_every=100), dataset=tiny_dataset())
    steps = Checkpoints(workdir).steps()
    assert steps, "the good checkpoints before the divergence are kept"
    assert f"last good checkpoint is step {steps[-1]}" in str(info.value)
    assert not (workdir / "model.safetensors").exists()
    # The kept checkpoint is finite; the divergence happened after it.
    import orbax.checkpoint as ocp

    restored = Checkpoints(workdir).manager.restore(steps[-1], args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    import jax

    leaves = jax.tree_util.tree_leaves(restored["state"]["state"])
    assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)


def test_bad_input_is_refused_with_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown variant"):
        train(options(tmp_path / "a", model="XL/3"), dataset=tiny_dataset())
    with pytest.raises(RecipeError, match="unknown recipe"):
        train(options(tmp_path / "b", recipe="fast"), dataset=tiny_dataset())
    with pytest.raises(RecipeError, match="batch-size"):
        train(options(tmp_path / "c", batch_size=0), dataset=tiny_dataset())


def test_missing_dataset_says_where_it_looked_and_how_to_fix_it(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["train", "--data-dir", str(tmp_path / "empty"), "--workdir", str(tmp_path / "w"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("vit train: error: dataset 'cifar10' is not prepared"), err
    assert str((tmp_path / "empty").resolve()) in err and "(there is no prepared cifar10/ folder in it)" in err
    assert "pip install 'vit-twins[data]'" in err and "--data-dir" in err
    assert main(["train", "--data-dir", str(tmp_path / "nowhere"), "--workdir", str(tmp_path / "w"), "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith(f"vit train: error: --data-dir {tmp_path / 'nowhere'} does not exist: ")


def train_steps(workdir: Path) -> list[int]:
    """The steps of WORKDIR/metrics.jsonl's train records, in order."""
    import json

    records = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r["kind"] == "train"]


def test_a_run_shorter_than_log_every_logs_its_last_step_once(tmp_path):
    """--log-every 50 on a 5-step run: a train record at step 5, so `vit plot` has something to draw; extended
    from its checkpoint, the run adds step 7 and repeats none (PyTorch's trainer: tests/test_torch_trainer.py)."""
    workdir = tmp_path / "run"
    train(options(workdir, steps=5, log_every=50, checkpoint_every=50), dataset=tiny_dataset())
    assert train_steps(workdir) == [5]
    train(options(workdir, steps=7, log_every=50, checkpoint_every=50), dataset=tiny_dataset())
    assert train_steps(workdir) == [5, 7]


def test_steps_and_epochs_together_are_refused_before_any_data_is_read(tmp_path, capsys):
    for framework in ("jax", "torch"):
        code = main(["train", "--framework", framework, "--steps", "5", "--epochs", "2", "--data-dir",
                     str(tmp_path / "nowhere"), "--workdir", str(tmp_path / "w"), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and "--steps 5 and --epochs 2 both set the run's length: give one of them" in err, err
    assert not (tmp_path / "w").exists()


def test_bfloat16_compute_keeps_float32_parameters(tmp_path):
    result = train(options(tmp_path / "run", dtype="bfloat16", steps=2), dataset=tiny_dataset())
    assert np.isfinite(result.test_loss)
    assert {a.dtype for a in weights(tmp_path / "run").values()} == {np.dtype("float32")}


def cifar_dir() -> str:
    """The tfds data dir holding CIFAR-10, or a skip saying where it was looked for."""
    data_dir = os.environ.get("TFDS_DATA_DIR")
    if not data_dir or not (Path(data_dir) / "cifar10").is_dir():
        pytest.skip(f"CIFAR-10 is not prepared under TFDS_DATA_DIR={data_dir!r} (CI sets it to ../shared/tensorflow_datasets)")
    return data_dir


def test_short_real_run_learns_and_both_frameworks_score_it_alike(tmp_path, capsys):
    data_dir = cifar_dir()
    workdir = tmp_path / "cifar"
    code = main(["train", "--model", "mu/4", "--recipe", "tutorial", "--lr", "2e-3", "--steps", "250",
                 "--eval-every", "0", "--workdir", str(workdir), "--data-dir", data_dir, "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("test accuracy ")[1].split("%,")[0]) / 100
    assert accuracy > 0.25, out  # chance is 0.10
    code = main(["eval", str(workdir / "model.safetensors"), "--framework", "both", "--data-dir", data_dir])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = {line.split(":")[0]: line for line in out.splitlines()}
    jax_acc = float(lines["jax"].split("accuracy ")[1].split("%")[0]) / 100
    torch_acc = float(lines["torch"].split("accuracy ")[1].split("%")[0]) / 100
    assert jax_acc == pytest.approx(accuracy, abs=1e-4) and abs(jax_acc - torch_acc) <= 2e-4
    assert "0 of them not near-ties" in out


def test_streaming_run_equals_the_in_memory_run(tmp_path):
    data_dir = cifar_dir()
    common = dict(steps=3, checkpoint_every=3, dataset="cifar10", data_dir=data_dir, eval_batch_size=2000,
                  validation=5000)  # the streaming path holds out the same examples as the in-memory one
    train(options(tmp_path / "memory", **common))
    train(options(tmp_path / "streaming", streaming=True, **common))
    assert_same_weights(weights(tmp_path / "streaming"), weights(tmp_path / "memory"))
