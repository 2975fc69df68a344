"""`vit predict WEIGHTS IMAGE...`: the top-k classes of image files, with probabilities, under either twin.

Each file is read as the model sees it (vit_spec.image_files: centre crop to its aspect, bicubic resize to its
image size, its channels, its image_mean/image_std). Class names come from --labels, else from the weight
file's metadata (the trainers record the dataset's), else "class N".

Exit codes: 0 when every file was classified; 1 when any file could not be read (each is named, the others
are still classified, and it is 1 even when none could be read); 2 for a usage error or an unusable weights
or labels file.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Mapping

import numpy as np

from vit_spec import ViTConfig

BATCH_SIZE = 64


def jax_logits(config: ViTConfig, weights: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The JAX twin's float32 logits of normalised NHWC images, with exact float32 matmuls."""
    import jax

    from jax_vit import ViT, params_from_state_dict
    from vit_cli.parity import jax_precision

    model = ViT(config)
    forward = jax.jit(lambda params, x: model.apply({"params": params}, x))
    with jax_precision("float32"):
        params = jax.device_put(params_from_state_dict(config, weights))
        return np.concatenate([np.asarray(forward(params, x[i:i + BATCH_SIZE])) for i in range(0, len(x), BATCH_SIZE)])


def torch_logits(config: ViTConfig, weights: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The PyTorch twin's float32 logits of normalised NHWC images."""
    import torch

    from torch_vit import model_from_state_dict

    model = model_from_state_dict(config, weights).float().eval()
    with torch.no_grad():
        return np.concatenate([
            model(torch.from_numpy(x[i:i + BATCH_SIZE]).permute(0, 3, 1, 2)).numpy() for i in range(0, len(x), BATCH_SIZE)
        ])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, in float64 so that small probabilities keep their digits."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def top_k(probabilities: np.ndarray, k: int, labels: list[str] | None) -> list[dict[str, Any]]:
    """The k most probable classes of one image, most probable first (ties: lower class first)."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"class": int(c), "label": labels[c] if labels else None, "probability": float(probabilities[c])}
            for c in order]


def format_predictions(file: str, predictions: list[dict[str, Any]]) -> str:
    """One file's block: its name, then a line per class (rank, name, probability)."""
    names = [p["label"] if p["label"] is not None else f"class {p['class']}" for p in predictions]
    width = max(len(n) for n in names)
    lines = [file] + [f"  {rank}. {name:<{width}}  {100 * p['probability']:6.2f}%"
                      for rank, (name, p) in enumerate(zip(names, predictions), 1)]
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="classify image files (PNG, JPEG, ...) with a weights file: top-k classes and probabilities",
        description="Reads each image as the model sees it (centre crop to its aspect, resize to its image size, "
        "its normalisation) and prints its most probable classes. Class names: --labels, else those the weights "
        "file records, else 'class N'. A file that cannot be read is named on stderr (in the JSON with --json) "
        "and the others are still classified; the exit code is then 1.",
    )
    p.add_argument("weights", help="a .safetensors file of this project (vit train writes model.safetensors)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="classes shown per image (default: 5, at most the model's)")
    p.add_argument("--framework", choices=("jax", "torch"), default="jax", help="the twin that runs (default: jax)")
    p.add_argument("--labels", metavar="FILE|cifar10|cifar100|imagenet",
                   help="class names: a text file with one per line, or a built-in list (default: the weights file's)")
    p.add_argument("--json", action="store_true", help="print one JSON list: per file, its predictions or its error")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from vit_spec import WeightsError, load_weights, read_class_names
    from vit_spec.class_names import check_count, load_labels
    from vit_spec.image_files import ImageFileError, normalise, read_image

    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    config, weights = load_weights(args.weights)
    if not config.num_classes:
        raise WeightsError(f"{args.weights} has no classification head (num_classes 0): there are no classes to "
                           "predict; fine-tune it into a classifier first (vit train --init-from)")
    if args.labels is not None:
        labels = check_count(load_labels(args.labels), config.num_classes, f"--labels {args.labels}")
    else:
        labels = read_class_names(args.weights)

    # Every file in the given order: its pixels, or the error that names it.
    read: list[np.ndarray | str] = []
    for path in args.images:
        try:
            read.append(read_image(path, config))
        except ImageFileError as e:
            read.append(str(e))
    good = [r for r in read if isinstance(r, np.ndarray)]
    probabilities = iter(())
    if good:
        logits_of = jax_logits if args.framework == "jax" else torch_logits
        x = normalise(np.stack(good), config)
        weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        probabilities = iter(softmax(logits_of(config, weights, x)))

    k = min(args.top_k, config.num_classes)
    results: list[dict[str, Any]] = []
    for path, r in zip(args.images, read):
        if isinstance(r, str):
            results.append({"file": path, "error": r})
        else:
            results.append({"file": path, "predictions": top_k(next(probabilities), k, labels)})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            if "error" in result:
                print(f"vit predict: {result['error']}", file=sys.stderr)
            else:
                print(format_predictions(result["file"], result["predictions"]))
    return 1 if len(good) < len(read) else 0
