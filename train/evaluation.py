"""`vit eval`: a weights file scored on a dataset split by either twin, and where the two disagree.

Framework-free: each twin's logits come from its loop's evaluate module, imported only when asked for.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from train import data as data_lib
from train import folder_dataset

NEAR_TIE = 1e-4  # top-2 logit gap below which two float32 programs may honestly disagree


def weights_split(path: str | Path, dataset: str, data_dir: str | None, split: str, crop_pct: float | None = None,
                  workers: int = 0) -> data_lib.Split:
    """The split `split` of `dataset`, in memory, after checking that the weights file at `path` is a model of
    its images and classes. A `folder:PATH` dataset's images are decoded at the model's size (crop_pct: the
    evaluation crop, as `vit train --crop-pct`), an unreadable one named on stderr and left out."""
    from vit_spec import load_weights, read_class_names
    from vit_spec.inputs import check_has_logits

    # The whole file, checked (config, layout, no NaN/inf), before the dataset is opened: weights that cannot
    # be right would otherwise score chance accuracy after a long data load. The twins' loaders read it again.
    config, _ = load_weights(path)
    check_has_logits(config, path, "score")
    if folder_dataset.is_folder(dataset):
        out, unreadable = folder_dataset.eval_split(dataset, split, config.image_hw, read_class_names(path),
                                                    config.num_classes, crop_pct, workers)
        for file, reason in sorted(unreadable.items()):
            print(f"warning: left out {file}: {reason}", file=sys.stderr)
        return out
    sources = data_lib.open_sources(dataset, data_lib.resolve_data_dir(data_dir))
    if split not in sources:
        raise data_lib.DatasetError(f"{dataset} has no {split!r} split (it has {sorted(sources)})")
    num_classes, shape = data_lib.describe(sources[split])
    if config.num_classes != num_classes or (*config.image_hw, config.channels) != tuple(shape):
        raise data_lib.DatasetError(
            f"{path} is a {config.num_classes}-class model of {config.image_hw} images, but {dataset} has "
            f"{num_classes} classes of {tuple(shape)} images: pass the --dataset it was trained on"
        )
    return data_lib.load_split(sources[split], split)


def logits(framework: str, path: str | Path, split: data_lib.Split, batch_size: int = 500) -> np.ndarray:
    """The float32 logits of the weights file on the split, computed by the `framework` ("jax" or "torch") twin."""
    if framework == "jax":
        from train.jax_loop.evaluate import jax_logits as logits_of
    elif framework == "torch":
        from train.torch_loop.evaluate import torch_logits as logits_of
    else:
        raise ValueError(f"unknown framework {framework!r}: use 'jax' or 'torch'")
    return logits_of(path, split, batch_size)


def disagreements(a: np.ndarray, b: np.ndarray, tie: float = NEAR_TIE) -> tuple[int, int]:
    """(predictions that differ, of which not near-ties): a tie is a top-2 gap under `tie` in either model."""
    differ = np.argmax(a, -1) != np.argmax(b, -1)

    def gap(logits: np.ndarray) -> np.ndarray:
        top2 = np.sort(logits, -1)[:, -2:]
        return (top2[:, 1] - top2[:, 0]) / np.maximum(1.0, np.abs(top2[:, 1]))

    ties = (gap(a) < tie) | (gap(b) < tie)
    return int(differ.sum()), int((differ & ~ties).sum())
