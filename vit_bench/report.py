"""`vit bench`'s report: runs the sections asked for and assembles what it prints and the JSON it writes.

`run` is a generator of the report's text, block by block as each is measured (the command prints them
on stdout; progress goes to stderr): the header (machine, versions, matmul peak), the sweep's table and
notes (vit_bench.sweep), then each other section's Markdown (host, compile, ablation, profile, dispatch:
vit_bench.<section>, imported when it runs), and the total time. With `json_path`, the JSON is rewritten
after every row and every section, so that an interrupted run keeps what it measured.
`vit bench --inference` is a report of its own: vit_bench.inference.run.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

from vit_bench.measure import (
    BETAS, EPS, LR, WEIGHT_DECAY, cpu_count, format_header, machine_info, measure_peak, progress, write_json,
)
from vit_bench.sweep import DTYPES, MODES, TASKS, bench_one, format_notes, format_table, select_rows, summarize

SECTIONS = ("sweep", "host", "compile", "ablation", "profile", "dispatch", "decode")


def check_choices(flag: str, values: list[str], valid: tuple[str, ...]) -> list[str]:
    """`values` without repeats, in their order; a ValueError naming `flag` for any not in `valid`."""
    unknown = [v for v in values if v not in valid]
    if unknown:
        raise ValueError(f"unknown {flag} {unknown}: use some of {list(valid)}")
    return list(dict.fromkeys(values))  # drop repeats, keep the order


def run(
    sections: list[str] = ("sweep",),
    rows: list[str] | None = None,
    dtypes: list[str] = DTYPES,
    tasks: list[str] = TASKS,
    modes: list[str] = MODES,
    repeats: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    json_path: str | None = None,
    peak: bool = True,
    data_dir: str | None = None,
) -> Iterator[str]:
    """Measures the `sections` and yields the report's text as it goes (`vit bench`'s stdout, line blocks).

    Arguments are `vit bench`'s flags; None: each row's (or section's) default. Bad values raise
    ValueError naming the flag, before anything is measured.
    """
    sections = check_choices("--sections", list(sections), SECTIONS)
    selected = select_rows(rows)
    dtypes = check_choices("--dtypes", list(dtypes), DTYPES)
    tasks = check_choices("--tasks", list(tasks), TASKS)
    modes = check_choices("--modes", list(modes), MODES)
    for flag, value in (("--repeats", repeats), ("--steps", steps), ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")

    # On a GPU, JAX would otherwise take 75% of its memory at start, leaving PyTorch short.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    from vit_bench import torch_runner

    # The same threads for both frameworks: XLA's CPU backend uses every core.
    torch_runner.set_threads(cpu_count())
    torch_runner.match_jax_float32_matmuls()

    started = time.perf_counter()
    machine = machine_info()
    matmul_peak = None
    if peak:
        progress("measuring the matmul peak ...")
        matmul_peak = measure_peak(dtypes)
    yield format_header(machine, matmul_peak)
    report: dict[str, Any] = {
        "machine": machine,
        "peak": matmul_peak,
        "settings": {
            "rows": [r.name for r in selected], "dtypes": dtypes, "tasks": tasks, "modes": modes,
            "repeats": repeats, "steps": steps, "batch_size": batch_size,
            "lr": LR, "betas": list(BETAS), "eps": EPS, "weight_decay": WEIGHT_DECAY,
            "spread": "min-max over repeats", "torch_compile": "model compiled, optimizer step eager",
        },
        "rows": [],
    }
    jobs = [(row, dtype, task) for row in selected for dtype in dtypes for task in tasks] if "sweep" in sections else []
    for i, (row, dtype, task) in enumerate(jobs, 1):
        batch = batch_size or row.batch
        row_repeats, row_steps = repeats or row.repeats, steps or row.steps(task)
        progress(f"[{i}/{len(jobs)}] {row.name} {dtype} {task}, batch {batch}, {row_repeats} x {row_steps} steps ...")
        record = bench_one(row, dtype, task, modes, row_repeats, row_steps, batch)
        summarize(record, matmul_peak)
        report["rows"].append(record)
        progress(f"[{i}/{len(jobs)}] done in {record['seconds']:.0f} s ({time.perf_counter() - started:.0f} s so far)")
        if json_path:  # after every row: a long sweep interrupted keeps what it measured
            write_json(json_path, report)
    if jobs:
        yield ""
        yield format_table(report["rows"])
        yield ""
        yield format_notes(report["rows"], {(r["repeats"], r["steps"]) for r in report["rows"]})
    for section in sections:
        if section != "sweep":
            progress(f"measuring the {section} section ...")
            report[section], text = measure_section(section, rows, repeats, steps, batch_size, data_dir)
            yield ""
            yield text
            if json_path:
                write_json(json_path, report)
    report["seconds"] = time.perf_counter() - started
    yield f"total {report['seconds']:.0f} s"
    if json_path:
        write_json(json_path, report)
        yield f"wrote {json_path}"


def measure_section(
    section: str,
    rows: list[str] | None = None,
    repeats: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    data_dir: str | None = None,
) -> tuple[dict[str, Any], str]:
    """(JSON-able result, Markdown) of one of the sections beside the sweep; profile and ablation measure the
    first of `rows` (default: tutorial)."""
    if section == "host":
        from vit_bench.host import format_host, measure_host

        result = measure_host(repeats=repeats or 5, data_dir=data_dir)
        return result, format_host(result)
    if section == "decode":
        from vit_bench.decode import format_decode, measure_decode

        result = measure_decode(repeats=repeats or 3)
        return result, format_decode(result)
    if section == "compile":
        from vit_bench.compile import format_compile, measure_compile

        result = measure_compile()
        return result, format_compile(result)
    if section == "dispatch":
        from vit_bench.dispatch import format_dispatch, measure_dispatch

        result = measure_dispatch(repeats=repeats or 5)
        return result, format_dispatch(result)
    if section == "profile":
        from vit_bench.profile import format_profile, measure_profile

        row = select_rows(rows or ["tutorial"])[0]
        result = measure_profile(row.config, row.name, batch_size or row.batch)
        return result, format_profile(result)
    from vit_bench.ablation import format_ablation, measure_ablation

    row = select_rows(rows or ["tutorial"])[0]
    result = measure_ablation(row.config, row.name, batch_size or row.batch, repeats or 7, steps or 3)
    return result, format_ablation(result)
