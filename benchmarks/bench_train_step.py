"""Images/s of the jitted train step (augmentation, forward, backward, optimizer update).

    python benchmarks/bench_train_step.py --model tutorial --recipe tutorial --batch-size 128

Synthetic uint8 batches: this measures the step, not the data pipeline. Data parallel over every
device, as in `vit train`. Prints one line per setting; speed targets live here, never in tests.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tutorial")
    parser.add_argument("--recipe", nargs="+", default=["tutorial", "default"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=("float32", "bfloat16"))
    parser.add_argument("--steps", type=int, default=20, help="timed steps, after 3 warm-up steps")
    args = parser.parse_args()

    from jax_vit import ViT, init_params
    from train import sharding
    from train.optim import make_optimizer
    from train.recipes import get_recipe
    from train.step import TrainState, make_train_step
    from train.trainer import DTYPES, model_config

    mesh = sharding.make_mesh()
    sharding.check_batch_size(args.batch_size, mesh)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, (args.batch_size,), dtype=np.int32)
    print(f"{jax.device_count()} x {jax.devices()[0].device_kind}, model {args.model}, batch {args.batch_size}")
    for recipe_name in args.recipe:
        for dtype in args.dtype:
            recipe = get_recipe(recipe_name, batch_size=args.batch_size)
            config = model_config(args.model, recipe, 10, (32, 32, 3))
            tx, schedule = make_optimizer(recipe, 390, 390 * recipe.epochs)
            params = sharding.replicate(mesh, sharding.to_host(init_params(config, 0)))
            state = jax.jit(lambda p: TrainState.create(p, tx), out_shardings=sharding.replicated(mesh))(params)
            step = make_train_step(ViT(config, dtype=DTYPES[dtype]), tx, schedule, recipe.augment, 10, mesh)
            key = sharding.replicate(mesh, np.asarray(jax.random.key_data(jax.random.key(0))))
            batch = sharding.global_batch(mesh, images, labels)
            for _ in range(3):
                state, metrics = step(state, batch, key)
            jax.block_until_ready(metrics)
            start = time.perf_counter()
            for _ in range(args.steps):
                state, metrics = step(state, batch, key)
            jax.block_until_ready((state, metrics))
            seconds = time.perf_counter() - start
            print(f"recipe {recipe_name:9s} {dtype:9s}: {args.steps * args.batch_size / seconds:8.0f} images/s "
                  f"({1000 * seconds / args.steps:.1f} ms/step)")


if __name__ == "__main__":
    main()
