"""Class names of a classifier's outputs: the built-in lists (cifar10, cifar100, imagenet) and label files.

cifar10 and cifar100 are in tfds's label order (CIFAR-100's fine labels, alphabetical). imagenet is the
1000 ImageNet-1k classes in the standard index order, one short name each: imagenet_classes.txt beside this
module, the first lemma of each synset, generated from timm 1.0.31's data/_info/imagenet_synsets.txt and
imagenet_synset_to_lemma.txt (timm, Apache-2.0; tests/test_predict_cli.py checks it against an installed
timm). Two ImageNet names repeat ("crane", "maillot"), as they do in WordNet.
"""

from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path
from typing import Sequence

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

CIFAR100 = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)

BUILTIN = ("cifar10", "cifar100", "imagenet")


@functools.lru_cache(maxsize=None)
def imagenet() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in index order."""
    text = resources.files("vit_spec").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


def builtin(name: str) -> tuple[str, ...]:
    """The built-in list `name` (one of BUILTIN)."""
    if name == "cifar10":
        return CIFAR10
    if name == "cifar100":
        return CIFAR100
    if name == "imagenet":
        return imagenet()
    raise ValueError(f"no built-in class list {name!r} (there are {', '.join(BUILTIN)})")


def read_labels_file(path: str | os.PathLike) -> list[str]:
    """A text file of class names, one per line in class order; surrounding spaces and blank lines are ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no labels file at {path} (give a text file with one class name per line, "
                                f"or one of {', '.join(BUILTIN)})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text file of class names, one per line") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_labels(spec: str) -> list[str]:
    """--labels: a built-in list by name (cifar10, cifar100, imagenet), else a labels file (./cifar10 for a
    file of that name)."""
    return list(builtin(spec)) if spec in BUILTIN else read_labels_file(spec)


def check_count(names: Sequence[str], num_classes: int, source: str) -> list[str]:
    """`names` as a list, if there is one per class of the model; a clear error otherwise."""
    names = list(names)
    if len(names) != num_classes:
        raise ValueError(f"{source} has {len(names)} class names but the model has {num_classes} classes: "
                         f"give a list with one name per class, in class order")
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"{source}: class names must be strings")
    return names
