"""`vit train --mesh`: the same run on any arrangement of the devices, the state split as the rules say, and
checkpoints that move between meshes.

Each process here is a subprocess of RUNNER (XLA_FLAGS sets the simulated CPU devices before jax starts),
training a small ViT on synthetic data: 20 steps of the default recipe (RandAugment, mixup/CutMix, drop path),
global batch 16, seed 0.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.runner_processes import TINY_DATA_PROLOGUE, collect_all
from train import mesh_shape, partition_rules
from train.mesh_shape import MeshError, MeshShape
from train.recipes import length_scaled_regularisation
from vit_spec import load_weights

pytestmark = pytest.mark.xdist_group("train_mesh")

ROOT = Path(__file__).resolve().parents[1]

# Tensors of at least 1 KB split under fsdp: the small model's kernels do, its norms and biases stay whole.
MIN_MB = 1 / 1024

RUNNER = TINY_DATA_PROLOGUE + r'''
from train.jax_loop import trainer
from train.jax_loop.trainer import TrainOptions, train

def flat(tree):
    return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(sharding.to_host(tree))}

def save_state(path, state):
    arrays = flat({"params": state.params, "opt_state": state.opt_state, "step": state.step})
    if jax.process_index() == 0:
        np.savez(path, **arrays)

# Each run may save the state it resumed from and the state it ended with, whole, to compare across meshes.
resume, finish = trainer._resume, trainer._finish
def resume_and_save(setup, checkpoints, fresh):
    setup, start = resume(setup, checkpoints, fresh)
    if run.get("start_state"):
        save_state(run["start_state"], start.state)
    return setup, start
def finish_and_save(setup, state, *rest):
    if run.get("end_state"):
        save_state(run["end_state"], state)
    if run.get("shards"):  # each array's global shape and the shape of the slice on this process's first device
        out["shards"] = [[name + jax.tree_util.keystr(p), list(sharding.path_names(p)), list(x.shape),
                          list(x.addressable_shards[0].data.shape)]
                         for tree, name in ((state.params, "params"), (state.opt_state, "opt_state"))
                         for p, x in jax.tree_util.tree_leaves_with_path(tree)]
    return finish(setup, state, *rest)
trainer._resume, trainer._finish = resume_and_save, finish_and_save

results = []
for run in args["runs"]:
    out = {}
    result = train(TrainOptions(**run["options"]), dataset=dataset)
    out.update(losses=[r["loss"] for r in result.records if r["kind"] == "train"], step=result.step)
    results.append(out)
print("RESULT " + json.dumps({"runs": results, "devices": jax.device_count(), "processes": jax.process_count()}),
      flush=True)
'''


def _options(workdir: Path, **changes) -> dict:
    base = dict(workdir=str(workdir), model="mu/8", recipe="default", batch_size=16, steps=20, eval_every=0,
                log_every=1, progress=False, validation=0, shard_min_mb=MIN_MB,
                regularisation=length_scaled_regularisation(200))
    base.update(changes)
    return base


def _start(runs: list[dict], devices: int, **extra) -> subprocess.Popen:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps({"runs": runs, **extra})], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen, timeout: float = 600) -> dict:
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"runner failed (exit {proc.returncode}):\n{out}\n{err[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def _run(runs: list[dict], devices: int) -> dict:
    return _result(_start(runs, devices))


# --- the mesh flag and the rules, without devices -------------------------------------------------------------

def test_a_mesh_names_its_axes_and_covers_the_devices():
    assert mesh_shape.resolve(None, 8) == MeshShape(data=8)
    assert mesh_shape.resolve("data=2,fsdp=4", 8) == MeshShape(2, 4, 1)
    assert mesh_shape.resolve("fsdp=-1,model=2", 8) == MeshShape(1, 4, 2)
    assert str(MeshShape(2, 2, 2)) == "data=2,fsdp=2,model=2"
    for text, message in (("data=2,fsdp=2", "takes 4 devices, but there are 8"), ("pipe=8", "unknown axis 'pipe'"),
                          ("data=8,data=1", "data is given twice"), ("fsdp", "is not AXIS=SIZE"),
                          ("data=-1,fsdp=-1", "only one axis may be -1"), ("model=0", "at least 1"),
                          ("model=3,data=-1", "does not divide the 8 devices")):
        with pytest.raises(MeshError, match=message):
            mesh_shape.resolve(text, 8)


def test_fsdp_splits_the_largest_dividing_dimension_of_large_tensors_only():
    mesh = MeshShape(data=2, fsdp=4)
    assert partition_rules.spec(("blocks_0", "mlp", "fc1", "kernel"), (768, 3072), 4, mesh) == (None, "fsdp")
    assert partition_rules.spec(("blocks_0", "mlp", "fc2", "kernel"), (3072, 768), 4, mesh) == ("fsdp", None)
    # Too small (a norm's scale) or dividing nowhere: whole.
    assert partition_rules.spec(("norm", "scale"), (768,), 4, mesh) == (None,)
    assert partition_rules.spec(("x", "kernel"), (1025, 1027), 4, mesh) == (None, None)
    # An optimizer moment's path ends with its parameter's: it splits the same way.
    assert partition_rules.spec(("0", "mu", "blocks_0", "mlp", "fc1", "kernel"), (768, 3072), 4, mesh) == (None, "fsdp")


def test_the_model_axis_splits_fan_out_by_output_and_fan_in_by_input():
    mesh = MeshShape(fsdp=2, model=4)
    big = 0  # every tensor counts as large
    rule = lambda names, shape: partition_rules.spec(names, shape, 4, mesh, big)
    assert rule(("blocks_0", "attn", "qkv", "kernel"), (768, 2304)) == ("fsdp", "model")
    assert rule(("blocks_0", "attn", "qkv", "bias"), (2304,)) == ("model",)
    assert rule(("blocks_0", "attn", "proj", "kernel"), (768, 768)) == ("model", "fsdp")
    assert rule(("blocks_0", "attn", "proj", "bias"), (768,)) == ("fsdp",)  # added after the sum: not model's
    assert rule(("blocks_0", "mlp", "fc2", "kernel"), (3072, 768)) == ("model", "fsdp")
    assert rule(("attn_pool", "kv", "kernel"), (768, 1536)) == ("fsdp", "model")
    # Scanned blocks lead with depth: the rule counts from the end.
    assert rule(("blocks", "mlp", "fc1", "kernel"), (12, 768, 3072)) == (None, "fsdp", "model")
    # The patch embedding's "proj" is no attention projection: fsdp only.
    assert rule(("patch_embed", "proj", "kernel"), (16, 16, 3, 768)) == (None, None, None, "fsdp")


def test_describe_counts_what_is_split_and_what_a_device_holds():
    tensors = [(("blocks_0", "mlp", "fc1", "kernel"), (1024, 1024), 4), (("norm", "scale"), (1024,), 4)]
    line = partition_rules.describe(tensors, MeshShape(fsdp=4), partition_rules.MIN_SHARD_BYTES)
    assert line == "mesh data=1,fsdp=4,model=1: 1 of 2 tensors split; each device holds 1.1 MB of their 4.2 MB"


# --- the same run on every mesh ------------------------------------------------------------------------------

MESHES = ("data=8", "data=2,fsdp=4", "fsdp=8", "data=2,fsdp=2,model=2")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """20 steps on 1 device, and on 8 devices under each mesh (one process each, run at once); then, in the same
    processes, 5 steps fine-tuning a weights file (--init-from) on 1 device and as fsdp=8."""
    import jax_vit
    from vit_spec import ViTConfig

    root = tmp_path_factory.mktemp("meshes")
    start = root / "start.safetensors"
    config = ViTConfig.from_variant("mu/8", image_size=32, num_classes=10)
    jax_vit.save(start, config, jax_vit.init_params(config, 7))
    finetune = dict(init_from=str(start), steps=5)
    one = _start([{"options": _options(root / "one")}, {"options": _options(root / "init_one", **finetune)}],
                 devices=1)
    eight = _start([{"options": _options(root / m.replace(",", "_"), mesh=m), "shards": True} for m in MESHES]
                   + [{"options": _options(root / "init_fsdp", mesh="fsdp=8", **finetune), "shards": True}], devices=8)
    reference, meshes = _result(one), _result(eight)
    assert reference["devices"] == 1 and meshes["devices"] == 8
    return {"root": root, "one": reference["runs"][0], **dict(zip(MESHES, meshes["runs"])),
            "init_one": reference["runs"][1], "init_fsdp": meshes["runs"][-1]}


def test_a_checkpoint_fine_tunes_on_a_split_mesh_as_on_one_device(runs):
    """--init-from places each device's slices of the file's tensors: the same start, the same steps."""
    one, split = runs["init_one"], runs["init_fsdp"]
    np.testing.assert_allclose(split["losses"], one["losses"], rtol=1e-5, atol=0)
    kernel = {path: local for path, _, _, local in split["shards"]}["params['blocks_0']['mlp']['fc1']['kernel']"]
    assert kernel == [32, 16], "fc1's kernel (32, 128) is split 8 ways along its output features"


@pytest.mark.parametrize("mesh", MESHES)
def test_every_mesh_trains_the_one_device_run(runs, mesh):
    """Loss at every step within 1e-5 relative, final parameters within 1e-4 of their scale (max |w|, at least 1)."""
    one, got = runs["one"], runs[mesh]
    assert len(got["losses"]) == len(one["losses"]) == 20
    np.testing.assert_allclose(got["losses"], one["losses"], rtol=1e-5, atol=0, err_msg=f"loss per step on {mesh}")
    _, a = load_weights(runs["root"] / mesh.replace(",", "_") / "model.safetensors")
    _, b = load_weights(runs["root"] / "one" / "model.safetensors")
    assert a.keys() == b.keys()
    worst_param = 0.0
    for name in b:
        scale = max(1.0, float(np.abs(b[name]).max()))
        worst = float(np.abs(a[name] - b[name]).max())
        assert worst <= 1e-4 * scale, f"{name} on {mesh}: differs by {worst:.2e} (scale {scale:.2f})"
        worst_param = max(worst_param, worst / scale)
    worst_loss = float(np.max(np.abs(np.subtract(got["losses"], one["losses"])) / np.abs(one["losses"])))
    print(f"\n{mesh}: worst loss difference {worst_loss:.1e} relative, worst parameter difference {worst_param:.1e} "
          "of scale")  # the figures of the README (pytest -s)


@pytest.mark.parametrize("mesh", MESHES)
def test_every_parameter_and_moment_is_split_as_the_rules_say(runs, mesh):
    shape = mesh_shape.resolve(mesh, 8)
    sizes = shape.sizes()
    shards = {path: (names, global_shape, local_shape) for path, names, global_shape, local_shape in runs[mesh]["shards"]}
    split = 0
    for path, (names, global_shape, local_shape) in shards.items():
        itemsize = 4  # float32 parameters and moments; the int32 step and count are scalars
        expected = [n // sizes[axis] if axis else n
                    for n, axis in zip(global_shape, partition_rules.spec(names, global_shape, itemsize, shape,
                                                                          int(MIN_MB * 2**20)))]
        assert local_shape == expected, f"{path}: a device holds {local_shape} of {global_shape}, not {expected}"
        split += local_shape != global_shape
    if mesh == "data=8":
        assert split == 0
    else:  # the kernels split; Adam's two moments of each as well
        kernels = [p for p in shards if p.startswith("params") and p.endswith("['kernel']")]
        assert split >= 3 * len(kernels), f"only {split} arrays are split on {mesh}"
    qkv = "params['blocks_0']['attn']['qkv']['kernel']"  # (32, 96)
    assert shards[qkv][2] == {"data=8": [32, 96], "data=2,fsdp=4": [32, 24], "fsdp=8": [32, 12],
                              "data=2,fsdp=2,model=2": [16, 48]}[mesh]
    assert shards["params['norm']['scale']"][2] == [32]  # 128 bytes: below MIN_MB, whole everywhere


# --- checkpoints move between meshes ------------------------------------------------------------------------

def _state(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_a_checkpoint_resumes_on_another_mesh_bit_for_bit(tmp_path):
    """8 devices as fsdp=8 -> 4 devices as fsdp=4 -> 1 device -> 8 as data=2,fsdp=2,model=2, each going on from the
    checkpoint the one before wrote: every hand-off restores the exact state that was saved."""
    workdir = tmp_path / "run"
    chain = ((8, "fsdp=8", 6), (4, "fsdp=4", 9), (1, None, 12), (8, "data=2,fsdp=2,model=2", 15))
    for i, (devices, mesh, steps) in enumerate(chain):
        run = {"options": _options(workdir, mesh=mesh, steps=steps, checkpoint_every=3),
               "start_state": str(tmp_path / f"start{i}.npz"), "end_state": str(tmp_path / f"end{i}.npz")}
        result = _run([run], devices)
        assert result["runs"][0]["step"] == steps
    for i in range(1, len(chain)):
        saved, restored = _state(tmp_path / f"end{i - 1}.npz"), _state(tmp_path / f"start{i}.npz")
        assert saved.keys() == restored.keys()
        for name in saved:
            assert np.array_equal(saved[name], restored[name]), f"{name} changed from {chain[i - 1][1]} to {chain[i][1]}"
    # model.safetensors holds the last state's parameters, whole (written from the split state).
    _, weights = load_weights(workdir / "model.safetensors")
    end = _state(tmp_path / "end3.npz")
    assert np.array_equal(weights["blocks.0.mlp.fc1.weight"].T, end["['params']['blocks_0']['mlp']['fc1']['kernel']"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_split_the_state_over_both(runs, tmp_path):
    """2 processes of 4 devices each as fsdp=8: every split tensor has slices on both processes, both write the
    checkpoints, and the run is the one-device run."""
    address = f"127.0.0.1:{_free_port()}"
    run = {"options": _options(tmp_path / "run", mesh="fsdp=8", checkpoint_every=10)}
    results = collect_all([_start([run], devices=4, coordinator=address, num_processes=2, process_id=i)
                           for i in range(2)], _result)
    for result in results:
        assert result["processes"] == 2 and result["devices"] == 8
        np.testing.assert_allclose(result["runs"][0]["losses"], runs["one"]["losses"], rtol=1e-5, atol=0)
    _, a = load_weights(tmp_path / "run" / "model.safetensors")
    _, b = load_weights(runs["root"] / "one" / "model.safetensors")
    for name in b:
        assert np.abs(a[name] - b[name]).max() <= 1e-4 * max(1.0, float(np.abs(b[name]).max())), name
