"""The sweep of `vit bench`: images/s of the twins' training step and inference, JAX against PyTorch.

The rows (models with their batch and default steps), one measurement (`bench_one`: a row, a dtype, a
task, every framework mode alternated), its summary (JAX / PyTorch, achieved FLOP/s and the fraction of
the matmul peak) and the Markdown table. The rules it keeps are `vit bench --help`'s (vit_cli/bench.py);
vit_bench.report runs it.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import time
from typing import Any

import numpy as np

from vit_bench.flops import task_flops
from vit_bench.measure import load_average, make_runner, progress, short_number, spread
from vit_spec import ViTConfig

MODES = ("jax", "torch", "torch-compile")
TASKS = ("train", "inference")
DTYPES = ("float32", "bfloat16")
# Untimed steps before the repeats (torch.compile's compiling first call is its warm-up).
WARMUP_STEPS = {"jax": 1, "torch": 1, "torch-compile": 0}


@dataclasses.dataclass(frozen=True)
class BenchRow:
    """One model of the sweep, with its batch and the default timed steps per repeat of each task."""

    name: str
    config: ViTConfig
    batch: int
    train_steps: int
    inference_steps: int
    repeats: int

    def steps(self, task: str) -> int:
        return self.train_steps if task == "train" else self.inference_steps


def _rows() -> dict[str, BenchRow]:
    # Steps and repeats are sized so that the default sweep takes roughly 30 minutes on 2 idle CPU cores:
    # a timed repeat of 1-4 s for the small models, one step for the big ones.
    at_224 = dict(image_size=224, num_classes=1000)
    rows = [
        BenchRow("tutorial", ViTConfig.from_variant("tutorial"), 128, 3, 6, 5),
        BenchRow(
            "w256d6",
            ViTConfig(image_size=32, patch_size=4, width=256, depth=6, heads=8, mlp_dim=512, num_classes=10),
            128, 1, 3, 3,
        ),
        BenchRow("S/4", ViTConfig.from_variant("S/4", image_size=32, num_classes=10), 128, 1, 1, 3),
        BenchRow("Ti/16", ViTConfig.from_variant("Ti/16", **at_224), 32, 1, 2, 3),
        # S/16 at batch 16: a training step is ~900 GFLOP at batch 32, over 10 s on 2 CPU cores.
        BenchRow("S/16", ViTConfig.from_variant("S/16", **at_224), 16, 1, 1, 3),
        # Not in the default sweep: seconds end to end, for CI.
        BenchRow(
            "smoke",
            ViTConfig(image_size=16, patch_size=4, width=32, depth=1, heads=2, mlp_dim=64, num_classes=10),
            8, 2, 2, 2,
        ),
    ]
    return {row.name: row for row in rows}


ROWS = _rows()
DEFAULT_ROWS = ("tutorial", "w256d6", "S/4", "Ti/16", "S/16")


def select_rows(names: list[str] | None) -> list[BenchRow]:
    """The rows named (all of the default sweep for None), in the order given."""
    names = list(names or DEFAULT_ROWS)
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise ValueError(f"unknown --rows {unknown}: the rows are {list(ROWS)} (default: {list(DEFAULT_ROWS)})")
    return [ROWS[n] for n in names]


# --- One measurement: a row, a dtype, a task, every mode alternated. ---


def bench_one(
    row: BenchRow, dtype: str, task: str, modes: list[str], repeats: int, steps: int, batch: int, seed: int = 0
) -> dict[str, Any]:
    """Times `steps` steps of each mode, `repeats` times, alternating the modes; returns the JSON record."""
    config = row.config
    h, w = config.image_hw
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, h, w, config.channels), dtype=np.float32)
    labels = rng.integers(0, max(config.num_classes, 1), (batch,))
    started = time.perf_counter()
    record: dict[str, Any] = {
        "row": row.name,
        "config": config.to_dict(),
        "image": [h, w],
        "batch": batch,
        "dtype": dtype,
        "task": task,
        "flops_per_image": task_flops(config, task),
        "repeats": repeats,
        "steps": steps,
        "warmup_steps": {mode: WARMUP_STEPS[mode] for mode in modes},
        "load_average_before": load_average(),
        "modes": {},
    }
    runners = {}
    for mode in modes:
        entry: dict[str, Any] = {}
        record["modes"][mode] = entry
        setup_start = time.perf_counter()
        try:
            runner = make_runner(mode, config, dtype, task, images, labels)
            entry["compile_s"] = runner.compile_s
            start = time.perf_counter()
            runner.steps(WARMUP_STEPS[mode])
            entry["warmup_s"] = time.perf_counter() - start
        except Exception as e:
            if mode != "torch-compile":
                raise
            # torch.compile fails on some setups (no C compiler, an unsupported op): note it, go on.
            entry["error"] = f"{type(e).__name__}: {e}"
            elapsed = time.perf_counter() - setup_start
            progress(f"    {mode} failed after {elapsed:.1f} s, skipped: {entry['error'][:300]}")
            continue
        compiled = f", compile {entry['compile_s']:.1f} s" if entry["compile_s"] is not None else ""
        warmup = f", warm-up {entry['warmup_s']:.1f} s" if WARMUP_STEPS[mode] else ""
        progress(f"    {mode}: ready{compiled}{warmup}")
        entry["seconds"] = []
        runners[mode] = runner
    for r in range(repeats):
        for mode, runner in list(runners.items()):
            try:
                # One untimed step first: the other framework's step has just taken the memory and the
                # caches, and a framework's first step after it pays for getting them back (measured: up
                # to 30% of a step when large buffers are on huge pages), which no real run pays.
                runner.steps(1)
                start = time.perf_counter()
                runner.steps(steps)
            except Exception as e:
                if mode != "torch-compile":
                    raise
                record["modes"][mode]["error"] = f"{type(e).__name__}: {e}"
                progress(f"    {mode} failed in repeat {r + 1}, skipped from here: {record['modes'][mode]['error'][:300]}")
                del runners[mode]
                continue
            record["modes"][mode]["seconds"].append(time.perf_counter() - start)
        done = ", ".join(f"{m} {steps * batch / record['modes'][m]['seconds'][-1]:.1f}" for m in runners)
        progress(f"    repeat {r + 1}/{repeats}: images/s {done}")
    runners.clear()
    runner = None  # the loop variables hold the last runner too
    _free_memory()
    for mode, entry in record["modes"].items():
        if entry.get("seconds") and "error" not in entry:
            entry["images_per_s"] = spread([steps * batch / s for s in entry["seconds"]])
        elif entry.get("seconds"):  # failed after some repeats: keep the raw timings, no summary
            entry["partial"] = True
    record["seconds"] = time.perf_counter() - started
    record["load_average_after"] = load_average()
    return record


def _free_memory() -> None:
    """Releases the last measurement's buffers, so that the next one starts with the device's memory free."""
    gc.collect()
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        sys.modules["torch"].cuda.empty_cache()


def _speed(record: dict[str, Any], mode: str) -> float | None:
    entry = record["modes"].get(mode, {})
    return entry["images_per_s"]["median"] if "images_per_s" in entry else None


def summarize(record: dict[str, Any], peak: dict[str, dict[str, Any]] | None) -> None:
    """Adds the JAX/PyTorch ratio, the faster PyTorch mode and each mode's achieved FLOP/s to `record`."""
    torch_speeds = {m: _speed(record, m) for m in ("torch", "torch-compile") if _speed(record, m) is not None}
    record["faster_torch_mode"] = max(torch_speeds, key=torch_speeds.get) if torch_speeds else None
    jax_speed = _speed(record, "jax")
    record["jax_vs_torch"] = (
        jax_speed / torch_speeds[record["faster_torch_mode"]] if jax_speed is not None and torch_speeds else None
    )
    peak_gflops = peak[record["dtype"]]["gflops"] if peak and record["dtype"] in peak else None
    for mode, entry in record["modes"].items():
        if "images_per_s" in entry:
            entry["gflops"] = record["flops_per_image"] * entry["images_per_s"]["median"] / 1e9
            entry["peak_fraction"] = entry["gflops"] / peak_gflops if peak_gflops else None


# --- The table. ---


def _speed_cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    if "images_per_s" not in entry:
        return "failed" if "error" in entry else "-"
    s = entry["images_per_s"]
    return f"{short_number(s['median'])} ({short_number(s['min'])}-{short_number(s['max'])})"


def _flops_cell(entry: dict[str, Any] | None, label: str = "") -> str:
    if not entry or "gflops" not in entry:
        return "-"
    fraction = f", {100 * entry['peak_fraction']:.0f}%" if entry.get("peak_fraction") is not None else ""
    inside = f"{fraction[2:]}{', ' + label if label else ''}" if fraction else label
    return f"{short_number(entry['gflops'])} ({inside})" if inside else short_number(entry["gflops"])


def format_table(records: list[dict[str, Any]]) -> str:
    """The results as a Markdown table, one line per row, dtype and task."""
    head = [
        "model", "image", "batch", "dtype", "task", "JAX img/s", "torch eager img/s", "torch.compile img/s",
        "JAX / PyTorch", "JAX GFLOP/s (% peak)", "PyTorch GFLOP/s (% peak, mode)", "compile s (JAX / torch.compile)",
        "time s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 5 + ["---:"] * (len(head) - 5)) + "|"]
    for rec in records:
        modes = rec["modes"]
        faster = rec.get("faster_torch_mode")
        compile_jax = modes.get("jax", {}).get("compile_s")
        compile_tc = modes.get("torch-compile", {}).get("compile_s")
        cells = [
            rec["row"],
            f"{rec['image'][0]}x{rec['image'][1]}",
            str(rec["batch"]),
            rec["dtype"],
            rec["task"],
            _speed_cell(modes.get("jax")),
            _speed_cell(modes.get("torch")),
            _speed_cell(modes.get("torch-compile")),
            f"{rec['jax_vs_torch']:.2f}x" if rec.get("jax_vs_torch") is not None else "-",
            _flops_cell(modes.get("jax")),
            _flops_cell(modes.get(faster), "eager" if faster == "torch" else "compile") if faster else "-",
            " / ".join(f"{s:.1f}" if s is not None else "-" for s in (compile_jax, compile_tc)),
            f"{rec['seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_notes(records: list[dict[str, Any]], repeats_steps: set[tuple[int, int]]) -> str:
    lines = [
        "img/s: median (min-max) over the repeats, each timing K steps, frameworks alternated; "
        "JAX / PyTorch: JAX's median over the faster PyTorch mode's; "
        "GFLOP/s: analytic FLOPs per image (vit_bench/flops.py) x img/s; torch.compile: model compiled, AdamW eager; "
        "compile s: torch.compile's first call, shorter where inductor's on-disk cache holds kernels of an earlier run."
    ]
    lines.append("repeats x steps: " + ", ".join(f"{r} x {s}" for r, s in sorted(repeats_steps)))
    for rec in records:
        for mode, entry in rec["modes"].items():
            if "error" in entry:
                lines.append(f"{rec['row']} {rec['dtype']} {rec['task']}: {mode} failed: {entry['error'][:500]}")
    return "\n".join(lines)
