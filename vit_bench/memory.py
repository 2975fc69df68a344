"""Each device's memory for the train step of big ViTs, on meshes of 1 to 64 devices, with and without FSDP and
remat (train.jax_loop.memory_plan: compiled for shapes only, so any size plans on this CPU), and a check of the
plan against the real peak of one small configuration here.

    python -m vit_bench.memory                          # the README's table (ImageNet shapes: 224 px, 1000 classes)
    python -m vit_bench.memory --models B/16 --devices 1 8 --batch-per-device 16
    python -m vit_bench.memory --check                  # the plan against the measured peak, on 1 CPU device

Every row is the `default` recipe's step (AdamW, RandAugment, mixup/CutMix in the step, float32), as `vit train`
compiles it. A device count runs in a process of its own (XLA_FLAGS sets the simulated CPU devices); FSDP rows
put every device on fsdp, data-parallel rows on data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

MODELS = ("B/16", "L/16", "H/14", "g/14", "So400m/14")
DEVICES = (1, 8, 64)
DEVICE_SIZES_GB = (16, 40, 80)


def _plan_rows(models: list[str], devices: int, batch_per_device: int, image_size: int, layouts: list[str]) -> list[dict]:
    """In a process with `devices` devices: a plan per model, layout (remat or not) and mesh (data, fsdp)."""
    import jax

    from jax_vit import ViT
    from train import recipes
    from train.jax_loop import memory_plan, sharding
    from train.jax_loop.optim import make_optimizer
    from vit_spec import ViTConfig

    assert jax.device_count() == devices, (jax.device_count(), devices)
    recipe = recipes.resolve(recipes.get_recipe("default", batch_size=batch_per_device * devices), 300)
    tx, schedule = make_optimizer(recipe, 1000, 300_000)
    meshes = ["data=1"] if devices == 1 else [f"data={devices}", f"fsdp={devices}"]
    rows = []
    for model in models:
        config = ViTConfig.from_variant(model, image_size=image_size, num_classes=1000)
        for layout in layouts:
            remat = layout == "remat"
            vit = ViT(config, scan_blocks=remat, remat=remat)
            for mesh_text in meshes:
                start = time.perf_counter()
                plan = memory_plan.plan(vit, tx, schedule, recipe.augment, 1000, (image_size, image_size, 3),
                                        batch_per_device * devices, sharding.make_mesh(mesh_text))
                rows.append({"model": model, "layout": layout, "devices": devices, "mesh": plan.mesh,
                             "batch_per_device": plan.batch_per_device, "parameters": plan.parameters,
                             "optimizer": plan.optimizer, "arguments": plan.arguments, "temporaries": plan.temporaries,
                             "outputs": plan.outputs, "aliased": plan.aliased, "peak": plan.peak,
                             "compile_s": time.perf_counter() - start})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def table(models: list[str], devices: list[int], batch_per_device: int, image_size: int, layouts: list[str]) -> list[dict]:
    """Every device count in its own process; the rows of all."""
    rows = []
    for n in devices:
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "JAX_PLATFORMS": "cpu"}
        args = json.dumps({"models": models, "devices": n, "batch_per_device": batch_per_device,
                           "image_size": image_size, "layouts": layouts})
        out = subprocess.run([sys.executable, "-m", "vit_bench.memory", "--worker", args], env=env, check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        rows += json.loads(out.strip().splitlines()[-1])
    return rows


def markdown(rows: list[dict]) -> str:
    """The README's table: per model and layout, the peak GB per device of data parallelism (any device count: the
    1-device plan) and of each fsdp mesh, with the smallest of DEVICE_SIZES_GB it fits."""
    def cell(peak: int) -> str:
        sizes = [gb for gb in DEVICE_SIZES_GB if peak <= gb * 1e9]
        return f"{peak / 1e9:.1f} ({sizes[0]} GB)" if sizes else f"{peak / 1e9:.1f} (none)"

    fsdp = sorted({r["devices"] for r in rows if r["mesh"].startswith("data=1,fsdp=") and r["devices"] > 1})
    head = ["model", "remat", "params + optimizer GB", "data-parallel, any devices"] + [f"fsdp={n}" for n in fsdp]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = list(dict.fromkeys((r["model"], r["layout"]) for r in rows))
    for model, layout in keys:
        mine = [r for r in rows if (r["model"], r["layout"]) == (model, layout)]
        data = [r for r in mine if r["mesh"].startswith("data=") and ",fsdp=1," in r["mesh"]]
        # Data parallelism holds the same on every device whatever their count; the table shows the fewest's.
        ref = min(data, key=lambda r: r["devices"])
        cells = [model, "yes" if layout == "remat" else "no", f"{(ref['parameters'] + ref['optimizer']) / 1e9:.1f}",
                 cell(ref["peak"])]
        for n in fsdp:
            match = [r for r in mine if r["devices"] == n and r["mesh"].startswith("data=1,fsdp=")]
            cells.append(cell(match[0]["peak"]) if match else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def check(model: str = "S/16", batch: int = 64, image_size: int = 224, steps: int = 3) -> dict[str, Any]:
    """The plan's temporaries + new outputs against the real growth of this process's resident memory while the
    step runs (sampled every 0.2 ms from /proc; the heap trimmed before each step), on this machine's CPU. Run it
    as `--check`, which sets glibc's mmap threshold so that freed buffers leave the resident set."""
    import ctypes

    import jax
    import numpy as np

    from jax_vit import ViT, init_params
    from train import recipes
    from train.jax_loop import memory_plan, sharding
    from train.jax_loop.optim import make_optimizer
    from train.jax_loop.step import TrainState, make_train_step
    from vit_spec import ViTConfig

    config = ViTConfig.from_variant(model, image_size=image_size, num_classes=1000)
    recipe = recipes.resolve(recipes.get_recipe("default", batch_size=batch), 300)
    tx, schedule = make_optimizer(recipe, 1000, 300_000)
    vit, mesh = ViT(config), sharding.make_mesh()
    plan = memory_plan.plan(vit, tx, schedule, recipe.augment, 1000, (image_size, image_size, 3), batch, mesh)
    params = sharding.replicate(mesh, sharding.to_host(init_params(config, 0)))
    state = jax.jit(lambda p: TrainState.create(p, tx), out_shardings=sharding.replicated(mesh))(params)
    del params
    rng = np.random.default_rng(0)
    images, labels = sharding.global_batch(mesh, rng.integers(0, 256, (batch, image_size, image_size, 3), np.uint8),
                                           rng.integers(0, 1000, batch).astype(np.int32))
    key = sharding.replicate(mesh, np.asarray(jax.random.key_data(jax.random.key(0))))
    step = make_train_step(vit, tx, schedule, recipe.augment, 1000, mesh)
    state, metrics = step(state, (images, labels), key)  # compiles
    jax.block_until_ready(metrics)
    libc = ctypes.CDLL("libc.so.6")
    growth = []
    for _ in range(steps):
        libc.malloc_trim(0)
        base, peak, done = _rss(), [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.0002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        state, metrics = step(state, (images, labels), key)
        jax.block_until_ready((state, metrics))
        done.set()
        sampler.join()
        growth.append(peak[0] - base)
    planned = plan.temporaries + plan.outputs - plan.aliased
    return {"model": model, "batch": batch, "image_size": image_size, "planned_bytes": planned,
            "measured_bytes": int(np.median(growth)), "measured_all": growth, "arguments": plan.arguments}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--devices", nargs="+", type=int, default=list(DEVICES))
    p.add_argument("--layouts", nargs="+", default=["plain", "remat"], choices=("plain", "remat"))
    p.add_argument("--batch-per-device", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--json", metavar="FILE", help="write the rows here")
    p.add_argument("--from-json", metavar="FILE", help="print the table of rows written before (no planning)")
    p.add_argument("--check", action="store_true", help="compare the plan with the measured peak on this CPU")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--check-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.check_worker:
        print(json.dumps(check()))
        return
    if args.worker:
        w = json.loads(args.worker)
        print(json.dumps(_plan_rows(w["models"], w["devices"], w["batch_per_device"], w["image_size"], w["layouts"])))
        return
    if args.from_json:
        with open(args.from_json) as f:
            print(markdown(json.load(f)))
        return
    if args.check:
        # Every allocation above 128 KB mapped on its own and unmapped when freed (a fixed glibc mmap threshold), so
        # that what a step allocates shows as resident growth whatever earlier steps left in the heap.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "JAX_PLATFORMS": "cpu"}
        out = subprocess.run([sys.executable, "-m", "vit_bench.memory", "--check-worker"], env=env, check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(f"{result['model']}, batch {result['batch']} at {result['image_size']} px, 1 CPU device: planned "
              f"{result['planned_bytes'] / 1e9:.2f} GB of temporaries and new outputs, measured "
              f"{result['measured_bytes'] / 1e9:.2f} GB of resident growth during the step "
              f"(each: {', '.join(f'{g / 1e9:.2f}' for g in result['measured_all'])})")
        return
    rows = table(args.models, args.devices, args.batch_per_device, args.image_size, args.layouts)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(markdown(rows))


if __name__ == "__main__":
    main()
