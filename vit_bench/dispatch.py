"""`vit bench --sections dispatch`: images/s of `vit train`'s step as it is fed: batches from the host,
one step per call (K=1, the default path), against the split on the device and K steps per call
(`--steps-per-dispatch K`).

Every variant runs the real feeding: the host path gathers each batch from the uint8 split in memory
(train.data.memory_batches) and sends it (sharding.global_batch); the device path sends only the
(K, B) rows. The split is CIFAR-10-sized random uint8 (50,000 images). Variants alternate within each
repeat, so a noisy neighbour slows all of them alike; speeds are the median (and range) over repeats.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np


def measure_dispatch(
    model: str = "tutorial",
    recipe_name: str = "tutorial",
    batch_size: int = 128,
    dtype: str = "float32",
    ks: tuple[int, ...] = (1, 8),
    steps: int = 16,
    repeats: int = 5,
    examples: int = 50_000,
) -> dict[str, Any]:
    """Images/s of the host path (K=1) and of the device path at each K, alternated; JSON-able."""
    import jax

    from jax_vit import ViT, init_params
    from train.jax_loop import device_data, sharding
    from train.data import BatchOrder, Split, memory_batches
    from train.jax_loop.optim import make_optimizer
    from train.recipes import get_recipe
    from train.jax_loop.step import TrainState, make_multi_step, make_train_step
    from train.jax_loop.trainer import DTYPES, model_config

    if any(steps % k for k in ks):
        raise ValueError(f"steps {steps} must be a multiple of every K {ks}")
    mesh = sharding.make_mesh()
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (examples, 32, 32, 3), dtype=np.uint8),
                  rng.integers(0, 10, examples).astype(np.int32))
    order = BatchOrder(len(split), batch_size, seed=0)
    recipe = get_recipe(recipe_name, batch_size=batch_size)
    config = model_config(model, recipe, 10, (32, 32, 3))
    tx, schedule = make_optimizer(recipe, order.steps_per_epoch, order.steps_per_epoch * recipe.epochs)
    model = ViT(config, dtype=DTYPES[dtype])
    params = sharding.replicate(mesh, sharding.to_host(init_params(config, 0)))
    state = jax.jit(lambda p: TrainState.create(p, tx), out_shardings=sharding.replicated(mesh))(params)
    key = sharding.replicate(mesh, np.asarray(jax.random.key_data(jax.random.key(0))))
    single = make_train_step(model, tx, schedule, recipe.augment, 10, mesh)
    multi = make_multi_step(model, tx, schedule, recipe.augment, 10, mesh)
    on_device = device_data.put_split(split, mesh)
    step = 0  # the run's step: every variant continues the same run

    def host_path(n: int) -> None:
        nonlocal state, step
        for images, labels in memory_batches(split, order, step, step + n):
            state, _ = single(state, sharding.global_batch(mesh, images, labels), key)
        step += n

    def device_path(k: int):
        def run(n: int) -> None:
            nonlocal state, step
            for start in range(step, step + n, k):
                rows = device_data.global_rows(mesh, device_data.chunk_rows(order, start, k))
                state, _ = multi(state, on_device, rows, key)
            step += n

        return run

    variants = {"host, K=1": host_path, **{f"device, K={k}": device_path(k) for k in ks}}
    for run in variants.values():  # compile, warm up
        run(max(ks))
    jax.block_until_ready(state)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run(steps)
            jax.block_until_ready(state)
            seconds[name].append(time.perf_counter() - start)
    base = statistics.median(seconds["host, K=1"])
    rows = []
    for name, values in seconds.items():
        median = statistics.median(values)
        rows.append({
            "variant": name,
            "images_per_s": steps * batch_size / median,
            "images_per_s_min": steps * batch_size / max(values),
            "images_per_s_max": steps * batch_size / min(values),
            "ms_per_step": 1000 * median / steps,
            "vs_host_k1": base / median,
        })
    return {"model": model, "recipe": recipe_name, "batch_size": batch_size, "dtype": dtype, "steps": steps,
            "repeats": repeats, "device": f"{jax.device_count()} x {jax.devices()[0].device_kind}", "rows": rows}


def format_dispatch(result: dict[str, Any]) -> str:
    """A Markdown table of measure_dispatch's result."""
    lines = [
        f"Feeding the train step: {result['device']}, model {result['model']}, recipe {result['recipe']}, batch "
        f"{result['batch_size']}, {result['dtype']}, {result['steps']} steps x {result['repeats']} alternated repeats",
        "",
        "| path | images/s (min-max) | ms/step | vs host, K=1 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {r['images_per_s']:.0f} ({r['images_per_s_min']:.0f}-{r['images_per_s_max']:.0f}) "
                     f"| {r['ms_per_step']:.1f} | {r['vs_host_k1']:.2f}x |")
    return "\n".join(lines)
