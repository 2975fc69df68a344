"""What every part of `vit bench` shares: the rules of a measurement, the runners, the machine, the output.

- the training step's settings, the same for both frameworks (AdamW as our default recipe has it);
- the runners, by name: `make_runner("jax" | "torch" | "torch-compile", ...)` builds the compiled step
  or forward of vit_bench.jax_runner or vit_bench.torch_runner (imported when asked for: this module
  imports neither framework, and `vit --help` stays quick);
- the matmul peak (`measure_peak`), machine and versions (`machine_info`, `format_header`);
- medians and spreads, load average, core count, progress on stderr, the JSON written atomically.

The section modules (sweep, inference, host, compile, ablation, profile, dispatch) import this one;
it imports none of them.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import numpy as np

from vit_bench.flops import matmul_flops
from vit_cli import huge_pages
from vit_spec import ViTConfig, atomic_path
from vit_spec.layout import NO_DECAY_NAMES

# AdamW as our default recipe has it (train/recipes.py), the same in optax and torch.optim.
LR, BETAS, EPS, WEIGHT_DECAY = 1e-3, (0.9, 0.999), 1e-8, 0.05
# Parameter names that weight decay leaves alone besides biases and norms: vit_spec.layout.NO_DECAY_NAMES.


# --- The runners: one per framework mode; each times K steps of its task. ---


def make_runner(
    mode: str, config: ViTConfig, dtype: str, task: str, images_nhwc: np.ndarray, labels: np.ndarray
) -> Any:
    """The runner of `mode` ("jax", "torch" or "torch-compile"), compiled (compile_s set where there is a compilation).

    A runner has `steps(k)` (run k steps, wait for them) and `compile_s` (seconds, or None).
    """
    adamw = dict(lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    if mode == "jax":
        from vit_bench import jax_runner

        return jax_runner.JaxRunner(config, dtype, task, images_nhwc, labels, **adamw)
    from vit_bench import torch_runner

    images_nchw = np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))
    return torch_runner.TorchRunner(
        config, dtype, task, images_nchw, labels, compile=mode == "torch-compile", **adamw,
        no_decay_names=NO_DECAY_NAMES,
    )


# --- The matmul peak. ---


def measure_peak(dtypes: list[str], repeats: int = 5) -> dict[str, dict[str, Any]]:
    """Per dtype: FLOP/s of large square matmuls in JAX and PyTorch (median of `repeats`), and the best."""
    from vit_bench import jax_runner, torch_runner

    # Large enough to run at full speed, small enough to take well under a second on 2 CPU cores.
    n = 2048 if jax_runner.on_cpu() and torch_runner.on_cpu() else 8192
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), np.float32) for _ in range(2))
    peak = {}
    for dtype in dtypes:
        jax_once = jax_runner.matmul(a, b, dtype)
        torch_once = torch_runner.matmul(a, b, dtype)
        seconds: dict[str, list[float]] = {"jax": [], "torch": []}
        jax_once(), torch_once()  # warm-up
        for _ in range(repeats):
            for name, once in (("jax", jax_once), ("torch", torch_once)):
                start = time.perf_counter()
                once()
                seconds[name].append(time.perf_counter() - start)
        flops = matmul_flops(n)
        gflops = {name: flops / statistics.median(s) / 1e9 for name, s in seconds.items()}
        peak[dtype] = {
            "size": n,
            "jax_gflops": gflops["jax"],
            "torch_gflops": gflops["torch"],
            "gflops": max(gflops.values()),
            "seconds": seconds,
        }
    return peak


# --- The machine. ---


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: above the core count, neighbours were competing for the cores."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Devices, versions and threads: the header of the report and of the JSON."""
    from vit_bench import jax_runner, torch_runner

    jax_side, torch_side = jax_runner.machine_info(), torch_runner.machine_info()
    return {
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpu_count": cpu_count(),
        "load_average": load_average(),
        "jax_devices": jax_side["devices"],
        "jax_device_kind": jax_side["device_kind"],
        "jax_compilation_cache": jax_side["compilation_cache"],
        "torch_device": torch_side["device"],
        "torch_threads": torch_side["threads"],
        "torch_interop_threads": torch_side["interop_threads"],
        "malloc": huge_pages.status(),
        "versions": {
            "python": platform.python_version(),
            "jax": jax_side["versions"]["jax"],
            "jaxlib": jax_side["versions"]["jaxlib"],
            "torch": torch_side["version"],
            "flax": jax_side["versions"]["flax"],
            "optax": jax_side["versions"]["optax"],
            "numpy": np.__version__,
        },
    }


def format_header(machine: dict[str, Any], peak: dict[str, dict[str, Any]] | None) -> str:
    v = machine["versions"]
    lines = [
        f"devices: JAX {', '.join(machine['jax_devices'])} ({machine['jax_device_kind']}); PyTorch {machine['torch_device']}",
        f"CPU: {machine['processor']}, {machine['cpu_count']} cores; PyTorch threads {machine['torch_threads']} "
        "(set to the core count); XLA's CPU backend uses one thread per core"
        + (f"; load average {machine['load_average'][0]:.1f}" if machine["load_average"] else ""),
        f"versions: jax {v['jax']}, jaxlib {v['jaxlib']}, torch {v['torch']}, flax {v['flax']}, optax {v['optax']}, "
        f"python {v['python']}",
        f"host memory: {machine.get('malloc', 'unknown')}",
    ]
    if machine.get("jax_compilation_cache"):
        from vit_bench.jax_runner import persistent_cache_note

        lines.append(persistent_cache_note(machine["jax_compilation_cache"]))
    if peak:
        for dtype, p in peak.items():
            lines.append(
                f"matmul peak {dtype}: {p['gflops']:.0f} GFLOP/s ({p['size']}x{p['size']} matmuls, median of "
                f"{len(p['seconds']['jax'])}: JAX {p['jax_gflops']:.0f}, PyTorch {p['torch_gflops']:.0f})"
            )
    return "\n".join(lines)


# --- Numbers and output. ---


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max: how the speeds of the repeats are reported."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def short_number(x: float) -> str:
    """3 significant figures at most, no exponent: 1234, 152, 15.2, 1.52, 0.152."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def progress(message: str) -> None:
    """A progress line on stderr (the results go to stdout)."""
    print(message, file=sys.stderr, flush=True)


def write_json(path: str, report: dict[str, Any]) -> None:
    """The report as JSON at `path`, written atomically (a reader never sees half of it)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
