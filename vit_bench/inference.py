"""`vit bench --inference`: batch-1 latency and batch-256 throughput of the model under JAX jit, PyTorch
eager, torch.compile and onnxruntime, on this machine.

    vit bench --inference                                  # tutorial and S/16 at 224: ~8-10 minutes on 2 quiet CPU cores (estimated)
    vit bench --inference --rows tutorial --batch-size 64 --repeats 3 --calls 10 --json inference.json

The same rules for every runtime:
- the same random weights (vit_spec.random_weights) and random float32 images, already in the
  runtime's layout and place (JAX NHWC on its device, PyTorch and onnxruntime NCHW); a call returns
  the logits as numpy, finished;
- JAX: `jax.jit` of the forward, default matmul precision (exact float32 on CPU); PyTorch under
  `torch.inference_mode()`, one intra-op thread per core; torch.compile: inductor with
  `dynamic=False` (a static graph per batch size, as a fixed-batch server would run); onnxruntime:
  the file `vit export --to onnx` writes, CPU provider, default session options;
- setup (building, compiling, exporting, and the first call at each batch size) is timed apart;
  the first calls' logits are checked against PyTorch eager's before anything is timed;
- rounds: each round runs every runtime in turn (JAX, eager, compile, onnxruntime, then again), so
  that a noisy neighbour slows all of them alike. In its turn a runtime makes one untimed call and
  K timed calls at batch B (throughput), then one untimed call and L batch-1 calls, each timed
  alone (latency). Latency is the median and 90th percentile of every batch-1 call; throughput the
  median (and range) over the rounds; the ratio to PyTorch eager is the median over the rounds of
  each round's ratio of speeds (above 1: faster than eager).

The runtimes are built by vit_bench.jax_runner (JAX) and vit_bench.torch_runner (PyTorch, torch.compile,
and onnxruntime on torch_vit.export's ONNX file), imported by name when a runtime is built: this module
imports neither framework.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from vit_bench.flops import forward_flops
from vit_bench.measure import (
    cpu_count, format_header, load_average, machine_info, progress, short_number, spread, write_json,
)
from vit_bench.sweep import select_rows
from vit_spec import ViTConfig

RUNTIMES = ("jax-jit", "torch-eager", "torch-compile", "onnxruntime")
REFERENCE = "torch-eager"
# These depend on tools outside the project (a C++ compiler, the ONNX exporter): a failure is reported in
# the table. JAX or PyTorch eager failing is a bug of ours, and raises.
MAY_FAIL = ("torch-compile", "onnxruntime")
DEFAULT_MODELS = ("tutorial", "S/16")
DEFAULT_BATCH = 256
DEFAULT_CALLS = 20
TOL = 1e-4  # the largest |logits - eager's| scaled by eager's largest |logit| that still counts as the same


@dataclasses.dataclass
class Runtime:
    """One runtime's model: `call` takes `prepare`'s input and returns finished numpy logits."""

    prepare: Callable[[np.ndarray], Any]  # NHWC float32 -> the runtime's own input, in place
    call: Callable[[Any], np.ndarray]


def _jax(config: ViTConfig, weights: dict[str, np.ndarray], path: Path) -> Runtime:
    from vit_bench import jax_runner

    return Runtime(*jax_runner.inference_functions(config, weights))


def _torch(config: ViTConfig, weights: dict[str, np.ndarray], path: Path, compile: bool = False) -> Runtime:
    from vit_bench import torch_runner

    return Runtime(*torch_runner.inference_functions(config, weights, compile))


def _onnxruntime(config: ViTConfig, weights: dict[str, np.ndarray], path: Path) -> Runtime:
    from vit_bench import torch_runner

    return Runtime(*torch_runner.onnxruntime_functions(path))


# Runtime name -> its builder; the builders import their framework's module (vit_bench.jax_runner or
# vit_bench.torch_runner) when called, so that this module imports neither framework.
BUILDERS: dict[str, Callable[[ViTConfig, dict[str, np.ndarray], Path], Runtime]] = {
    "jax-jit": _jax,
    "torch-eager": _torch,
    "torch-compile": lambda config, weights, path: _torch(config, weights, path, compile=True),
    "onnxruntime": _onnxruntime,
}


def default_repeats(config: ViTConfig, batch: int) -> int:
    """Rounds for a model: 3 where a batch call is over ~1 s on 2 CPU cores (S/16 at 256: several), else 5."""
    return 3 if batch * forward_flops(config) > 1e11 else 5


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"


def measure_model(
    name: str,
    config: ViTConfig,
    runtimes: tuple[str, ...] = RUNTIMES,
    batch: int = DEFAULT_BATCH,
    repeats: int | None = None,
    calls: int = DEFAULT_CALLS,
    steps: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Sets up every runtime, checks its logits, then times `repeats` rounds of them; the JSON record."""
    from twins.differences import scaled_difference
    from vit_spec import random_weights, save_weights

    if REFERENCE not in runtimes:
        raise ValueError(f"the runtimes must include {REFERENCE}, the reference of the ratios and the logit check")
    repeats = repeats or default_repeats(config, batch)
    h, w = config.image_hw
    rng = np.random.default_rng(seed)
    inputs = {n: rng.standard_normal((n, h, w, config.channels), dtype=np.float32) for n in (batch, 1)}
    record: dict[str, Any] = {
        "model": name, "config": config.to_dict(), "image": [h, w], "batch": batch, "repeats": repeats,
        "calls": calls, "steps": steps, "load_average_before": load_average(), "runtimes": {},
    }
    started = time.perf_counter()
    ready: dict[str, tuple[Runtime, dict[int, Any]]] = {}
    outputs: dict[str, dict[int, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        weights = random_weights(config, seed=0)
        save_weights(path, config, weights)
        for rt in runtimes:
            entry: dict[str, Any] = {}
            record["runtimes"][rt] = entry
            start = time.perf_counter()
            try:
                runtime = BUILDERS[rt](config, weights, path)
                prepared = {n: runtime.prepare(x) for n, x in inputs.items()}
                # The first call at each batch compiles (JAX, torch.compile): part of the setup, and the check's logits.
                outputs[rt] = {n: runtime.call(x) for n, x in prepared.items()}
            except Exception as e:
                if rt not in MAY_FAIL:
                    raise
                entry["error"] = _error(e)
                progress(f"    {rt} failed in setup after {time.perf_counter() - start:.1f} s: {entry['error'][:300]}")
                continue
            entry["setup_s"] = time.perf_counter() - start
            ready[rt] = (runtime, prepared)
    for rt, out in outputs.items():
        # Scaled as vit export and the parity suite scale; the larger of the two batches' differences.
        entry = record["runtimes"][rt]
        entry["max_diff"] = max(scaled_difference(out[n], outputs[REFERENCE][n])[1] for n in inputs)
        entry["mismatch"] = not entry["max_diff"] <= TOL
        progress(f"    {rt}: setup {entry['setup_s']:.1f} s, max scaled diff vs {REFERENCE} {entry['max_diff']:.1e}"
                 + (" MISMATCH" if entry["mismatch"] else ""))
    outputs.clear()
    for rt in ready:
        record["runtimes"][rt].update(latency_ms=[], round_latency_ms=[], images_per_s_rounds=[])
    for r in range(repeats):
        for rt, (runtime, prepared) in list(ready.items()):
            try:
                runtime.call(prepared[batch])  # the other runtimes' turns took the memory and the caches
                start = time.perf_counter()
                for _ in range(steps):
                    runtime.call(prepared[batch])
                throughput = steps * batch / (time.perf_counter() - start)
                runtime.call(prepared[1])
                latency = []
                for _ in range(calls):
                    start = time.perf_counter()
                    runtime.call(prepared[1])
                    latency.append(1e3 * (time.perf_counter() - start))
            except Exception as e:
                if rt not in MAY_FAIL:
                    raise
                record["runtimes"][rt]["error"] = _error(e)
                progress(f"    {rt} failed in round {r + 1}, dropped: {record['runtimes'][rt]['error'][:300]}")
                del ready[rt]
                continue
            # Appended only for a whole turn, so that index r is round r for every runtime that ran it.
            entry = record["runtimes"][rt]
            entry["images_per_s_rounds"].append(throughput)
            entry["latency_ms"].extend(latency)
            entry["round_latency_ms"].append(statistics.median(latency))
        done = ", ".join(
            f"{rt} {short_number(record['runtimes'][rt]['round_latency_ms'][-1])} ms / {short_number(record['runtimes'][rt]['images_per_s_rounds'][-1])} img/s"
            for rt in ready
        )
        progress(f"    round {r + 1}/{repeats}: {done}")
    ready.clear()
    gc.collect()
    _summarize(record)
    record["seconds"] = time.perf_counter() - started
    record["load_average_after"] = load_average()
    return record


def _summarize(record: dict[str, Any]) -> None:
    """Latency percentiles, throughput spread, and the per-round ratios to the reference, into `record`."""
    ref = record["runtimes"][REFERENCE]
    for entry in record["runtimes"].values():
        if "error" in entry or not entry.get("latency_ms"):
            continue
        entry["latency_p50_ms"] = float(np.percentile(entry["latency_ms"], 50))
        entry["latency_p90_ms"] = float(np.percentile(entry["latency_ms"], 90))
        entry["images_per_s"] = spread(entry["images_per_s_rounds"])
        # zip stops at the shorter list: the rounds both ran.
        entry["latency_vs_eager"] = statistics.median(
            e / o for e, o in zip(ref["round_latency_ms"], entry["round_latency_ms"]))
        entry["throughput_vs_eager"] = statistics.median(
            o / e for e, o in zip(ref["images_per_s_rounds"], entry["images_per_s_rounds"]))


def format_table(records: list[dict[str, Any]]) -> str:
    """One Markdown line per model and runtime; a failed runtime's error in its latency cell."""
    batch = records[0]["batch"] if records else DEFAULT_BATCH
    head = ["model", "runtime", "batch-1 latency ms (p50 / p90)", f"batch-{batch} img/s (median, min-max)",
            "vs torch eager (latency / throughput)", "max diff vs eager", "setup s"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "|".join(["---:"] * (len(head) - 2)) + "|"]
    for rec in records:
        model = f"{rec['model']} ({rec['image'][0]}x{rec['image'][1]})"
        for rt, e in rec["runtimes"].items():
            if "images_per_s" in e:
                s = e["images_per_s"]
                cells = [
                    f"{short_number(e['latency_p50_ms'])} / {short_number(e['latency_p90_ms'])}",
                    f"{short_number(s['median'])} ({short_number(s['min'])}-{short_number(s['max'])})",
                    f"{e['latency_vs_eager']:.2f}x / {e['throughput_vs_eager']:.2f}x",
                ]
            else:
                # Escaped so that an error message cannot break the table.
                error = e.get("error", "no timings").replace("|", "/").replace("\n", " ")
                cells = [f"failed: {error[:100]}", "-", "-"]
            diff = f"{e['max_diff']:.1e}" + (" MISMATCH" if e["mismatch"] else "") if "max_diff" in e else "-"
            setup = f"{e['setup_s']:.1f}" if "setup_s" in e else "-"
            lines.append("| " + " | ".join([model, rt, *cells, diff, setup]) + " |")
    return "\n".join(lines)


def format_notes(records: list[dict[str, Any]]) -> str:
    lines = [
        "latency: every batch-1 call timed alone (rounds x calls of them); img/s: K calls at the batch per round, "
        "median (min-max) over the rounds; runtimes alternate within each round; vs torch eager: median over the "
        "rounds of that round's speed / eager's (above 1: faster); max diff: max |logits - eager's| / max |eager's| "
        f"on the batch-1 and batch inputs, MISMATCH above {TOL:.0e}; setup s: build + first call at each batch "
        "(JAX: jit compile; torch.compile: compile; onnxruntime: ONNX export + session)."
    ]
    for rec in records:
        lines.append(f"{rec['model']}: {rec['repeats']} rounds x ({rec['steps']} call(s) at batch {rec['batch']} + "
                     f"{rec['calls']} batch-1 calls), {rec['seconds']:.0f} s, load average "
                     f"{rec['load_average_before']} before, {rec['load_average_after']} after")
        for rt, e in rec["runtimes"].items():
            if "error" in e:
                lines.append(f"{rec['model']}: {rt} failed: {e['error'][:500]}")
    return "\n".join(lines)


def runtime_info() -> dict[str, Any]:
    """onnxruntime's version and threads, and JAX's precision, beside vit_bench.measure.machine_info()."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    return {
        "onnxruntime": onnxruntime.__version__,
        # 0 is onnxruntime's "default": one intra-op thread per physical core.
        "onnxruntime_intra_op_threads": options.intra_op_num_threads,
        "onnxruntime_inter_op_threads": options.inter_op_num_threads,
        "physical_cores": physical,
        "jax_matmul_precision": "default (exact float32 on CPU)",
    }


def run(
    rows: list[str] | None = None,
    repeats: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    calls: int | None = None,
    json_path: str | None = None,
) -> Iterator[str]:
    """`vit bench --inference`: yields the report's text as it goes (the command's stdout; progress on stderr),
    everything in `json_path`.

    Arguments are `vit bench`'s flags; None: the defaults (DEFAULT_MODELS, default_repeats, 1 call per
    throughput timing, DEFAULT_BATCH, DEFAULT_CALLS). Bad values raise ValueError naming the flag.
    """
    names = rows or list(DEFAULT_MODELS)
    selected = select_rows(names)
    for flag, value in (("--repeats", repeats), ("--steps", steps), ("--batch-size", batch_size), ("--calls", calls)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    from vit_bench import torch_runner

    torch_runner.set_threads(cpu_count())  # as the training bench: one thread per core, as XLA's CPU backend
    started = time.perf_counter()
    machine = {**machine_info(), **runtime_info()}
    yield format_header(machine, None)
    yield (f"onnxruntime {machine['onnxruntime']}: intra-op threads {machine['onnxruntime_intra_op_threads']} "
           f"(0: its default, one per physical core; physical cores {machine['physical_cores']}); "
           f"JAX matmul precision: {machine['jax_matmul_precision']}")
    batch = batch_size or DEFAULT_BATCH
    report: dict[str, Any] = {
        "machine": machine,
        "settings": {"models": names, "runtimes": list(RUNTIMES), "batch": batch, "repeats": repeats,
                     "calls": calls or DEFAULT_CALLS, "steps": steps or 1, "tolerance": TOL,
                     "torch_compile": "inductor, dynamic=False"},
        "models": [],
    }
    for i, row in enumerate(selected, 1):
        progress(f"[{i}/{len(selected)}] {row.name}: batch 1 and {batch}, runtimes {', '.join(RUNTIMES)} ...")
        record = measure_model(row.name, row.config, RUNTIMES, batch, repeats, calls or DEFAULT_CALLS, steps or 1)
        report["models"].append(record)
        so_far = time.perf_counter() - started
        progress(f"[{i}/{len(selected)}] done in {record['seconds']:.0f} s ({so_far:.0f} s so far)")
        if json_path:  # after every model: an interrupted run keeps what it measured
            write_json(json_path, report)
    yield ""
    yield format_table(report["models"])
    yield ""
    yield format_notes(report["models"])
    report["seconds"] = time.perf_counter() - started
    report["load_average_after"] = load_average()
    yield f"total {report['seconds']:.0f} s"
    if json_path:
        write_json(json_path, report)
        yield f"wrote {json_path}"
