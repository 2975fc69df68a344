"""`vit predict`: image files classified by either twin, the top-k classes with their probabilities.

Each file is read as the model sees it (vit_spec.image_files: centre crop to its aspect, bicubic resize to its
image size, its channels, its image_mean/image_std); an unreadable file is named and the others are still
classified. Class names come from the caller (--labels), else from the weight file's metadata (the trainers
record the dataset's), else "class N".

What `vit predict`, `vit attention` and `vit embeddings` share: a WEIGHTS argument that may name a training
run's workdir (weights_file), the class names (class_names) and the reading of image files (read_files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from twins.frameworks import twin_module
from vit_spec import ViTConfig


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
    """One file's block: its name, then a line per class (rank, name, probability), in aligned columns."""
    names = [p["label"] if p["label"] is not None else f"class {p['class']}" for p in predictions]
    width = max(len(n) for n in names)
    rank_width = len(f"{len(predictions)}.")
    lines = [file] + [f"  {f'{rank}.':>{rank_width}} {name:<{width}}  {100 * p['probability']:6.2f}%"
                      for rank, (name, p) in enumerate(zip(names, predictions), 1)]
    return "\n".join(lines)


def class_names(weights_path: str | Path, num_classes: int, labels: str | None = None) -> list[str] | None:
    """The names of a model's classes, as `vit predict` and `vit attention` show them: from `labels` (a text file
    with one per line, or a built-in list: cifar10, cifar100, imagenet; checked against `num_classes`), else
    those the weights file records, else None (the caller says "class N")."""
    from vit_spec import read_class_names
    from vit_spec.class_names import check_count, load_labels

    if labels is not None:
        return check_count(load_labels(labels), num_classes, f"--labels {labels}")
    return read_class_names(weights_path)


def read_files(paths: Sequence[str | Path], config: ViTConfig) -> list[np.ndarray | str]:
    """Per file, in the given order: its pixels as the model `config` sees it ((H, W, C) uint8,
    vit_spec.image_files.read_image), or the error that names it."""
    from vit_spec.image_files import ImageFileError, read_image

    read: list[np.ndarray | str] = []
    for path in paths:
        try:
            read.append(read_image(path, config))
        except ImageFileError as e:
            read.append(str(e))
    return read


def classify_files(weights_path: str | Path, paths: Sequence[str], framework: str = "jax", k: int = 5,
                   labels: str | None = None) -> list[dict[str, Any]]:
    """Per file, in the given order: {"file", "predictions": top_k(...)} or {"file", "error"} for a file that
    cannot be read.

    Args:
        weights_path: a weights file of this project with a classification head, or the workdir of a finished
            `vit train` run (its model.safetensors).
        paths: image files.
        framework: the twin that runs ("jax" or "torch").
        k: classes per file (at most the model's).
        labels: where the class names come from: a text file with one per line or a built-in list (cifar10,
            cifar100, imagenet); default: the weights file's, else none.
    """
    from vit_spec import load_weights, resolve_weights_path
    from vit_spec.image_files import normalise
    from vit_spec.inputs import check_has_logits

    weights_path = resolve_weights_path(weights_path)
    config, weights = load_weights(weights_path)
    check_has_logits(config, weights_path, "predict")
    names = class_names(weights_path, config.num_classes, labels)
    read = read_files(paths, config)  # every file in the given order: its pixels, or the error that names it
    good = [r for r in read if isinstance(r, np.ndarray)]
    probabilities = iter(())
    if good:
        x = normalise(np.stack(good), config)
        weights = {name: np.asarray(v, np.float32) for name, v in weights.items()}
        probabilities = iter(softmax(twin_module(framework, "inference").logits(config, weights, x)))
    k = min(k, config.num_classes)
    return [{"file": path, "error": r} if isinstance(r, str) else {"file": path, "predictions": top_k(next(probabilities), k, names)}
            for path, r in zip(paths, read)]


def features_of_files(weights_path: str | Path, paths: Sequence[str], framework: str = "jax",
                      batch_size: int = 64) -> dict[str, Any]:
    """`vit features`: the final tokens of the readable files, split (vit_spec.tokens.split_tokens), and their pooled
    feature, from the `framework` twin's forward_features / forward_head(pre_logits=True).

    Returns {"config", "files" (the readable files, in order), "errors" (one line per unreadable file),
    "prefix_tokens" (N, P, D), "patch_tokens" (N, gh*gw, D), "pooled" (N, features_dim; None for pool="none")};
    the arrays are None when no file could be read.
    """
    from vit_spec import load_weights, resolve_weights_path
    from vit_spec.image_files import normalise
    from vit_spec.tokens import split_tokens

    weights_path = resolve_weights_path(weights_path)
    config, weights = load_weights(weights_path)
    read = read_files(paths, config)
    good = [(path, r) for path, r in zip(paths, read) if isinstance(r, np.ndarray)]
    out: dict[str, Any] = {"config": config, "files": [str(p) for p, _ in good],
                           "errors": [r for r in read if isinstance(r, str)],
                           "prefix_tokens": None, "patch_tokens": None, "pooled": None}
    if good:
        x = normalise(np.stack([r for _, r in good]), config)
        weights = {name: np.asarray(v, np.float32) for name, v in weights.items()}
        tokens, pooled = twin_module(framework, "inference").features(config, weights, x, batch_size)
        out["prefix_tokens"], out["patch_tokens"] = split_tokens(tokens, config)
        out["pooled"] = pooled
    return out
