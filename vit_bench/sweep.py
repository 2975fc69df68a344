"""`vit bench`: images/s of the twins' training step and inference, JAX against PyTorch, in one run.

    vit bench                                   # the default sweep (roughly 30 minutes on 2 idle CPU cores)
    vit bench --rows tutorial --dtypes float32 --json bench.json
    vit bench --rows smoke --repeats 1 --steps 1 --modes jax torch     # seconds, for CI

The same rules for every framework:
- same model config, batch and images (random float32, NHWC for JAX and NCHW for PyTorch, the same
  values), already on the device; labels random;
- training step = forward + cross-entropy (float32) + backward + AdamW (lr 1e-3, betas (0.9, 0.999),
  eps 1e-8, weight decay 0.05 on weights only: not biases, norms, pos_embed, cls_token). JAX: one
  `jax.jit` of all of it with the state donated. PyTorch: `loss.backward()`, `opt.step()`,
  `opt.zero_grad(set_to_none=True)`; under torch.compile the model is compiled, the optimizer step
  stays eager;
- inference = forward to the logits (JAX: jit; PyTorch: under `torch.inference_mode()`);
- float32 parameters always; bfloat16 rows compute in bfloat16 (JAX: `ViT(config, dtype=bfloat16)`,
  PyTorch: `torch.autocast`), keeping float32 master weights;
- compilation and warm-up are excluded from the timings and reported apart: JAX's
  `jit(f).lower(...).compile()` seconds, then one warm-up step; PyTorch eager: one warm-up step
  (it also creates AdamW's state); torch.compile: its first call (compilation and one step);
- PyTorch uses one intra-op thread per core (as XLA's CPU backend does by default);
- the frameworks alternate: each of the R repeats runs one untimed step and times K steps of JAX,
  then the same for PyTorch eager and torch.compile, so that a noisy neighbour slows all of them alike
  (the untimed step gives each framework its memory back after the other's step);
- one process for all: `vit` runs with large buffers on transparent huge pages where the machine
  allows it (vit_cli/huge_pages.py), which both frameworks get; the header says which. Speeds are the median
  and the range (min-max) over the repeats; every repeat's seconds are in the JSON.

Achieved FLOP/s = analytic FLOPs per image (`vit_cli.flops`) x images/s, and its fraction of this
machine's matmul peak for the dtype: the faster of JAX and PyTorch on large square matmuls.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

from vit_cli import huge_pages
from vit_cli.flops import matmul_flops, task_flops
from vit_spec import ViTConfig, atomic_path

MODES = ("jax", "torch", "torch-compile")
TASKS = ("train", "inference")
DTYPES = ("float32", "bfloat16")
# AdamW as our default recipe has it (train/recipes.py), the same in optax and torch.optim.
LR, BETAS, EPS, WEIGHT_DECAY = 1e-3, (0.9, 0.999), 1e-8, 0.05
# Parameter names that weight decay leaves alone besides biases and norms (train.optim.NO_DECAY_NAMES).
NO_DECAY_NAMES = ("pos_embed", "cls_token")
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


def _check_choices(flag: str, values: list[str], valid: tuple[str, ...]) -> list[str]:
    unknown = [v for v in values if v not in valid]
    if unknown:
        raise ValueError(f"unknown {flag} {unknown}: use some of {list(valid)}")
    return list(dict.fromkeys(values))  # drop repeats, keep the order


def _cpu_count() -> int:
    """Cores this process may run on (the affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: above the core count, neighbours were competing for the cores."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- The runners: one per framework mode; each times K steps of its task. ---


def adamw_train_step(model: Any, tx: Any) -> Callable:
    """`(state, images, labels, key) -> (state, loss)`: forward, float32 cross-entropy, backward, optax update.

    The step every JAX measurement of `vit bench` times (the sweep, the ablation, compile time).
    """
    import jax
    import jax.numpy as jnp
    import optax

    def train_step(state: tuple, images: jax.Array, labels: jax.Array, key: jax.Array) -> tuple:
        params, opt_state = state

        def loss_fn(params: Any) -> jax.Array:
            logits = model.apply({"params": params}, images, train=True, rngs={"dropout": key})
            # The loss in float32 also under bfloat16 compute, as in train/step.py.
            return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return train_step


class JaxRunner:
    """The jitted JAX step (train: donated state) or forward (inference) of one row and dtype."""

    def __init__(self, config: ViTConfig, dtype: str, task: str, images_nhwc: np.ndarray, labels: np.ndarray):
        import jax
        import jax.numpy as jnp
        import optax

        from jax_vit import ViT, init_params
        from train.optim import weight_decay_mask

        self.jax = jax
        device = jax.devices()[0]
        model = ViT(config, dtype=jnp.bfloat16 if dtype == "bfloat16" else None)
        params = jax.device_put(init_params(config, 0), device)
        images = jax.device_put(images_nhwc, device)
        labels = jax.device_put(labels.astype(np.int32), device)
        start = time.perf_counter()
        if task == "train":
            tx = optax.adamw(LR, *BETAS, EPS, weight_decay=WEIGHT_DECAY, mask=weight_decay_mask)
            # Dropout rates are 0 in the benched configs; train=True still needs its rng.
            key = jax.device_put(jax.random.key(0), device)

            train_step = adamw_train_step(model, tx)

            self.state = (params, tx.init(params))
            compiled = jax.jit(train_step, donate_argnums=(0,)).lower(self.state, images, labels, key).compile()
            self.compiled = compiled

            def run() -> Any:
                self.state, loss = compiled(self.state, images, labels, key)
                return loss

        else:
            forward = lambda params, images: model.apply({"params": params}, images)
            compiled = jax.jit(forward).lower(params, images).compile()
            run = lambda: compiled(params, images)
        self.compile_s = time.perf_counter() - start
        self._run = run

    def steps(self, k: int) -> None:
        out = None
        for _ in range(k):
            out = self._run()
        # Dispatch is asynchronous: wait for the last step (each train step waits for the one before).
        self.jax.block_until_ready((out, getattr(self, "state", None)))


class TorchRunner:
    """PyTorch eager or torch.compile: the training step (AdamW) or inference of one row and dtype."""

    def __init__(
        self, config: ViTConfig, dtype: str, task: str, images_nchw: np.ndarray, labels: np.ndarray, compile: bool
    ):
        import torch
        import torch.nn.functional as F

        import torch_vit

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(0)
        model = torch_vit.ViT(config).to(self.device)
        images = torch.from_numpy(images_nchw).to(self.device)
        labels_t = torch.from_numpy(labels.astype(np.int64)).to(self.device)
        autocast = (
            (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16))
            if dtype == "bfloat16"
            else contextlib.nullcontext
        )
        if compile:
            # A fresh dynamo cache: compiles of earlier rows would otherwise count towards its
            # recompile limit, past which torch.compile silently falls back to eager.
            torch._dynamo.reset()
            forward: Callable = torch.compile(model)
        else:
            forward = model
        if task == "train":
            model.train()  # dropout rates are 0: the same computation as eval, as in JAX's train=True
            decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n not in NO_DECAY_NAMES]
            no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and n not in NO_DECAY_NAMES)]
            opt = torch.optim.AdamW(
                [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
                lr=LR, betas=BETAS, eps=EPS,
            )

            def run() -> None:
                with autocast():
                    logits = forward(images)
                loss = F.cross_entropy(logits.float(), labels_t)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

        else:
            model.eval()

            def run() -> None:
                with torch.inference_mode(), autocast():
                    forward(images)

        self._run = run
        self.compile_s: float | None = None
        if compile:
            # torch.compile compiles on the first call (the backward at the first backward): time it.
            start = time.perf_counter()
            self.steps(1)
            self.compile_s = time.perf_counter() - start

    def steps(self, k: int) -> None:
        for _ in range(k):
            self._run()
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()


def make_runner(mode: str, config: ViTConfig, dtype: str, task: str, images_nhwc: np.ndarray, labels: np.ndarray):
    """The runner of `mode`, compiled (compile_s set where there is a compilation)."""
    if mode == "jax":
        return JaxRunner(config, dtype, task, images_nhwc, labels)
    images_nchw = np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))
    return TorchRunner(config, dtype, task, images_nchw, labels, compile=mode == "torch-compile")


# --- The matmul peak. ---


def measure_peak(dtypes: list[str], repeats: int = 5) -> dict[str, dict[str, Any]]:
    """Per dtype: FLOP/s of large square matmuls in JAX and PyTorch (median of `repeats`), and the best."""
    import jax
    import jax.numpy as jnp
    import torch

    torch_device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    jax_on_cpu = jax.devices()[0].platform == "cpu"
    # Large enough to run at full speed, small enough to take well under a second on 2 CPU cores.
    n = 2048 if jax_on_cpu and torch_device.type == "cpu" else 8192
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), np.float32) for _ in range(2))
    peak = {}
    for dtype in dtypes:
        ja, jb = (jax.device_put(x.astype(jnp.bfloat16 if dtype == "bfloat16" else np.float32)) for x in (a, b))
        matmul = jax.jit(jnp.matmul).lower(ja, jb).compile()
        tdtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
        ta, tb = (torch.from_numpy(x).to(torch_device, tdtype) for x in (a, b))

        def jax_once() -> None:
            matmul(ja, jb).block_until_ready()

        def torch_once() -> None:
            torch.matmul(ta, tb)
            if torch_device.type == "cuda":
                torch.cuda.synchronize()

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
        "load_average_before": _load_average(),
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
            _progress(f"    {mode} failed after {elapsed:.1f} s, skipped: {entry['error'][:300]}")
            continue
        compiled = f", compile {entry['compile_s']:.1f} s" if entry["compile_s"] is not None else ""
        warmup = f", warm-up {entry['warmup_s']:.1f} s" if WARMUP_STEPS[mode] else ""
        _progress(f"    {mode}: ready{compiled}{warmup}")
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
                _progress(f"    {mode} failed in repeat {r + 1}, skipped from here: {record['modes'][mode]['error'][:300]}")
                del runners[mode]
                continue
            record["modes"][mode]["seconds"].append(time.perf_counter() - start)
        done = ", ".join(f"{m} {steps * batch / record['modes'][m]['seconds'][-1]:.1f}" for m in runners)
        _progress(f"    repeat {r + 1}/{repeats}: images/s {done}")
    runners.clear()
    runner = None  # the loop variables hold the last runner too
    _free_memory()
    for mode, entry in record["modes"].items():
        if entry.get("seconds") and "error" not in entry:
            entry["images_per_s"] = _spread([steps * batch / s for s in entry["seconds"]])
        elif entry.get("seconds"):  # failed after some repeats: keep the raw timings, no summary
            entry["partial"] = True
    record["seconds"] = time.perf_counter() - started
    record["load_average_after"] = _load_average()
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


# --- Reporting. ---


def machine_info() -> dict[str, Any]:
    """Devices, versions and threads: the header of the report and of the JSON."""
    import jax
    import jaxlib
    import torch

    import flax
    import optax

    torch_device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_count": _cpu_count(),
        "load_average": _load_average(),
        "jax_devices": [str(d) for d in jax.devices()],
        "jax_device_kind": jax.devices()[0].device_kind,
        "torch_device": torch.cuda.get_device_name() if torch_device == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "malloc": huge_pages.status(),
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "torch": torch.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
        },
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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
    if peak:
        for dtype, p in peak.items():
            lines.append(
                f"matmul peak {dtype}: {p['gflops']:.0f} GFLOP/s ({p['size']}x{p['size']} matmuls, median of "
                f"{len(p['seconds']['jax'])}: JAX {p['jax_gflops']:.0f}, PyTorch {p['torch_gflops']:.0f})"
            )
    return "\n".join(lines)


def _speed_cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    if "images_per_s" not in entry:
        return "failed" if "error" in entry else "-"
    s = entry["images_per_s"]
    return f"{_num(s['median'])} ({_num(s['min'])}-{_num(s['max'])})"


def _num(x: float) -> str:
    """3 significant figures at most, no exponent: 1234, 152, 15.2, 1.52, 0.152."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def _flops_cell(entry: dict[str, Any] | None, label: str = "") -> str:
    if not entry or "gflops" not in entry:
        return "-"
    fraction = f", {100 * entry['peak_fraction']:.0f}%" if entry.get("peak_fraction") is not None else ""
    inside = f"{fraction[2:]}{', ' + label if label else ''}" if fraction else label
    return f"{_num(entry['gflops'])} ({inside})" if inside else _num(entry["gflops"])


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
        "GFLOP/s: analytic FLOPs per image (vit_cli/flops.py) x img/s; torch.compile: model compiled, AdamW eager; "
        "compile s: torch.compile's first call, shorter where inductor's on-disk cache holds kernels of an earlier run."
    ]
    lines.append("repeats x steps: " + ", ".join(f"{r} x {s}" for r, s in sorted(repeats_steps)))
    for rec in records:
        for mode, entry in rec["modes"].items():
            if "error" in entry:
                lines.append(f"{rec['row']} {rec['dtype']} {rec['task']}: {mode} failed: {entry['error'][:500]}")
    return "\n".join(lines)


def _write_json(path: str, report: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")


# --- The command. ---


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="images/s of the training step and inference: JAX, PyTorch eager and torch.compile, alternated",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rows", nargs="+", metavar="ROW", help=f"rows to run (default: {' '.join(DEFAULT_ROWS)}; also: smoke)")
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), metavar="DTYPE", help="float32 and/or bfloat16 (default: both)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), metavar="TASK", help="train and/or inference (default: both)")
    p.add_argument("--modes", nargs="+", default=list(MODES), metavar="MODE", help="jax, torch, torch-compile (default: all)")
    p.add_argument("--repeats", type=int, help="timed repeats per mode (default: per row, 3-5)")
    p.add_argument("--steps", type=int, help="steps per timed repeat (default: per row and task, 1-6)")
    p.add_argument("--batch-size", type=int, help="override every row's batch")
    p.add_argument("--json", metavar="FILE", help="write machine, versions, peak and every timing here (atomically)")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak (and the %% of peak)")
    p.add_argument("--sections", nargs="+", default=["sweep"], metavar="SECTION",
                   help="what to measure: sweep (the table above), host (data path and augmentation against "
                   "the step), compile (compile time and memory against depth, with and without nn.scan and "
                   "remat), ablation (each hand-written piece of the JAX model swapped back), profile (per-op time of the JAX "
                   "training step of the first --rows model, grouped by layer part), dispatch (vit train's step fed from the "
                   "host against --steps-per-dispatch K from the device) (default: sweep)")
    p.add_argument("--data-dir", help="tfds data directory for the host section (default: $TFDS_DATA_DIR)")
    p.add_argument("--inference", action="store_true",
                   help="measure inference instead (vit_cli/bench_inference.py): batch-1 latency and --batch-size "
                   "(default 256) throughput of JAX jit, PyTorch eager, torch.compile and onnxruntime, alternated, for "
                   "--rows (default: tutorial S/16); --repeats rounds (default 5, 3 for big models), --steps calls "
                   "per throughput timing (default 1)")
    p.add_argument("--calls", type=int, help="--inference: timed batch-1 calls per runtime and round (default 20)")
    p.set_defaults(run=_run)


SECTIONS = ("sweep", "host", "compile", "ablation", "profile", "dispatch")


def _run(args: argparse.Namespace) -> int:
    if args.inference:
        from vit_cli.bench_inference import run

        return run(args)
    sections = _check_choices("--sections", args.sections, SECTIONS)
    rows = select_rows(args.rows)
    dtypes = _check_choices("--dtypes", args.dtypes, DTYPES)
    tasks = _check_choices("--tasks", args.tasks, TASKS)
    modes = _check_choices("--modes", args.modes, MODES)
    for flag, value in (("--repeats", args.repeats), ("--steps", args.steps), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")

    # On a GPU, JAX would otherwise take 75% of its memory at start, leaving PyTorch short.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import torch

    # The same threads for both frameworks: XLA's CPU backend uses every core.
    torch.set_num_threads(_cpu_count())
    if torch.cuda.is_available():
        # JAX's default float32 matmuls on NVIDIA GPUs use TF32; let PyTorch do the same.
        torch.set_float32_matmul_precision("high")

    started = time.perf_counter()
    machine = machine_info()
    peak = None
    if not args.no_peak:
        _progress("measuring the matmul peak ...")
        peak = measure_peak(dtypes)
    print(format_header(machine, peak), flush=True)
    report: dict[str, Any] = {
        "machine": machine,
        "peak": peak,
        "settings": {
            "rows": [r.name for r in rows], "dtypes": dtypes, "tasks": tasks, "modes": modes,
            "repeats": args.repeats, "steps": args.steps, "batch_size": args.batch_size,
            "lr": LR, "betas": list(BETAS), "eps": EPS, "weight_decay": WEIGHT_DECAY,
            "spread": "min-max over repeats", "torch_compile": "model compiled, optimizer step eager",
        },
        "rows": [],
    }
    jobs = [(row, dtype, task) for row in rows for dtype in dtypes for task in tasks] if "sweep" in sections else []
    for i, (row, dtype, task) in enumerate(jobs, 1):
        batch = args.batch_size or row.batch
        repeats, steps = args.repeats or row.repeats, args.steps or row.steps(task)
        _progress(f"[{i}/{len(jobs)}] {row.name} {dtype} {task}, batch {batch}, {repeats} x {steps} steps ...")
        record = bench_one(row, dtype, task, modes, repeats, steps, batch)
        summarize(record, peak)
        report["rows"].append(record)
        _progress(f"[{i}/{len(jobs)}] done in {record['seconds']:.0f} s ({time.perf_counter() - started:.0f} s so far)")
        if args.json:  # after every row: a long sweep interrupted keeps what it measured
            _write_json(args.json, report)
    if jobs:
        print()
        print(format_table(report["rows"]))
        print()
        print(format_notes(report["rows"], {(r["repeats"], r["steps"]) for r in report["rows"]}))
    for section in sections:
        if section != "sweep":
            _progress(f"measuring the {section} section ...")
            report[section], text = _measure_section(section, args)
            print()
            print(text, flush=True)
            if args.json:
                _write_json(args.json, report)
    report["seconds"] = time.perf_counter() - started
    print(f"total {report['seconds']:.0f} s")
    if args.json:
        _write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


def _measure_section(section: str, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """(JSON-able result, Markdown) of one of the sections beside the sweep."""
    if section == "host":
        from vit_cli.bench_host import format_host, measure_host

        result = measure_host(repeats=args.repeats or 5, data_dir=args.data_dir)
        return result, format_host(result)
    if section == "compile":
        from vit_cli.bench_compile import format_compile, measure_compile

        result = measure_compile()
        return result, format_compile(result)
    if section == "dispatch":
        from vit_cli.bench_dispatch import format_dispatch, measure_dispatch

        result = measure_dispatch(repeats=args.repeats or 5)
        return result, format_dispatch(result)
    if section == "profile":
        from vit_cli.bench_profile import format_profile, measure_profile

        row = select_rows(args.rows or ["tutorial"])[0]
        result = measure_profile(row.config, row.name, args.batch_size or row.batch)
        return result, format_profile(result)
    from vit_cli.bench_ablation import format_ablation, measure_ablation

    row = select_rows(args.rows or ["tutorial"])[0]
    result = measure_ablation(row.config, row.name, args.batch_size or row.batch, args.repeats or 7, args.steps or 3)
    return result, format_ablation(result)
