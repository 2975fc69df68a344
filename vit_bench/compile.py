"""Compile time and memory of the JAX train step against depth: blocks in a Python loop or in `nn.scan`,
with and without rematerialisation (`vit bench --sections compile`).

    python -m vit_bench.compile                              # S-width ViT at depths 4, 12, 24
    python -m vit_bench.compile --depths 2 4 --width 64 --heads 2 --mlp-dim 128 --batch 8

For each depth and layout: `jax.jit(train_step).lower(...)` (tracing and lowering to StableHLO) and
`.compile()` (XLA) seconds, apart, and the compiled program's memory (`compiled.memory_analysis()`):
temp (activations kept for the backward pass, workspace), argument (parameters, optimizer state,
batch) and output bytes. The step is forward + cross-entropy (float32) + backward + optax AdamW
(weight decay on weights only), train mode (stochastic depth on), the state donated; its inputs are
shapes only (`jax.ShapeDtypeStruct`), so nothing is allocated or run, and any depth or batch can be
measured on any machine. Every layout gets a fresh function, so no in-memory cache serves a later row; JAX's
persistent cache (JAX_COMPILATION_CACHE_DIR), where on, would serve repeats: the table then says so.

What to expect: the loop's program holds one copy of the block per layer, so tracing, lowering and
XLA's passes all grow with depth; scan's holds one block whatever the depth. Remat keeps only each
block's input for the backward pass (recomputing the rest), so its temp bytes drop, most where
activations dominate (many tokens, big batch).
"""

from __future__ import annotations

import argparse
import gc
import platform
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vit_bench.jax_runner import adamw_train_step, persistent_cache, persistent_cache_note

# name -> ViT attributes. "loop" is ViT's default: one module per block, blocks_0 ... blocks_{L-1}.
LAYOUTS: dict[str, dict[str, bool]] = {
    "loop": dict(scan_blocks=False, remat=False),
    "scan": dict(scan_blocks=True, remat=False),
    "loop+remat": dict(scan_blocks=False, remat=True),
    "scan+remat": dict(scan_blocks=True, remat=True),
}


def measure_compile(
    depths: tuple[int, ...] = (4, 12, 24),
    width: int = 384,
    heads: int = 6,
    mlp_dim: int = 1536,
    image_size: int = 32,
    patch_size: int = 4,
    batch: int = 128,
    layouts: tuple[str, ...] = tuple(LAYOUTS),
    dtype: str = "float32",
    drop_path: float = 0.1,
    repeats: int = 1,
) -> dict[str, Any]:
    """Lowering and compile seconds and memory of the train step for each depth and layout.

    Args:
        depths: encoder depths to measure.
        width, heads, mlp_dim: the block's shape (default: ViT-S's).
        image_size, patch_size: the input (default: 32x32 CIFAR images in 4x4 patches, 65 tokens).
        batch: images per step (memory scales with it; compile time hardly does).
        layouts: names from LAYOUTS.
        dtype: "float32" or "bfloat16" compute (parameters float32 either way).
        drop_path: stochastic depth of the last block (train mode: the rates are in the program).
        repeats: measurements per row; the seconds reported are the median, all of them kept.

    Returns:
        {"device", "jax", "shape": {...}, "rows": [{"depth", "layout", "params", "lower_s", "compile_s",
        "lower_s_all", "compile_s_all", "temp_bytes", "argument_bytes", "output_bytes", "alias_bytes"}]}.
    """
    from jax_vit import ViT
    from train.jax_loop.optim import weight_decay_mask
    from vit_spec import ViTConfig

    unknown = [name for name in layouts if name not in LAYOUTS]
    if unknown:
        raise ValueError(f"unknown layouts {unknown}: use some of {list(LAYOUTS)}")
    compute_dtype = {"float32": None, "bfloat16": jnp.bfloat16}[dtype]
    tx = optax.adamw(1e-3, weight_decay=0.05, mask=weight_decay_mask)
    images = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    key = jax.eval_shape(lambda: jax.random.key(0))
    rows = []
    for depth in depths:
        config = ViTConfig(image_size=image_size, patch_size=patch_size, width=width, depth=depth, heads=heads,
                           mlp_dim=mlp_dim, num_classes=10, drop_path=drop_path)
        for name in layouts:
            model = ViT(config, dtype=compute_dtype, **LAYOUTS[name])
            params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(images.shape))["params"])
            state = (params, jax.eval_shape(tx.init, params))
            lower_s, compile_s = [], []
            for _ in range(repeats):
                gc.collect()
                step = adamw_train_step(model, tx)  # a new function: no trace or compile cache applies
                start = time.perf_counter()
                lowered = jax.jit(step, donate_argnums=(0,)).lower(state, images, labels, key)
                lowered_at = time.perf_counter()
                compiled = lowered.compile()
                lower_s.append(lowered_at - start)
                compile_s.append(time.perf_counter() - lowered_at)
            memory = compiled.memory_analysis()
            rows.append({
                "depth": depth,
                "layout": name,
                "params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(params))),
                "lower_s": float(np.median(lower_s)),
                "compile_s": float(np.median(compile_s)),
                "lower_s_all": lower_s,
                "compile_s_all": compile_s,
                "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
                "argument_bytes": getattr(memory, "argument_size_in_bytes", None),
                "output_bytes": getattr(memory, "output_size_in_bytes", None),
                "alias_bytes": getattr(memory, "alias_size_in_bytes", None),
            })
            del lowered, compiled
    device = jax.devices()[0]
    return {
        "device": f"{jax.device_count()} x {device.device_kind} ({device.platform})",
        "host": platform.node(),
        "jax": jax.__version__,
        "compilation_cache": persistent_cache(),
        "shape": dict(width=width, heads=heads, mlp_dim=mlp_dim, image_size=image_size, patch_size=patch_size,
                      tokens=(image_size // patch_size) ** 2 + 1, batch=batch, dtype=dtype, drop_path=drop_path,
                      repeats=repeats),
        "rows": rows,
    }


def format_compile(result: dict[str, Any]) -> str:
    """A Markdown table of measure_compile's result: one row per depth and layout."""
    s = result["shape"]
    mib = lambda b: "" if b is None else f"{b / 2**20:,.1f}"
    lines = [
        f"Train step (forward, backward, AdamW) on {result['device']}, jax {result['jax']}: width {s['width']}, "
        f"{s['heads']} heads, MLP {s['mlp_dim']}, {s['image_size']}x{s['image_size']} images in {s['patch_size']}x"
        f"{s['patch_size']} patches ({s['tokens']} tokens), batch {s['batch']}, {s['dtype']}"
        + (f", median of {s['repeats']}" if s["repeats"] > 1 else ""),
        "",
        "| depth | layout | params | lower s | compile s | total s | temp MiB | argument MiB | output MiB |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    if result.get("compilation_cache"):
        lines[1:1] = [persistent_cache_note(result["compilation_cache"])]
    for r in result["rows"]:
        lines.append(
            f"| {r['depth']} | {r['layout']} | {r['params'] / 1e6:.1f}M | {r['lower_s']:.2f} | {r['compile_s']:.2f} | "
            f"{r['lower_s'] + r['compile_s']:.2f} | {mib(r['temp_bytes'])} | {mib(r['argument_bytes'])} | "
            f"{mib(r['output_bytes'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 12, 24])
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--mlp-dim", type=int, default=1536)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    result = measure_compile(tuple(args.depths), args.width, args.heads, args.mlp_dim, args.image_size, args.patch_size,
                             args.batch, tuple(args.layouts), args.dtype, repeats=args.repeats)
    print(format_compile(result))
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
