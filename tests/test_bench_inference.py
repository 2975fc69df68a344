"""`vit bench --inference`: every runtime runs, agrees with PyTorch eager, and a failing runtime is reported.

On bench's tiny "smoke" row at batch 2; no timed assertions (speeds depend on the machine and its neighbours).
"""

import contextlib
import io
import json
import re

import pytest

from vit_bench import inference as bench_inference
from vit_bench.sweep import ROWS
from vit_cli.main import main

SMOKE = ROWS["smoke"].config


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One `vit bench --inference` of the smoke row, all four runtimes: (stdout, JSON report)."""
    out = tmp_path_factory.mktemp("bench_inference") / "inference.json"
    stdout = io.StringIO()  # a module-scoped fixture has no capsys
    with contextlib.redirect_stdout(stdout):
        rc = main(["bench", "--inference", "--rows", "smoke", "--batch-size", "2", "--repeats", "2", "--calls", "2",
                   "--json", str(out)])
    assert rc == 0
    return stdout.getvalue(), json.loads(out.read_text())


def test_every_runtime_has_a_row_with_positive_numbers(smoke_run):
    text, _ = smoke_run
    rows = {cells[1]: cells for line in text.splitlines()
            if line.startswith("| smoke") and (cells := [c.strip() for c in line.strip("|").split("|")])}
    assert set(rows) == set(bench_inference.RUNTIMES)
    assert "| batch-2 img/s" in text
    for runtime, cells in rows.items():
        latency, throughput, ratios = cells[2:5]
        numbers = [float(x) for x in re.findall(r"[\d.]+", f"{latency} {throughput} {ratios}")]
        assert len(numbers) == 7 and all(x > 0 for x in numbers), (runtime, cells)
        assert "MISMATCH" not in cells[5]
    assert rows["torch-eager"][4] == "1.00x / 1.00x"


def test_logits_agree_with_eager_and_the_json_keeps_every_timing(smoke_run):
    _, report = smoke_run
    assert report["machine"]["onnxruntime_intra_op_threads"] is not None
    assert report["settings"]["batch"] == 2
    (record,) = report["models"]
    for runtime in bench_inference.RUNTIMES:
        entry = record["runtimes"][runtime]
        assert "error" not in entry, entry.get("error")
        assert 0 <= entry["max_diff"] <= bench_inference.TOL and not entry["mismatch"]
        assert len(entry["latency_ms"]) == 2 * 2 and len(entry["images_per_s_rounds"]) == 2
        assert entry["setup_s"] > 0 and entry["latency_p90_ms"] >= entry["latency_p50_ms"] > 0


def test_a_failing_torch_compile_is_reported_in_its_cell(monkeypatch):
    import torch

    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler | here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    record = bench_inference.measure_model(
        "smoke", SMOKE, ("torch-eager", "torch-compile"), batch=2, repeats=1, calls=1)
    assert record["runtimes"]["torch-compile"]["error"] == "RuntimeError: no C++ compiler | here"
    table = bench_inference.format_table([record])
    (line,) = [line for line in table.splitlines() if "torch-compile" in line]
    assert "failed: RuntimeError: no C++ compiler / here" in line  # the | escaped: the table keeps its columns
    assert line.count("|") == table.splitlines()[0].count("|")
    assert "images_per_s" in record["runtimes"]["torch-eager"]
    assert "torch-compile failed: RuntimeError" in bench_inference.format_notes([record])


def test_a_runtime_failing_while_timed_is_dropped_and_reported(monkeypatch):
    calls = {"n": 0}
    build = bench_inference.BUILDERS["jax-jit"]

    def flaky(*args):
        runtime = build(*args)
        call = runtime.call

        def fails_after_setup(x):
            calls["n"] += 1
            if calls["n"] > 2:  # the setup's two first calls pass, the first timed one fails
                raise MemoryError("out of memory")
            return call(x)

        return bench_inference.Runtime(runtime.prepare, fails_after_setup)

    monkeypatch.setitem(bench_inference.BUILDERS, "onnxruntime", flaky)
    record = bench_inference.measure_model("smoke", SMOKE, ("torch-eager", "onnxruntime"), batch=2, repeats=2, calls=1)
    assert record["runtimes"]["onnxruntime"]["error"] == "MemoryError: out of memory"
    assert "failed: MemoryError" in bench_inference.format_table([record])


def test_bad_flags_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:  # refused by argparse, before anything runs
        main(["bench", "--inference", "--rows", "smoke", "--calls", "0"])
    assert exit_.value.code == 2 and "argument --calls: must be at least 1, got 0" in capsys.readouterr().err
    assert main(["bench", "--inference", "--rows", "B/16"]) == 2
    assert "unknown --rows ['B/16']" in capsys.readouterr().err
    with pytest.raises(ValueError, match="must include torch-eager"):
        bench_inference.measure_model("smoke", SMOKE, ("jax-jit",), batch=2)
