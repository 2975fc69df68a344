"""Decoding image files for training, measured: can the workers keep a step fed?

    vit bench --sections decode

The streaming path of `vit train --dataset folder:PATH` (train.image_pipeline.FolderStream) reads each JPEG,
decodes it, random-resized-crops it to 224x224 and hands back uint8 batches, in grain worker processes. This
section times that path on JPEGs the size of ImageNet's (500x375, quality 90, photo-like: smooth structure plus
sensor-like noise, ~100 KB each, written to a temporary folder) with 0 workers (in this process), 1 and 2, and
the S/16 training step at 224 (the sweep's jitted AdamW step, batch 16) in the same run, alternating the sides;
medians over the repeats. Its table says how many decoding cores one accelerator's S/16 training rate needs
(GPU_S16_IMAGES_PER_S, a published figure, over the measured images/s per worker).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SOURCE_SIZE = (375, 500)  # (h, w): ImageNet's most common image size
SIZE = (224, 224)
FILES = 96
BATCH = 16
BATCHES = 24  # per timed sample, after WARMUP untimed ones
# Untimed batches first: the workers' start-up (spawning, importing) and their first prefetched elements, which
# arrive together; with fewer timed batches than this, a worker's rate comes out at a third of its steady one.
WARMUP = 3
# A published accelerator's S/16 training rate: timm's benchmark of vit_small_patch16_224 training at 224, AMP,
# batch 384, on one RTX 3090 (PyTorch 1.12): 1052.9 images/s (pytorch-image-models,
# results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv). Newer accelerators train faster still.
GPU_S16_IMAGES_PER_S = 1053
GPU_S16_SOURCE = "timm's RTX 3090 AMP training benchmark of vit_small_patch16_224"


def write_jpegs(folder: Path, count: int = FILES, seed: int = 0) -> list[str]:
    """`count` photo-like JPEGs of SOURCE_SIZE in folder/train/a/: smooth colour fields (a 12x16 random grid,
    bicubic-upsampled) plus Gaussian noise of 8 levels, which JPEG cannot compress away, like a camera's."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = folder / "train" / "a"
    out.mkdir(parents=True, exist_ok=True)
    h, w = SOURCE_SIZE
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        pixels = np.clip(np.asarray(coarse, np.float32) + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
        path = out / f"{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(f"train/a/{path.name}")
    return paths


def _decode_images_per_s(root: Path, paths: list[str], workers: int, seed: int) -> float:
    """Images/s of FolderStream over BATCHES batches, after WARMUP (which pay for starting the workers)."""
    from train.data import BatchOrder
    from train.image_pipeline import FolderStream, Transform

    order = BatchOrder(len(paths), BATCH, seed)
    stream = FolderStream(root, paths, np.zeros(len(paths), np.int32), order, Transform(SIZE, random_crop=True),
                          seed, 0, WARMUP + BATCHES, workers)
    batches = iter(stream)
    for _ in range(WARMUP):
        next(batches)
    start = time.perf_counter()
    for _ in batches:
        pass
    return BATCHES * BATCH / (time.perf_counter() - start)


def measure_decode(repeats: int = 3, workers: tuple[int, ...] = (0, 1, 2)) -> dict[str, Any]:
    """Images/s of decoding + random-resized crop per worker count, and of the S/16 training step, alternated."""
    from vit_bench.jax_runner import JaxRunner
    from vit_bench.measure import BETAS, EPS, LR, WEIGHT_DECAY
    from vit_bench.sweep import ROWS

    row = ROWS["S/16"]
    rng = np.random.default_rng(0)
    images = rng.normal(size=(BATCH, *SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, row.config.num_classes, BATCH)
    runner = JaxRunner(row.config, "float32", "train", images, labels, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    runner.steps(1)
    timings: dict[str, list[float]] = {f"workers={n}": [] for n in workers}
    timings["S/16 step"] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = write_jpegs(root)
        kilobytes = statistics.mean((root / p).stat().st_size for p in paths) / 1024
        for r in range(repeats):
            for n in workers:
                timings[f"workers={n}"].append(_decode_images_per_s(root, paths, n, seed=r))
            start = time.perf_counter()
            runner.steps(2)
            timings["S/16 step"].append(2 * BATCH / (time.perf_counter() - start))
    medians = {k: statistics.median(v) for k, v in timings.items()}
    per_worker = medians.get("workers=1")
    return {
        "source_size": list(SOURCE_SIZE), "size": list(SIZE), "jpeg_kilobytes": round(kilobytes, 1), "batch": BATCH,
        "images_per_s": medians, "samples": timings, "gpu_s16_images_per_s": GPU_S16_IMAGES_PER_S, "gpu_s16_source": GPU_S16_SOURCE,
        "cores_for_gpu": GPU_S16_IMAGES_PER_S / per_worker if per_worker else None,
    }


def format_decode(result: dict[str, Any]) -> str:
    h, w = result["source_size"]
    s = result["images_per_s"]
    lines = [
        f"### Decoding for training: {w}x{h} JPEGs (~{result['jpeg_kilobytes']:.0f} KB) -> random-resized crop "
        f"{result['size'][0]}x{result['size'][1]}, uint8 batches of {result['batch']}",
        "",
        "| path | images/s (median) |",
        "|---|---|",
    ]
    labels = {"workers=0": "decode + crop, in the training process", "S/16 step": "S/16 training step (JAX, float32)"}
    for name, value in s.items():
        workers = name.split("=")[-1]
        lines.append(f"| {labels.get(name, f'decode + crop, {workers} worker process(es)')} | {value:.1f} |")
    if result["cores_for_gpu"]:
        lines += ["", f"One decoding core keeps {s['workers=1'] / s['S/16 step']:.0f}x this CPU's S/16 step fed; an "
                  f"accelerator training S/16 at {result['gpu_s16_images_per_s']} images/s ({result['gpu_s16_source']}) needs about "
                  f"{result['cores_for_gpu']:.0f} such cores (`--workers`)."]
    return "\n".join(lines)
