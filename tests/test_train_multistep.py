"""Several train steps per dispatch, the training split resident on the device.

K steps in one call (a lax.scan over the step) are the same steps as K calls: the same batches, the
same randomness (fold_in(rng, state.step)), the same math. They are not the same XLA program, though:
the scanned step is compiled as a loop body and fused otherwise, so states agree to float32
rounding (measured ~1e-7 after a few steps), not bit for bit. A run resumed with the same K takes
the same calls and is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_vit import ViT, init_params
from tests.runner_processes import collect_all
from tests.test_train_run import assert_same_weights, cli_options, options, tiny_dataset, weights
from train.data import BatchOrder, Split
from train.jax_loop import device_data, optim, sharding
from train.jax_loop.step import TrainState, make_multi_step, make_train_step
from train.jax_loop.trainer import call_end, train
from train.recipes import RECIPES, length_scaled_regularisation
from vit_spec import ViTConfig

# One worker runs the module: its fixtures are costly runs, shared by its tests.
pytestmark = pytest.mark.xdist_group("train_multistep")

ROOT = Path(__file__).resolve().parents[1]
TINY = ViTConfig.from_variant("mu/8", num_classes=10, image_size=32, drop_path=0.1)


def assert_close_trees(a, b, rtol: float = 1e-5, atol: float = 0.0) -> None:
    """Equal to float32 rounding: within rtol of each leaf's largest magnitude, or atol."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype, jax.tree_util.keystr(path)
        bound = max(rtol * np.abs(y).max(), atol)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=bound, err_msg=jax.tree_util.keystr(path))


def assert_weights_close(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Two runs' weights equal to float32 rounding. The key bias (attn.qkv.bias[width:2 * width]) has no
    gradient in exact arithmetic (softmax ignores it); Adam scales the rounding noise it gets to steps of
    up to the learning rate, so the bound is absolute, 1e-5, where parameters are 1e-3 to 1 in size."""
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("recipe_name", ["tutorial", "default"])
def test_k_steps_in_one_call_equal_k_single_steps(recipe_name):
    recipe = RECIPES[recipe_name].replace(batch_size=16)
    tx, schedule = optim.make_optimizer(recipe, 8, 100)
    mesh = sharding.make_mesh()
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (128, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 128).astype(np.int32))
    order = BatchOrder(len(split), 16, seed=3)
    key = sharding.replicate(mesh, np.asarray(jax.random.key_data(jax.random.key(1))))
    model = ViT(TINY)

    def fresh() -> TrainState:
        params = sharding.replicate(mesh, sharding.to_host(init_params(TINY, 0)))
        return jax.jit(lambda p: TrainState.create(p, tx), out_shardings=sharding.replicated(mesh))(params)

    k, start = 5, 6  # across an epoch boundary (8 steps per epoch): the rows come from two permutations
    single = make_train_step(model, tx, schedule, recipe.augment, 10, mesh)
    state = fresh().replace(step=jnp.int32(start))
    singles = []
    for step in range(start, start + k):
        idx = order.indices(step)
        state, metrics = single(state, sharding.global_batch(mesh, split.images[idx], split.labels[idx]), key)
        singles.append(metrics)

    multi = make_multi_step(model, tx, schedule, recipe.augment, 10, mesh)
    rows = device_data.global_rows(mesh, device_data.chunk_rows(order, start, k))
    assert rows.shape == (k, 16) and rows.dtype == jnp.int32
    multi_state, stacked = multi(fresh().replace(step=jnp.int32(start)), device_data.put_split(split, mesh), rows, key)

    assert int(multi_state.step) == start + k
    # Adam divides by sqrt(v): where the true gradient is zero (the key bias, which softmax ignores) the
    # update is rounding noise over noise, up to the learning rate (3e-4 to 1e-3 here) in size either way.
    assert_close_trees(multi_state.params, state.params, atol=2e-6)
    assert_close_trees(multi_state.opt_state, state.opt_state)
    for name, values in stacked.items():
        assert values.shape == (k,), name
        expected = np.asarray([m[name] for m in singles])
        if name in ("lr", "accuracy", "finite"):  # no rounding in these: exactly equal
            np.testing.assert_array_equal(np.asarray(values), expected, err_msg=name)
        else:
            np.testing.assert_allclose(np.asarray(values), expected, rtol=1e-5, err_msg=name)


def test_calls_stop_at_every_log_checkpoint_and_eval_step():
    def calls(start: int, total: int, k: int, boundaries: tuple[int, ...]) -> list[int]:
        ends, step = [], start
        while step < total:
            step = call_end(step, k, total, boundaries)
            ends.append(step)
        return ends

    assert calls(0, 10, 1, (5, 6, 0)) == list(range(1, 11))
    assert calls(0, 10, 4, (5, 6, 0)) == [4, 5, 6, 10]  # log at 5, checkpoint at 6 (and 12), the end at 10
    assert calls(0, 20, 8, (50, 0, 7)) == [7, 14, 20]  # evaluation every 7 steps
    assert calls(6, 10, 4, (5, 6, 0)) == [10]  # a resumed run takes the calls of an uninterrupted one
    assert calls(0, 3, 8, (0, 0, 0)) == [3]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Path]:
    """10 steps with K=1 and K=4: logs at 5 and 10, checkpoints at 6 and 10, so K=4 runs calls of 4, 1, 1, 4."""
    root = tmp_path_factory.mktemp("multistep")
    out = {}
    for k in (1, 4):
        out[k] = root / f"k{k}"
        train(options(out[k], recipe="default", steps=10, log_every=5, checkpoint_every=6, steps_per_dispatch=k),
              dataset=tiny_dataset())
    return out


def records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_with_four_steps_per_call_ends_where_one_step_per_call_does(runs):
    assert_weights_close(weights(runs[4]), weights(runs[1]))
    got, want = records(runs[4]), records(runs[1])
    assert [(r["kind"], r["step"]) for r in got] == [(r["kind"], r["step"]) for r in want]
    assert [(r["kind"], r["step"]) for r in got] == [("train", 5), ("train", 6), ("train", 10), ("eval", 10)]
    for r, s in zip(got, want):
        for key in ("loss", "accuracy", "lr", "grad_norm") if r["kind"] == "train" else ("loss", "accuracy"):
            np.testing.assert_allclose(r[key], s[key], rtol=1e-5, err_msg=f"{key} at step {r['step']}")
    # The first record holds only calls that compiled (of 4 steps, then of 1): no speed; the later ones have one.
    assert got[0]["images_per_s"] is None and got[1]["images_per_s"] > 0 and got[2]["images_per_s"] > 0
    config = json.loads((runs[4] / "config.json").read_text())
    assert config["steps_per_dispatch"] == 4 and config["data_on_device"] is True


def test_resume_with_the_same_k_is_bit_identical(runs, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(runs[4], workdir)
    shutil.rmtree(workdir / "checkpoints" / "10")  # as if killed after the checkpoint at step 6
    (workdir / "model.safetensors").unlink()
    train(options(workdir, recipe="default", steps=10, log_every=5, checkpoint_every=6, steps_per_dispatch=4),
          dataset=tiny_dataset())
    assert_same_weights(weights(workdir), weights(runs[4]))
    assert "note: resuming with --steps-per-dispatch" not in capsys.readouterr().err


def test_resume_with_another_k_says_so_and_agrees_to_rounding(runs, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(runs[4], workdir)
    shutil.rmtree(workdir / "checkpoints" / "10")
    (workdir / "model.safetensors").unlink()
    train(options(workdir, recipe="default", steps=10, log_every=5, checkpoint_every=6), dataset=tiny_dataset())
    assert "note: resuming with --steps-per-dispatch 1" in capsys.readouterr().err
    a, b = weights(workdir), weights(runs[4])
    assert_weights_close(a, b)


def test_data_on_device_with_one_step_per_call_is_the_host_run(runs, tmp_path):
    train(options(tmp_path / "run", recipe="default", steps=10, log_every=5, checkpoint_every=6, data_on_device=True),
          dataset=tiny_dataset())
    # One step per call runs no loop: the program is the host path's step behind a gather, and on
    # XLA:CPU the run is bit-identical (elsewhere a different fusion could make it equal to rounding only).
    assert_same_weights(weights(tmp_path / "run"), weights(runs[1]))


def test_bad_steps_per_dispatch_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--steps-per-dispatch must be at least 1"):
        train(options(tmp_path / "a", steps_per_dispatch=0), dataset=tiny_dataset())
    with pytest.raises(ValueError, match="--streaming .* cannot be combined"):
        train(options(tmp_path / "b", streaming=True, steps_per_dispatch=4), dataset=tiny_dataset())


def test_the_cli_passes_the_flags(monkeypatch, tmp_path):
    got = cli_options(monkeypatch, ["--steps-per-dispatch", "8", "--data-on-device", "--workdir", str(tmp_path), "--no-progress"])
    assert got.steps_per_dispatch == 8 and got.data_on_device


RUNNER = r'''
import json, sys
import numpy as np
args = json.loads(sys.argv[1])
from train.jax_loop import sharding
sharding.initialize_distributed(args.get("coordinator"), args.get("num_processes"), args.get("process_id"))
import jax
from tests.test_train_run import tiny_dataset
from train.jax_loop.trainer import TrainOptions, train

for workdir, k in args["runs"]:
    result = train(TrainOptions(**args["options"], workdir=workdir, steps_per_dispatch=k), dataset=tiny_dataset())
print("RESULT " + json.dumps({"devices": jax.device_count(), "processes": jax.process_count()}), flush=True)
'''


def _start(args: dict, devices: int) -> subprocess.Popen:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=600)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"runner failed (exit {proc.returncode}):\n{out}\n{err[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Nothing held out of the tiny data; the regularisation of a long run, so every augmentation runs sharded.
RUN_OPTIONS = dict(model="mu/8", recipe="default", batch_size=32, steps=8, eval_every=0, log_every=4,
                   checkpoint_every=8, progress=False, validation=0, regularisation=length_scaled_regularisation(200))


def test_four_devices_and_two_processes_agree_with_one_device(tmp_path):
    # The split replicated, each device gathering its quarter (or each process its half) of every batch.
    result = _result(_start({"options": RUN_OPTIONS, "runs": [[str(tmp_path / "d4k1"), 1], [str(tmp_path / "d4k4"), 4]]}, 4))
    assert result["devices"] == 4
    address = f"127.0.0.1:{_free_port()}"
    args = {"options": RUN_OPTIONS, "runs": [[str(tmp_path / "p2k4"), 4]], "coordinator": address, "num_processes": 2}
    results = collect_all([_start({**args, "process_id": i}, devices=1) for i in range(2)], _result)
    assert all(r["processes"] == 2 and r["devices"] == 2 for r in results)
    reference = weights(tmp_path / "d4k1")
    for name in ("d4k4", "p2k4"):
        got = weights(tmp_path / name)
        for key in got:
            np.testing.assert_allclose(got[key], reference[key], rtol=0, atol=1e-4, err_msg=f"{name} {key}")
        losses = [r["loss"] for r in records(tmp_path / name) if r["kind"] == "train"]
        want = [r["loss"] for r in records(tmp_path / "d4k1") if r["kind"] == "train"]
        np.testing.assert_allclose(losses, want, rtol=0, atol=1e-5, err_msg=name)
