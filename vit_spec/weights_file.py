"""The project's weight file: one .safetensors with timm-named tensors and the ViTConfig as JSON metadata."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from vit_spec.class_names import check_count
from vit_spec.config import ConfigError, ViTConfig
from vit_spec.layout import WeightsError, check_finite, check_weights

FORMAT_NAME = "vit-twins"
FORMAT_VERSION = "1"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds.

    An interrupted write leaves the old file (or none) under the final name, never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file owner-only; give it the mode an ordinary open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_weights(
    path: str | os.PathLike, config: ViTConfig, weights: Mapping[str, np.ndarray], class_names: Sequence[str] | None = None
) -> None:
    """Writes `weights` (timm names, numpy arrays) and `config` to `path`, atomically.

    NaN or infinite values are written as given (load_weights refuses them, naming the tensors): the trainers
    stop before writing such weights, and a deliberate dump of a diverged model is then still diagnosable.
    `class_names` (one per class, in class order) go into the metadata as "class_names", a JSON list, for
    `vit predict`; None or an empty list writes none.
    """
    from safetensors.numpy import save_file

    arrays = {name: np.ascontiguousarray(np.asarray(value)) for name, value in weights.items()}
    check_weights(config, arrays, source=f"the weights to save to {path}")
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "vit_config": config.to_json()}
    if class_names:
        names = check_count(class_names, config.num_classes, f"the class names to save to {path}")
        metadata["class_names"] = json.dumps(names)
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata=metadata)


def resolve_weights_path(path: str | os.PathLike) -> Path:
    """The weights file a command's WEIGHTS argument names: the file itself, or a `vit train` workdir's
    model.safetensors (as `vit plot` takes workdirs). A folder without one is refused (FileNotFoundError)
    saying so; a missing file is left to the reader ("no weights file at ...")."""
    path = Path(path)
    if not path.is_dir():
        return path
    model = path / "model.safetensors"
    if model.is_file():
        return model
    raise FileNotFoundError(f"{path} is a folder with no model.safetensors yet: a `vit train` workdir gets it when "
                            "its run finishes; give a finished run's workdir or a .safetensors weights file")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a .safetensors file (or a workdir's: resolve_weights_path), with a clear error
    for a missing or broken file."""
    from safetensors import safe_open

    path = resolve_weights_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        with safe_open(str(path), framework="np") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise WeightsError(
            f"{path} is not a readable .safetensors file ({type(e).__name__}: {e}); "
            "it may be truncated or in another format (convert other formats with `vit convert`)"
        ) from None


def read_class_names(path: str | os.PathLike) -> list[str] | None:
    """The class names a weights file records (save_weights' class_names), or None where it records none."""
    metadata = read_metadata(path)
    if "class_names" not in metadata:
        return None
    try:
        names = json.loads(metadata["class_names"])
        config = ViTConfig.from_json(metadata["vit_config"])
    except (ValueError, KeyError, ConfigError) as e:
        raise WeightsError(f"{path}: its class_names metadata is unreadable ({e}); rewrite it, or give --labels") from None
    if not isinstance(names, list):
        raise WeightsError(f"{path}: its class_names metadata is not a JSON list; rewrite it, or give --labels")
    return check_count(names, config.num_classes, f"{path}'s metadata")


def load_weights(path: str | os.PathLike) -> tuple[ViTConfig, dict[str, np.ndarray]]:
    """Reads a file written by save_weights (or a finished run's workdir: resolve_weights_path): (config,
    timm-named numpy arrays), checked against each other.

    A tensor holding NaN or infinity is refused here, naming it: every command loads through this, and such
    weights would otherwise only show up as chance accuracy or twins that "differ".
    """
    from safetensors.numpy import load_file

    path = resolve_weights_path(path)
    metadata = read_metadata(path)
    if "vit_config" not in metadata:
        raise WeightsError(
            f"{path} holds no ViT config in its metadata, so it was not written by this project; "
            "if it is a timm or Hugging Face state dict, convert it with `vit convert SRC DST --to vit`"
        )
    try:
        config = ViTConfig.from_json(metadata["vit_config"])
    except ConfigError as e:
        raise WeightsError(f"{path}: its config is invalid: {e}") from None
    try:
        arrays = load_file(str(path))
    except Exception as e:
        raise WeightsError(f"{path} could not be read ({type(e).__name__}: {e}); it may be truncated") from None
    check_weights(config, arrays, source=str(path))
    check_finite(arrays, source=str(path))
    return config, arrays
