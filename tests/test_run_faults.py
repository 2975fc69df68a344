"""What happens to runs, on the real `vit train` in subprocesses, both frameworks: Ctrl-C and SIGTERM save the
step in flight and the same command resumes it bit-exactly; a second run on a live run's workdir is refused; a
dead run's lock is taken over; a full disk stops the run in one line and costs nothing after space is freed.

Each run trains the smallest model on a tiny image folder written here (no CIFAR-10 needed), logging every step
so that a test can wait for the run to be training before it sends a signal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from train.write_errors import checkpoint_steps
from vit_spec import load_weights

pytestmark = pytest.mark.xdist_group("run_faults")

ROOT = Path(__file__).resolve().parents[1]
# Steps of a run: long enough that a signal sent a few steps in lands before the end (JAX's steps here take
# about 2 ms, PyTorch's 25 ms), short enough that a whole run is a few seconds.
STEPS = {"jax": 2000, "torch": 300}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """3 classes of 12 training and 4 test images, 16x16 PNG."""
    from PIL import Image

    root = tmp_path_factory.mktemp("faults") / "images"
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for name in ("a", "b", "c"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / split / name / f"{i}.png")
    return root


def command(folder: Path, workdir: Path, framework: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vit_cli.main", "train", "--dataset", f"folder:{folder}", "--model", "mu/8",
            "--batch-size", "8", "--steps", str(STEPS[framework]), "--log-every", "1", "--checkpoint-every", "1000",
            "--validation", "0", "--eval-every", "0", "--workers", "0", "--no-progress", "--framework", framework,
            "--workdir", str(workdir), *extra]


def environment(cache: Path) -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "VIT_DATA_CACHE": str(cache)}


def start(cmd: list[str], cache: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=environment(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def run(cmd: list[str], cache: Path) -> tuple[int, str]:
    return finish(start(cmd, cache))


def logged_steps(workdir: Path) -> list[int]:
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("kind") == "train":
            steps.append(record["step"])
    return steps


def wait_until_training(proc: subprocess.Popen, workdir: Path, at_least: int = 3, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if max(logged_steps(workdir), default=0) >= at_least:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before training:\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.005)
    raise AssertionError(f"the run did not reach step {at_least} within {timeout} s")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_weights(a)[1], load_weights(b)[1]
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=f"{name} differs from the uninterrupted run's")


@pytest.fixture(scope="module")
def references(folder, tmp_path_factory) -> dict[str, Path]:
    """The uninterrupted run of each framework: its model.safetensors."""
    out = {}
    for framework in ("jax", "torch"):
        if framework == "torch":
            pytest.importorskip("torch")
        workdir = tmp_path_factory.mktemp(f"reference-{framework}") / "run"
        code, err = run(command(folder, workdir, framework), tmp_path_factory.getbasetemp() / "cache")
        assert code == 0, err[-3000:]
        out[framework] = workdir / "model.safetensors"
    return out


def _framework(name: str) -> str:
    if name == "torch":
        pytest.importorskip("torch")
    return name


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_a_signal_saves_the_step_in_flight_and_the_same_command_resumes_bit_exactly(
        framework, signum, code, folder, references, tmp_path):
    _framework(framework)
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    cmd = command(folder, workdir, framework)
    proc = start(cmd, cache)
    wait_until_training(proc, workdir)
    proc.send_signal(signum)
    exit_code, err = finish(proc)
    assert exit_code == code, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    [line] = [line for line in err.splitlines() if line.startswith("interrupted at step ")]
    step = int(line.split()[3])
    assert line.endswith(": checkpoint saved; run the same command to resume")
    assert 3 <= step < STEPS[framework]
    # The checkpoint of the very step it stopped at (the cadence's would be step 1000), and its metrics.
    assert checkpoint_steps(workdir) == [step]
    assert logged_steps(workdir) == list(range(1, step + 1))
    assert not (workdir / "model.safetensors").exists()

    exit_code, err = run(cmd, cache)
    assert exit_code == 0, err[-3000:]
    assert f"resuming from step {step} of {STEPS[framework]}" in err
    assert_same_weights(workdir / "model.safetensors", references[framework])
    assert logged_steps(workdir) == list(range(1, STEPS[framework] + 1)), "metrics rows repeated or missing"


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_a_second_ctrl_c_while_saving_leaves_a_valid_checkpoint(framework, folder, references, tmp_path):
    _framework(framework)
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    cmd = command(folder, workdir, framework)
    proc = start(cmd, cache)
    wait_until_training(proc, workdir)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.002)  # the save has begun, or is about to
    proc.send_signal(signal.SIGINT)
    exit_code, err = finish(proc)
    assert exit_code == 130, err[-3000:]
    # Whichever moment the second one landed in, the same command ends as the uninterrupted run.
    exit_code, err = run(cmd, cache)
    assert exit_code == 0, err[-3000:]
    assert_same_weights(workdir / "model.safetensors", references[framework])


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_a_second_run_on_a_live_runs_workdir_is_refused_at_once(framework, folder, references, tmp_path):
    _framework(framework)
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    cmd = command(folder, workdir, framework)
    first = start(cmd, cache)
    wait_until_training(first, workdir)
    # Frozen, the first run stays live however long the second takes to start (a few seconds of imports, more
    # than the first's remaining steps once its compile is cached) and the Ctrl-C below lands while it trains.
    first.send_signal(signal.SIGSTOP)
    began = time.monotonic()
    exit_code, err = run(cmd, cache)
    assert exit_code == 2
    assert f"is in use by another `vit train` (process {first.pid} on " in err, err[-2000:]
    assert "Traceback" not in err
    assert first.poll() is None, "the live run was disturbed"
    first.send_signal(signal.SIGINT)
    first.send_signal(signal.SIGCONT)
    assert finish(first)[0] == 130
    exit_code, err = run(cmd, cache)  # the same command, once the first has ended, resumes
    assert exit_code == 0, err[-3000:]
    assert_same_weights(workdir / "model.safetensors", references[framework])
    assert time.monotonic() - began < 240


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_the_lock_of_a_killed_run_is_taken_over(framework, folder, references, tmp_path):
    _framework(framework)
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    cmd = command(folder, workdir, framework, "--checkpoint-every", "2")
    killed = start(cmd, cache)
    wait_until_training(killed, workdir, at_least=5)
    killed.send_signal(signal.SIGKILL)
    finish(killed)
    assert json.loads((workdir / ".lock").read_text())["pid"] == killed.pid
    # The next run resumes from the killed run's checkpoints, then saves at the usual cadence (a save every 2 steps
    # to the end cost minutes).
    exit_code, err = run(command(folder, workdir, framework), cache)
    assert exit_code == 0, err[-3000:]
    assert f"taking over {workdir}'s lock from process {killed.pid} on " in err
    assert (workdir / ".lock").read_text() == "", "a run that ended leaves its lock empty"


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True,
                       capture_output=True, text=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"a full disk is simulated with a tiny tmpfs, which this machine cannot mount "
                    f"({getattr(e, 'stderr', '') or e}); run the suite as root (CI does)")


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_a_full_disk_stops_the_run_in_one_line_and_costs_nothing_once_freed(framework, folder, references, tmp_path):
    _framework(framework)
    disk, cache = tmp_path / "disk", tmp_path / "cache"
    _mount_tmpfs(disk, "16m")
    try:
        workdir = disk / "run"
        cmd = command(folder, workdir, framework, "--checkpoint-every", "40", "--keep-checkpoints", "10")
        # Leave room for a few checkpoints only (each is tens of kB): the disk fills while the run saves.
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (16 * 2**20 - 1200 * 2**10))
        exit_code, err = run(cmd, cache)
        assert exit_code == 2, err[-3000:]
        assert "Traceback" not in err, err[-5000:]
        last = err.strip().splitlines()[-1]
        good = checkpoint_steps(workdir)
        assert good, "no checkpoint fitted: the filler leaves too little room"
        assert last.startswith("vit train: error: could not write ")
        assert f"no space left on the file system {disk} (" in last, last
        assert last.endswith(f"the last good checkpoint is step {max(good)}: free space and run the same command to resume")

        left = sorted(p.name for p in (workdir / "checkpoints").glob("*tmp*"))  # orbax's unfinished step folder
        filler.unlink()
        exit_code, err = run(cmd, cache)
        assert exit_code == 0, err[-3000:]
        if left:
            assert f"note: removed what an unfinished save left in {workdir / 'checkpoints'} ({', '.join(left)})" in err
        assert f"resuming from step {max(good)} of {STEPS[framework]}" in err
        assert_same_weights(workdir / "model.safetensors", references[framework])
        assert not list((workdir / "checkpoints").glob("*tmp*")), "an unfinished save's files are left"
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


PROCESS = r'''
import json, sys
import numpy as np
args = json.loads(sys.argv[1])
from train.jax_loop import sharding
sharding.initialize_distributed(args["coordinator"], 2, args["process_id"])
from train.data import Dataset, Split
from train.interrupts import Interrupted
from train.jax_loop.trainer import TrainOptions, train

rng = np.random.default_rng(0)
split = lambda n: Split(rng.integers(0, 256, (n, 16, 16, 3)).astype(np.uint8), rng.integers(0, 3, n).astype(np.int32))
try:
    train(TrainOptions(**args["options"]), dataset=Dataset("tiny", 3, split(64), split(16)))
except Interrupted as e:
    print("RESULT " + json.dumps({"step": e.step, "exit": e.exit_code}), flush=True)
    sys.exit(e.exit_code)
print("RESULT " + json.dumps({"step": None}), flush=True)
'''


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_the_processes_of_a_multi_process_run_stop_and_save_at_one_step(signum, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    workdir = tmp_path / "run"
    options = dict(workdir=str(workdir), model="mu/8", recipe="tutorial", batch_size=16, steps=5000, eval_every=0,
                   log_every=1, checkpoint_every=100000, progress=False, validation=0)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = [subprocess.Popen([sys.executable, "-c", PROCESS, json.dumps({"options": options, "coordinator": address,
                                                                          "process_id": i})],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        wait_until_training(procs[0], workdir, at_least=5)
        procs[1].send_signal(signum)  # preemption (or a Ctrl-C) reaches one host only
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=240)
            lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
            assert lines, f"exit {proc.returncode}:\n{err[-3000:]}"
            results.append((proc.returncode, json.loads(lines[-1][7:])))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    (code0, r0), (code1, r1) = results
    assert r0["step"] is not None and r0["step"] == r1["step"], results  # the same step, agreed
    # The process that got the signal exits with its code; the others were preempted (SIGTERM's code).
    assert (code0, code1) == (143, 128 + signum)
    assert checkpoint_steps(workdir) == [r0["step"]]
