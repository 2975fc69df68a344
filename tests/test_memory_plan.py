"""`vit train --remat` and `vit train --dry-run`: the big-model switches of the JAX trainer.

--remat runs the blocks as one scan over depth, recomputing their activations in the backward pass; --dry-run
compiles the run's step for shapes only and prints each device's bytes (train.jax_loop.memory_plan).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_train_run import options, tiny_dataset, weights
from train.byte_sizes import parse_bytes, size_text
from train.jax_loop.checkpoint import CheckpointMismatchError
from train.jax_loop.trainer import dry_run, train
from vit_cli.main import main
from vit_spec import ViTConfig, num_params

pytestmark = pytest.mark.xdist_group("memory_plan")

ROOT = Path(__file__).resolve().parents[1]
NO_DROPS = {"dropout": 0.0, "drop_path": 0.0}  # scan draws other (equally distributed) dropout keys than the loop


def test_sizes_are_read_as_people_write_them():
    assert parse_bytes("16GB") == 16 * 10**9
    assert parse_bytes("80GiB") == 80 * 2**30
    assert parse_bytes("1.5 kb") == 1500
    assert parse_bytes("4096") == 4096
    assert (size_text(1_234_000_000), size_text(456_700_000)) == ("1.23 GB", "456.7 MB")
    with pytest.raises(ValueError, match="e.g. 16GB"):
        parse_bytes("16 gigs")


def test_remat_trains_the_same_model_and_writes_the_usual_file(tmp_path):
    """The scanned, rematerialised blocks are the same function of the same weights: the same losses to float32
    rounding, and model.safetensors in the per-block layout every reader knows."""
    plain = train(options(tmp_path / "plain", regularisation=NO_DROPS), dataset=tiny_dataset())
    remat = train(options(tmp_path / "remat", regularisation=NO_DROPS, remat=True), dataset=tiny_dataset())
    np.testing.assert_allclose([r["loss"] for r in remat.records if r["kind"] == "train"],
                               [r["loss"] for r in plain.records if r["kind"] == "train"], rtol=1e-5)
    a, b = weights(tmp_path / "remat"), weights(tmp_path / "plain")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-5, err_msg=name)


def test_remat_resumes_only_with_remat(tmp_path):
    train(options(tmp_path / "run", steps=3, remat=True), dataset=tiny_dataset())
    with pytest.raises(CheckpointMismatchError, match="resume it with --remat"):
        train(options(tmp_path / "run", steps=6), dataset=tiny_dataset())
    result = train(options(tmp_path / "run", steps=6, remat=True), dataset=tiny_dataset())
    assert result.step == 6


def test_a_dry_run_plans_the_runs_step_and_writes_nothing(tmp_path):
    workdir = tmp_path / "run"
    plan = dry_run(options(workdir, model="S/8", batch_size=32), dataset=tiny_dataset())
    config = ViTConfig.from_variant("S/8", image_size=32, num_classes=10)
    assert plan.parameters == 4 * num_params(config)
    assert plan.optimizer >= 2 * plan.parameters  # Adam's two moments (and its count)
    assert plan.arguments >= plan.parameters + plan.optimizer + 32 * 32 * 32 * 3
    assert plan.aliased >= plan.parameters + plan.optimizer  # the state is updated in place (donated)
    assert plan.temporaries > 0 and plan.peak == plan.arguments + plan.outputs - plan.aliased + plan.temporaries
    assert not workdir.exists()
    remat = dry_run(options(workdir, model="S/8", batch_size=32, remat=True), dataset=tiny_dataset())
    assert remat.parameters == plan.parameters
    assert remat.temporaries < plan.temporaries, "recomputing the blocks' activations keeps fewer of them"


def _vit(*args: str, devices: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "vit_cli.main", "train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_dry_run_on_a_simulated_mesh_says_what_each_device_holds_and_whether_it_fits(tmp_path):
    folder = tmp_path / "data"
    _image_folder(folder)
    common = ["--dry-run", "--dataset", f"folder:{folder}", "--model", "S/8", "--batch-size", "16",
              "--workdir", str(tmp_path / "run")]
    one = _vit(*common, "--device-memory", "16GB")
    assert one.returncode == 0, one.stderr
    assert "mesh data=1,fsdp=1,model=1 (1 devices), 16 examples per device" in one.stdout
    assert "fits a device of 16.00 GB" in one.stdout
    sharded = _vit(*common, "--simulate-devices", "8", "--mesh", "fsdp=8", "--shard-min-mb", "0",
                   "--device-memory", "1MB")
    assert sharded.returncode == 1, sharded.stderr  # exit 1: it does not fit
    assert "mesh data=1,fsdp=8,model=1 (8 devices), 2 examples per device" in sharded.stdout
    assert "does NOT fit a device of 1.0 MB" in sharded.stdout
    whole = _line(one.stdout, "parameters")
    split = _line(sharded.stdout, "parameters")
    assert split < whole / 6, f"a device of fsdp=8 holds {split} MB of the parameters' {whole} MB"
    assert not (tmp_path / "run").exists()


def _line(text: str, what: str) -> float:
    """MB of the report's line `what`."""
    value, unit = next(line.split()[1:3] for line in text.splitlines() if line.strip().startswith(what))
    return float(value) * (1000 if unit == "GB" else 1)


def _image_folder(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(root / split / label / f"{i}.png")


def test_dry_run_flags_are_refused_where_they_mean_nothing(tmp_path, capsys):
    assert main(["train", "--device-memory", "16GB", "--workdir", str(tmp_path / "w")]) == 2
    assert "--device-memory sizes a --dry-run: add --dry-run" in capsys.readouterr().err
    assert main(["train", "--dry-run", "--framework", "torch", "--workdir", str(tmp_path / "w")]) == 2
    assert "--dry-run plans the JAX train step" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--dry-run", "--device-memory", "lots"])
    assert "is not a size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--mesh", "pipe=2"])
    assert "unknown axis 'pipe'" in capsys.readouterr().err
    assert main(["train", "--framework", "torch", "--mesh", "fsdp=2", "--workdir", str(tmp_path / "w")]) == 2
    assert "--mesh is an option of the JAX trainer" in capsys.readouterr().err
