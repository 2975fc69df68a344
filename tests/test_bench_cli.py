"""`vit bench`: the command runs end to end and writes its JSON; the analytic FLOP count is right.

No timed assertions: speeds depend on the machine and its neighbours.
"""

import json
import os

import pytest

from vit_bench import sweep as bench
from vit_bench import torch_runner
from vit_bench.flops import forward_flops, task_flops, train_flops
from vit_cli.main import main
from vit_spec import ViTConfig

TUTORIAL = ViTConfig.from_variant("tutorial")


def test_flops_of_the_tutorial_model_by_hand():
    # 64 patches of 4x4x3 pixels, 65 tokens, width 128, MLP 256, depth 4, 10 classes.
    patch_embed = 2 * 64 * (4 * 4 * 3) * 128
    qkv, scores, attn_v = 2 * 65 * 128 * 384, 2 * 65 * 65 * 128, 2 * 65 * 65 * 128
    proj, mlp = 2 * 65 * 128 * 128, 2 * 2 * 65 * 128 * 256
    head = 2 * 128 * 10
    forward = patch_embed + 4 * (qkv + scores + attn_v + proj + mlp) + head
    assert forward == 77_599_232
    assert forward_flops(TUTORIAL) == forward
    assert train_flops(TUTORIAL) == task_flops(TUTORIAL, "train") == 3 * forward
    assert task_flops(TUTORIAL, "inference") == forward


def test_flops_count_pre_logits_and_mean_pooling():
    config = TUTORIAL.replace(pool="mean", representation_size=64)
    # No [CLS] token: 64 tokens; the head reads the 64-wide pre-logits.
    block = 2 * 64 * 128 * 384 + 2 * 2 * 64 * 64 * 128 + 2 * 64 * 128 * 128 + 2 * 2 * 64 * 128 * 256
    expected = 2 * 64 * 48 * 128 + 4 * block + 2 * 128 * 64 + 2 * 64 * 10
    assert forward_flops(config) == expected


def test_flops_agree_with_xla_cost_analysis():
    """XLA also counts element-wise work (norms, GELU, softmax), which the analytic count leaves out."""
    import jax
    import jax.numpy as jnp
    import optax

    from jax_vit import ViT, init_params

    model, params = ViT(TUTORIAL), init_params(TUTORIAL, 0)
    images, labels = jnp.zeros((2, 32, 32, 3), jnp.float32), jnp.zeros((2,), jnp.int32)

    def xla_flops(f) -> float | None:
        analysis = jax.jit(f).lower(params, images).compile().cost_analysis()
        analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
        return (analysis or {}).get("flops")

    forward = xla_flops(lambda p, x: model.apply({"params": p}, x))
    loss = lambda p, x: optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), labels).mean()
    grads = xla_flops(jax.grad(loss))
    if forward is None or grads is None:
        pytest.skip("this backend's cost_analysis reports no flops")
    assert forward / 2 == pytest.approx(forward_flops(TUTORIAL), rel=0.15)
    assert grads / 2 == pytest.approx(train_flops(TUTORIAL), rel=0.15)


def test_unknown_row_is_refused_with_the_valid_names(capsys):
    with pytest.raises(ValueError, match="unknown --rows.*'tutorial'.*'S/16'.*'smoke'"):
        bench.select_rows(["tutorial", "B/16"])
    assert main(["bench", "--rows", "B/16", "--no-peak"]) == 2
    assert "unknown --rows ['B/16']" in capsys.readouterr().err


def test_unknown_mode_is_refused(capsys):
    assert main(["bench", "--rows", "smoke", "--modes", "jax", "tensorflow", "--no-peak"]) == 2
    assert "unknown --modes ['tensorflow']" in capsys.readouterr().err


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    """One smoke run, shared: JAX and PyTorch eager, both tasks and dtypes, the peak included.

    torch.compile is left out: its first compile takes a minute on 2 CPU cores (its failure path is
    tested below).
    """
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    argv = ["bench", "--rows", "smoke", "--repeats", "1", "--steps", "1", "--modes", "jax", "torch", "--json", str(path)]
    assert main(argv) == 0
    return json.loads(path.read_text())


def test_smoke_run_writes_every_timing(smoke_report):
    report = smoke_report
    assert set(report) >= {"machine", "peak", "settings", "rows", "seconds"}
    assert report["machine"]["torch_threads"] == report["machine"]["cpu_count"]
    assert set(report["machine"]["versions"]) >= {"jax", "jaxlib", "torch"}
    # The suite's persistent compilation cache (tests/conftest.py) is recorded, as a user's would be.
    assert report["machine"]["jax_compilation_cache"] == os.environ.get("JAX_COMPILATION_CACHE_DIR")
    for dtype in ("float32", "bfloat16"):
        peak = report["peak"][dtype]
        assert peak["gflops"] == max(peak["jax_gflops"], peak["torch_gflops"]) > 0
    rows = report["rows"]
    assert [(r["dtype"], r["task"]) for r in rows] == [
        ("float32", "train"), ("float32", "inference"), ("bfloat16", "train"), ("bfloat16", "inference")
    ]
    for r in rows:
        assert r["row"] == "smoke" and r["batch"] == 8 and r["repeats"] == 1 and r["steps"] == 1
        assert r["flops_per_image"] == task_flops(ViTConfig.from_dict(r["config"]), r["task"]) > 0
        assert set(r["modes"]) == {"jax", "torch"}
        assert r["modes"]["jax"]["compile_s"] > 0
        for entry in r["modes"].values():
            assert len(entry["seconds"]) == 1 and entry["seconds"][0] > 0
            assert entry["images_per_s"]["min"] <= entry["images_per_s"]["median"] <= entry["images_per_s"]["max"]
            assert entry["gflops"] > 0 and entry["peak_fraction"] > 0
        assert r["faster_torch_mode"] == "torch" and r["jax_vs_torch"] > 0 and r["seconds"] > 0


def test_smoke_run_prints_a_markdown_table(smoke_report, capsys):
    # The table of the module-scoped run went to an earlier test's capture: format it again.
    table = bench.format_table(smoke_report["rows"]).splitlines()
    assert table[0].startswith("| model | image | batch | dtype | task | JAX img/s |")
    assert all(line.startswith("|") and line.endswith("|") for line in table)
    assert len({line.count("|") for line in table}) == 1  # every line has the same columns
    assert len(table) == 2 + 4
    assert "| smoke | 16x16 | 8 | float32 | train |" in table[2]


def test_a_failing_torch_compile_is_recorded_not_fatal(monkeypatch, tmp_path, capsys):
    real = torch_runner.TorchRunner

    def runner(*args, compile: bool, **kwargs):
        if compile:
            raise RuntimeError("no C++ compiler")
        return real(*args, compile=compile, **kwargs)

    monkeypatch.setattr(torch_runner, "TorchRunner", runner)
    path = tmp_path / "bench.json"
    argv = ["bench", "--rows", "smoke", "--dtypes", "float32", "--tasks", "inference", "--repeats", "1", "--steps", "1",
            "--no-peak", "--json", str(path)]
    assert main(argv) == 0
    record = json.loads(path.read_text())["rows"][0]
    assert record["modes"]["torch-compile"] == {"error": "RuntimeError: no C++ compiler"}
    assert record["faster_torch_mode"] == "torch" and record["modes"]["jax"]["peak_fraction"] is None
    out = capsys.readouterr().out
    assert "| failed |" in out and "torch-compile failed: RuntimeError: no C++ compiler" in out


def test_profile_and_ablation_sections_write_their_findings(tmp_path, capsys):
    out = tmp_path / "sections.json"
    argv = ["bench", "--rows", "smoke", "--sections", "profile", "ablation", "--no-peak", "--repeats", "1",
            "--steps", "1", "--json", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["rows"] == []  # no sweep asked for
    profile = report["profile"]
    groups = {g["group"] for g in profile["groups"]}
    # Every layer part the model has shows up, and the shares add up to the whole.
    assert {"attention: scores, softmax, layout", "LayerNorm", "GELU", "MLP dense"} <= groups
    assert sum(g["share"] for g in profile["groups"]) == pytest.approx(1.0)
    variants = [r["variant"] for r in report["ablation"]["rows"]]
    assert variants[0] == "this project" and "PyTorch eager" in variants and len(variants) == 6
    assert all(r["images_per_s"] > 0 for r in report["ablation"]["rows"])
    assert "| variant | ms/step |" in capsys.readouterr().out


def test_ablation_variants_put_the_library_pieces_back_and_restore_ours():
    import jax_vit.model as model_module
    from vit_bench.ablation import _pieces_put_back

    ours = (model_module.LayerNorm, model_module.gelu, model_module.packed_attention)
    with _pieces_put_back(("LayerNorm", "gelu", "packed_attention")):
        assert model_module.packed_attention is not ours[2] and model_module.gelu is not ours[1]
    assert (model_module.LayerNorm, model_module.gelu, model_module.packed_attention) == ours


def test_dispatch_section_times_the_host_and_the_device_paths():
    from vit_bench.dispatch import format_dispatch, measure_dispatch

    # The smallest model: what is checked is that both paths run and are timed, and each compiles its own step.
    result = measure_dispatch(model="mu/8", batch_size=8, ks=(1, 2), steps=2, repeats=1, examples=64)
    assert [r["variant"] for r in result["rows"]] == ["host, K=1", "device, K=1", "device, K=2"]
    assert all(r["images_per_s"] > 0 for r in result["rows"])
    assert "| path | images/s" in format_dispatch(result)
