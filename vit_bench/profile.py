"""`vit bench --sections profile`: where the JAX training step spends its time, op by op.

Compiles the same training step as the sweep (vit_bench.jax_runner.JaxRunner), runs a few steps under
`jax.profiler.trace` (Perfetto trace, no TensorBoard needed), and attributes each executed XLA
fusion to the model code that produced it through the HLO's `op_name` metadata: which layer part
(attention, the dense layers, LayerNorm, GELU, the optimizer, ...) and forward or backward. Also
prints XLA's own cost analysis (FLOPs, bytes accessed) of the compiled program.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile
from typing import Any

import numpy as np

from vit_spec import ViTConfig

# (group, pattern on the op_name with "blocks_N" for any block), first match wins.
GROUPS = (
    ("attention: q/k/v and output dense", r"attn/(qkv|proj)/"),
    ("attention: scores, softmax, layout", r"/attn/"),
    ("MLP dense", r"mlp/fc[12]/"),
    ("GELU", r"/mlp/"),
    ("LayerNorm", r"/norm[12]?/"),
    ("patch embedding", r"patch_embed/"),
    ("optimizer update", r"^(?!.*jvp\().*"),
)


def _group(op_name: str) -> str:
    for group, pattern in GROUPS:
        if re.search(pattern, op_name):
            return group
    return "other (embedding, head, loss)"


def _op_names(hlo_text: str) -> dict[str, str]:
    """Instruction name -> op_name metadata, for every instruction of the optimised HLO."""
    names = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
        if m:
            found = re.search(r'op_name="([^"]*)"', line)
            names[m.group(1)] = found.group(1) if found else ""
    return names


def measure_profile(
    config: ViTConfig, model: str = "tutorial", batch_size: int = 128, steps: int = 5, top: int = 15
) -> dict[str, Any]:
    """Per-group and per-op time of the JAX float32 training step of `config` (named `model`)."""
    import jax

    from vit_bench.measure import make_runner

    h, w = config.image_hw
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch_size, h, w, config.channels)).astype(np.float32)
    labels = rng.integers(0, max(config.num_classes, 1), batch_size).astype(np.int32)
    runner = make_runner("jax", config, "float32", "train", images, labels)
    names = _op_names(runner.compiled.as_text())
    cost = runner.compiled.cost_analysis()
    runner.steps(2)
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            runner.steps(steps)
        trace_file = sorted(glob.glob(f"{tmp}/**/perfetto_trace.json.gz", recursive=True))[-1]
        with gzip.open(trace_file) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in names:
            per_op[e["name"]] += e.get("dur", 0)
    total = sum(per_op.values())
    groups: collections.Counter = collections.Counter()
    directions: collections.Counter = collections.Counter()
    for op, us in per_op.items():
        name = names[op]
        groups[_group(name)] += us
        directions["backward" if "transpose(jvp(" in name else "forward" if "jvp(" in name else "update"] += us
    strip = lambda name: re.sub(r"blocks_\d+", "blocks_N", re.sub(r"^jit\(\w+\)/", "", name))
    return {
        "model": model,
        "batch_size": batch_size,
        "steps": steps,
        "op_ms_per_step": total / steps / 1000,
        "xla_cost_analysis": {k: float(v) for k, v in cost.items() if k in ("flops", "bytes accessed", "transcendentals")},
        "groups": [{"group": g, "ms": us / steps / 1000, "share": us / total} for g, us in groups.most_common()],
        "directions": {d: us / total for d, us in directions.items()},
        "top_ops": [
            {"op": op, "code": strip(names[op]), "ms": us / steps / 1000, "share": us / total}
            for op, us in per_op.most_common(top)
        ],
    }


def format_profile(result: dict[str, Any]) -> str:
    """Markdown: the groups, then the heaviest ops."""
    cost = result["xla_cost_analysis"]
    lines = [
        f"Profile of the JAX training step, {result['model']} model, batch {result['batch_size']}, float32: "
        f"{result['op_ms_per_step']:.1f} ms of XLA ops per step (summed over threads), "
        + ", ".join(f"{d} {100 * s:.0f}%" for d, s in result["directions"].items())
        + f"; XLA cost analysis {cost.get('flops', 0) / 1e9:.1f} GFLOP, {cost.get('bytes accessed', 0) / 1e9:.2f} GB accessed",
        "",
        "| part of the model | ms/step | share |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {g['group']} | {g['ms']:.2f} | {100 * g['share']:.1f}% |" for g in result["groups"]]
    lines += ["", "| heaviest XLA ops | from | ms/step | share |", "| --- | --- | ---: | ---: |"]
    lines += [f"| `{o['op']}` | `{o['code'][-70:]}` | {o['ms']:.2f} | {100 * o['share']:.1f}% |" for o in result["top_ops"]]
    return "\n".join(lines)
