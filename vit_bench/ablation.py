"""`vit bench --sections ablation`: what each of the JAX model's hand-written pieces buys, measured in one run.

The JAX ViT replaces three library pieces with versions whose gradients are written out
(jax_vit/attention.py, jax_vit/layer_norm.py, jax_vit/gelu.py). This swaps each back for the library
piece it replaced, one at a time and all at once, rebuilds the same jitted training step
(forward, cross-entropy, backward, AdamW) and times every variant alternately in one process, with
PyTorch eager alongside for scale. The math is the same in every variant: only speed differs.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Iterator

import numpy as np

from vit_spec import ViTConfig

# Variant name -> the library pieces put back (names in jax_vit.model).
VARIANTS: dict[str, tuple[str, ...]] = {
    "this project": (),
    "flax LayerNorm": ("LayerNorm",),
    "jax.nn.gelu": ("gelu",),
    "jax.nn.dot_product_attention": ("packed_attention",),
    "all three library pieces": ("LayerNorm", "gelu", "packed_attention"),
}


def _library_pieces() -> dict[str, Any]:
    """The library functions the model used before, with the signatures jax_vit.model calls."""
    import flax.linen as nn
    import jax

    def layer_norm(*, epsilon: float, dtype: Any, name: str) -> nn.Module:
        return nn.LayerNorm(epsilon=epsilon, use_fast_variance=False, dtype=dtype, name=name)

    def gelu(x: jax.Array, approximate: bool) -> jax.Array:
        return nn.gelu(x, approximate=approximate)

    def attention(qkv: jax.Array, scale: float) -> jax.Array:
        return jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], scale=scale)

    return {"LayerNorm": layer_norm, "gelu": gelu, "packed_attention": attention}


@contextlib.contextmanager
def _pieces_put_back(names: tuple[str, ...]) -> Iterator[None]:
    import jax_vit.model as model_module

    library = _library_pieces()
    saved = {name: getattr(model_module, name) for name in names}
    try:
        for name in names:
            setattr(model_module, name, library[name])
        yield
    finally:
        for name, value in saved.items():
            setattr(model_module, name, value)


def measure_ablation(
    config: ViTConfig, model: str = "tutorial", batch_size: int = 128, repeats: int = 7, steps: int = 3
) -> dict:
    """Images/s of the training step of every variant and of PyTorch eager, alternated, median of repeats."""
    from vit_bench.measure import make_runner

    h, w = config.image_hw
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch_size, h, w, config.channels)).astype(np.float32)
    labels = rng.integers(0, max(config.num_classes, 1), batch_size).astype(np.int32)
    runners = {}
    for name, names in VARIANTS.items():
        with _pieces_put_back(names):  # the runner compiles here: the program is the variant's
            runners[name] = make_runner("jax", config, "float32", "train", images, labels)
    runners["PyTorch eager"] = make_runner("torch", config, "float32", "train", images, labels)
    for runner in runners.values():  # warm-up
        runner.steps(1)
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.steps(steps)
            seconds[name].append((time.perf_counter() - start) / steps)
    rows = []
    base = statistics.median(seconds["this project"])
    for name, values in seconds.items():
        median = statistics.median(values)
        rows.append({
            "variant": name,
            "ms_per_step": 1000 * median,
            "ms_min": 1000 * min(values),
            "ms_max": 1000 * max(values),
            "images_per_s": batch_size / median,
            "time_vs_this_project": median / base,
        })
    return {"model": model, "batch_size": batch_size, "repeats": repeats, "steps": steps, "rows": rows}


def format_ablation(result: dict) -> str:
    """A Markdown table of measure_ablation's result."""
    lines = [
        f"Training step, {result['model']} model, batch {result['batch_size']}, float32; median of "
        f"{result['repeats']} alternated repeats of {result['steps']} steps (min..max)",
        "",
        "| variant | ms/step | images/s | time vs this project |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['variant']} | {r['ms_per_step']:.1f} ({r['ms_min']:.1f}..{r['ms_max']:.1f}) | "
            f"{r['images_per_s']:.0f} | {r['time_vs_this_project']:.2f}x |"
        )
    return "\n".join(lines)
