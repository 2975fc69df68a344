"""Images/s of `vit train`'s step as it is fed: batches from the host, one step per call (K=1, today's
path), against the split on the device and K steps per call (`--steps-per-dispatch K`).

    python benchmarks/bench_multi_step.py --model tutorial --recipe tutorial --k 1 8

Every variant runs the real feeding: the host path gathers each batch from the uint8 split in memory
(train.data.memory_batches) and sends it (sharding.global_batch); the device path sends only the
(K, B) rows. The split is CIFAR-10-sized random uint8 (50,000 images). Variants alternate within each
repeat, so a noisy neighbour slows all of them alike; speeds are the median (and range) over repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tutorial")
    parser.add_argument("--recipe", default="tutorial")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--k", type=int, nargs="+", default=[1, 8], help="steps per call of the device path")
    parser.add_argument("--steps", type=int, default=16, help="steps per variant and repeat (a multiple of every K)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--examples", type=int, default=50_000)
    args = parser.parse_args()

    from jax_vit import ViT, init_params
    from train import device_data, sharding
    from train.data import BatchOrder, Split, memory_batches
    from train.optim import make_optimizer
    from train.recipes import get_recipe
    from train.step import TrainState, make_multi_step, make_train_step
    from train.trainer import DTYPES, model_config

    if any(args.steps % k for k in args.k):
        parser.error(f"--steps {args.steps} must be a multiple of every --k {args.k}")
    mesh = sharding.make_mesh()
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (args.examples, 32, 32, 3), dtype=np.uint8),
                  rng.integers(0, 10, args.examples).astype(np.int32))
    order = BatchOrder(len(split), args.batch_size, seed=0)
    recipe = get_recipe(args.recipe, batch_size=args.batch_size)
    config = model_config(args.model, recipe, 10, (32, 32, 3))
    tx, schedule = make_optimizer(recipe, order.steps_per_epoch, order.steps_per_epoch * recipe.epochs)
    model = ViT(config, dtype=DTYPES[args.dtype])
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

    variants = {"host, K=1": host_path, **{f"device, K={k}": device_path(k) for k in args.k}}
    for run in variants.values():  # compile, warm up
        run(max(args.k))
    jax.block_until_ready(state)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run(args.steps)
            jax.block_until_ready(state)
            seconds[name].append(time.perf_counter() - start)
    print(f"{jax.device_count()} x {jax.devices()[0].device_kind}, model {args.model}, recipe {args.recipe}, "
          f"batch {args.batch_size}, {args.dtype}, {args.steps} steps x {args.repeats} repeats")
    base = statistics.median(seconds["host, K=1"])
    for name, values in seconds.items():
        speeds = [args.steps * args.batch_size / s for s in values]
        median = statistics.median(values)
        print(f"{name:14s}: {args.steps * args.batch_size / median:8.0f} images/s (range {min(speeds):.0f}-{max(speeds):.0f}), "
              f"{1000 * median / args.steps:6.1f} ms/step, x{base / median:.2f} of host K=1")


if __name__ == "__main__":
    main()
