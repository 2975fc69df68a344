"""Sharding and faults that need fresh processes: 8 simulated devices, 2 processes, SIGKILL and resume.

XLA_FLAGS must be set before jax starts, and jax.distributed and SIGKILL need processes of their own,
so each run here is a subprocess of RUNNER on small synthetic data.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from tests.runner_processes import TINY_DATA_PROLOGUE, collect_all
from train.recipes import length_scaled_regularisation
from vit_spec import load_weights

# One worker runs the module: its fixtures are costly runs, shared by its tests.
pytestmark = pytest.mark.xdist_group("train_distributed")

ROOT = Path(__file__).resolve().parents[1]

RUNNER = TINY_DATA_PROLOGUE + r'''
from train.jax_loop.trainer import TrainOptions, train
try:
    result = train(TrainOptions(**args["options"]), dataset=dataset)
except ValueError as e:
    print("RESULT " + json.dumps({"error": str(e)}), flush=True)
    sys.exit(0)
losses = [r["loss"] for r in result.records if r["kind"] == "train"]
print("RESULT " + json.dumps({"losses": losses, "devices": jax.device_count(), "processes": jax.process_count(),
                              "test_accuracy": result.test_accuracy}), flush=True)
'''


def _options(workdir: Path, **changes) -> dict:
    # Nothing held out of the tiny data; the regularisation of a long run, so every augmentation is sharded.
    base = dict(workdir=str(workdir), model="mu/8", recipe="default", batch_size=16, steps=6, eval_every=0,
                log_every=1, checkpoint_every=3, progress=False, validation=0,
                regularisation=length_scaled_regularisation(200))
    base.update(changes)
    return base


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _start(args: dict, devices: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, json.dumps(args)], cwd=ROOT, env=_env(devices),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _result(proc: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"runner failed (exit {proc.returncode}):\n{out}\n{err[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def _run(args: dict, devices: int = 1) -> dict:
    return _result(_start(args, devices))


@pytest.fixture(scope="module")
def one_device(tmp_path_factory) -> dict:
    """The reference: 6 steps of the default recipe (RandAugment, mixup/CutMix, drop path) on 1 device."""
    workdir = tmp_path_factory.mktemp("one") / "run"
    result = _run({"options": _options(workdir)}, devices=1)
    assert result["devices"] == 1 and len(result["losses"]) == 6
    return {**result, "workdir": workdir}


def test_eight_devices_follow_the_one_device_loss_curve(one_device, tmp_path):
    result = _run({"options": _options(tmp_path / "run")}, devices=8)
    assert result["devices"] == 8
    np.testing.assert_allclose(result["losses"], one_device["losses"], rtol=0, atol=1e-5)
    a, b = load_weights(tmp_path / "run" / "model.safetensors")[1], load_weights(one_device["workdir"] / "model.safetensors")[1]
    for name in a:  # Adam divides by sqrt(v): rounding in near-zero gradients shows up a little more here
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-4, err_msg=name)


def test_batch_that_does_not_divide_over_the_devices_is_refused(tmp_path):
    result = _run({"options": _options(tmp_path / "run", batch_size=12)}, devices=8)
    assert "batch size 12 does not divide over the 8 devices" in result["error"], result
    assert "--batch-size 8 or 16" in result["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_follow_the_one_device_loss_curve(one_device, tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    args = {"options": _options(tmp_path / "run"), "coordinator": address, "num_processes": 2}
    results = collect_all([_start({**args, "process_id": i}, devices=1) for i in range(2)], _result)
    for result in results:
        assert result["processes"] == 2 and result["devices"] == 2
        np.testing.assert_allclose(result["losses"], one_device["losses"], rtol=0, atol=1e-5)


def _latest_checkpoint(workdir: Path) -> int:
    steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
    return max(steps, default=-1)


def kill_at_random_moments(start: Callable[[], subprocess.Popen], latest: Callable[[], int], times: int = 3) -> None:
    """Starts a run `times` times and SIGKILLs it at a random moment once it has saved a checkpoint newer than
    `latest()` was: mid-step, mid-save, mid-log, anywhere."""
    chance = random.Random(1234)
    kills = 0
    for _ in range(times):
        before = latest()
        proc = start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and latest() <= before:
            time.sleep(0.02)
        time.sleep(chance.uniform(0.0, 0.8))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
    assert kills >= times - 1, f"only {kills} of {times} runs were still going when killed"


def test_sigkill_at_any_moment_then_resume_is_bit_identical(tmp_path):
    steps = 48
    common = dict(recipe="tutorial", batch_size=32, steps=steps, checkpoint_every=2, keep_checkpoints=2)
    reference = tmp_path / "reference"
    # The uninterrupted run saves only at its end: where a run saves changes nothing it computes, and its 23 saves
    # would cost more than its 48 steps.
    _run({"options": _options(reference, **{**common, "checkpoint_every": steps})})
    killed = tmp_path / "killed"
    args = {"options": _options(killed, **common)}
    kill_at_random_moments(lambda: _start(args), lambda: _latest_checkpoint(killed))
    result = _run(args)  # resume to the end
    assert len(result["losses"]) >= 1
    a, b = load_weights(killed / "model.safetensors")[1], load_weights(reference / "model.safetensors")[1]
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
