"""The host side of training, measured: augmentation's share of the step, and the data path's images/s.

    python -m vit_bench.host --recipe default --model tutorial --batch-size 128

`measure_host` times, in one process, alternating the sides so that a busy machine slows both alike:
the jitted `augment_batch` alone and the whole jitted train step (augmentation included, built as
`vit train` builds it), on synthetic uint8 batches of CIFAR-10's shape; and the data path from the
tfds source to a device-ready global batch, in memory (`memory_batches` over the loaded split) and
streaming (`StreamingBatches` reading the data source). `format_host` renders the result as a short
Markdown table. Timings are medians over `repeats`; speed targets live here, never in tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable, Iterable

import jax
import numpy as np

IMAGE_SHAPE = (32, 32, 3)  # CIFAR-10's, which the step and augmentation are timed at
NUM_CLASSES = 10
SAMPLE_SECONDS = 1.0  # each timing sample runs about this long: steps of ~1 s on a CPU, ~ms on a GPU
DATA_BATCHES = 20  # batches per data-path sample


def _seconds_per_call(run: Callable[[], Any], calls: int) -> float:
    """Wall seconds per call of `run` over `calls` back-to-back calls, waiting for the last result."""
    start = time.perf_counter()
    out = None
    for _ in range(calls):
        out = run()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls


def _data_path_images_per_s(batches: Callable[[int, int], Iterable[tuple[np.ndarray, np.ndarray]]], mesh: Any,
                            start_step: int, batch_size: int) -> float:
    """Images/s from a fresh batch iterator to device-ready global batches, over DATA_BATCHES batches."""
    from train.jax_loop import sharding

    start = time.perf_counter()  # before the iterator: a streaming one starts reading at once
    out = None
    for local in batches(start_step, start_step + DATA_BATCHES):
        out = sharding.global_batch(mesh, *local)
    jax.block_until_ready(out)
    return DATA_BATCHES * batch_size / (time.perf_counter() - start)


def _cifar10_train_source(data_dir: str | None) -> tuple[Any, str | None]:
    """(CIFAR-10's training data source, None), or (None, why not). Never downloads: a benchmark reads what is there."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source("cifar10", data_dir=data_dir, download=False)["train"], None
    except Exception as e:  # tfds raises several types (or answers {}) for "not prepared here"
        where = data_dir or "tfds's default data dir (no --data-dir, no TFDS_DATA_DIR)"
        return None, f"CIFAR-10 is not prepared under {where} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def measure_host(
    recipe: str = "default", model: str = "tutorial", batch_size: int = 128, repeats: int = 5, data_dir: str | None = None
) -> dict[str, Any]:
    """Augmentation and train-step ms per batch, augmentation's fraction of the step, data-path images/s.

    JSON-able. The data path reads CIFAR-10's training split from `data_dir` (else TFDS_DATA_DIR, else
    tfds's default); where it is absent, the in-memory path is timed on a synthetic split of the same
    size (`memory_data` says which: "cifar10 train split" or "synthetic split") and the streaming path is skipped (`streaming_skipped` says why).
    """
    from jax_vit import ViT, init_params
    from train import data as data_lib
    from train.jax_loop import sharding
    from train.jax_loop.augment import augment_batch
    from train.jax_loop.optim import make_optimizer
    from train.recipes import get_recipe
    from train.jax_loop.step import TrainState, make_train_step
    from train.jax_loop.trainer import model_config

    mesh = sharding.make_mesh()
    sharding.check_batch_size(batch_size, mesh)
    rec = get_recipe(recipe, batch_size=batch_size)
    config = model_config(model, rec, NUM_CLASSES, IMAGE_SHAPE)
    tx, schedule = make_optimizer(rec, 390, 390 * rec.epochs)
    params = sharding.replicate(mesh, sharding.to_host(init_params(config, 0)))
    state = jax.jit(lambda p: TrainState.create(p, tx), out_shardings=sharding.replicated(mesh))(params)
    train_step = make_train_step(ViT(config), tx, schedule, rec.augment, NUM_CLASSES, mesh)
    whole, rows = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    augment = jax.jit(lambda key, images, labels: augment_batch(key, images, labels, NUM_CLASSES, rec.augment),
                      in_shardings=(whole, rows, rows), out_shardings=(rows, rows))
    rng = np.random.default_rng(0)
    batch = sharding.global_batch(
        mesh,
        rng.integers(0, 256, (batch_size, *IMAGE_SHAPE), dtype=np.uint8),
        rng.integers(0, NUM_CLASSES, (batch_size,), dtype=np.int32),
    )
    run_key = sharding.replicate(mesh, np.asarray(jax.random.key_data(jax.random.key(0))))
    augment_key = jax.random.key(0)

    def one_step() -> Any:
        nonlocal state
        state, metrics = train_step(state, batch, run_key)
        return metrics

    def one_augment() -> Any:
        return augment(augment_key, *batch)

    for _ in range(2):  # compile both, then one warm call each
        jax.block_until_ready((one_step(), one_augment()))
    step_calls = max(1, round(SAMPLE_SECONDS / _seconds_per_call(one_step, 1)))
    augment_calls = max(1, round(SAMPLE_SECONDS / _seconds_per_call(one_augment, 1)))
    step_s, augment_s = [], []
    for _ in range(repeats):  # alternating: a busy spell of the machine hits both sides
        step_s.append(_seconds_per_call(one_step, step_calls))
        augment_s.append(_seconds_per_call(one_augment, augment_calls))
    step_ms, augment_ms = 1000 * statistics.median(step_s), 1000 * statistics.median(augment_s)
    step_rate = batch_size * 1000 / step_ms

    result: dict[str, Any] = {
        "recipe": recipe,
        "model": model,
        "batch_size": batch_size,
        "device": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "augment_ms": augment_ms,
        "step_ms": step_ms,
        "augment_fraction": augment_ms / step_ms,
        "step_images_per_s": step_rate,
        "memory_images_per_s": None,
        "memory_data": None,
        "streaming_images_per_s": None,
        "streaming_skipped": None,
    }

    source, result["streaming_skipped"] = _cifar10_train_source(data_lib.resolve_data_dir(data_dir))
    if source is not None:
        split, result["memory_data"] = data_lib.load_split(source, "train"), "cifar10 train split"
    else:  # gathering rows costs the same whatever the pixels
        images = rng.integers(0, 256, (50_000, *IMAGE_SHAPE), dtype=np.uint8)
        split = data_lib.Split(images, rng.integers(0, NUM_CLASSES, 50_000).astype(np.int32))
        result["memory_data"] = "synthetic split"
    order = data_lib.BatchOrder(len(split), batch_size, seed=0)
    memory = lambda a, b: data_lib.memory_batches(split, order, a, b)
    streaming = lambda a, b: data_lib.StreamingBatches(source, order, a, b)
    memory_rates, streaming_rates = [], []
    for r in range(repeats):
        start_step = 100 + r * DATA_BATCHES  # each sample reads batches no earlier sample read
        memory_rates.append(_data_path_images_per_s(memory, mesh, start_step, batch_size))
        if source is not None:
            streaming_rates.append(_data_path_images_per_s(streaming, mesh, start_step, batch_size))
    result["memory_images_per_s"] = statistics.median(memory_rates)
    if streaming_rates:
        result["streaming_images_per_s"] = statistics.median(streaming_rates)
    return result


def format_host(result: dict[str, Any]) -> str:
    """A short Markdown table of `measure_host`'s result."""
    step_rate = result["step_images_per_s"]
    rows = [
        ("train step", f"{result['step_ms']:.1f} ms/batch", f"{step_rate:.0f} images/s"),
        ("augmentation, alone", f"{result['augment_ms']:.2f} ms/batch",
         f"{100 * result['augment_fraction']:.1f}% of the step"),
    ]
    memory = result.get("memory_images_per_s")
    if memory is not None:
        rows.append((f"data in memory ({result.get('memory_data')})", f"{memory:.0f} images/s",
                     f"{memory / step_rate:.0f}x the step"))
    streaming = result.get("streaming_images_per_s")
    if streaming is not None:
        rows.append(("data streaming (tfds source)", f"{streaming:.0f} images/s", f"{streaming / step_rate:.1f}x the step"))
    else:
        rows.append(("data streaming (tfds source)", "skipped", result.get("streaming_skipped") or "not measured"))
    title = (f"Host side: recipe {result['recipe']}, model {result['model']}, batch {result['batch_size']}, "
             f"{result['device']}\n\n")
    table = ["| what | time or speed | relative |", "| --- | --- | --- |"]
    table += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return title + "\n".join(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--model", default="tutorial")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default=None, help="a tfds data dir holding cifar10 (default: TFDS_DATA_DIR)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    args = parser.parse_args(argv)
    result = measure_host(args.recipe, args.model, args.batch_size, args.repeats, args.data_dir)
    print(json.dumps(result, indent=2) if args.json else format_host(result))


if __name__ == "__main__":
    main()
