"""Reading and writing flat name -> array files: .safetensors, .npz and PyTorch pickles (.pth, .pt, .bin).

Everything comes back as numpy arrays. bfloat16 tensors are widened to float32 (exactly) because
numpy has no bfloat16. PyTorch pickles need torch, imported only inside `read_torch_pickle`: this is
the one place vit_spec touches torch, and only when such a file is read.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vit_spec.formats.errors import FormatError
from vit_spec.weights_file import atomic_path

SAFETENSORS_SUFFIXES = (".safetensors",)
NPZ_SUFFIXES = (".npz",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not path.is_file():
        raise FormatError(f"{path} is a directory; a weights file was expected here")


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32, exactly: bfloat16 is the top half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise FormatError(f"{path} is not a .safetensors file: it is only {size} bytes long")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise FormatError(
                f"{path} is not a readable .safetensors file: its header claims {n} bytes but the file has {size}; "
                "it may be truncated or in another format"
            )
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise FormatError(f"{path} is not a .safetensors file: its header is not JSON") from None
    return header, 8 + n


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(arrays, string metadata) of a .safetensors file; bfloat16 widened to float32."""
    from safetensors.numpy import load_file

    path = Path(path)
    _check_file(path)
    header, start = _safetensors_header(path)
    metadata = dict(header.pop("__metadata__", None) or {})
    size = path.stat().st_size
    for name, info in header.items():
        end = start + int(info.get("data_offsets", [0, 0])[1])
        if end > size:
            raise FormatError(
                f"{path} is truncated: tensor {name!r} ends at byte {end} but the file has {size} bytes"
            )
    if not any(info.get("dtype") == "BF16" for info in header.values()):
        try:
            return load_file(str(path)), metadata
        except Exception as e:  # safetensors raises its own types for damaged files
            raise FormatError(f"{path} could not be read as .safetensors ({type(e).__name__}: {e})") from None
    # numpy cannot hold bfloat16: read the bits and widen them.
    arrays: dict[str, np.ndarray] = {}
    dtypes = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
    with open(path, "rb") as f:
        for name, info in header.items():
            if info["dtype"] not in dtypes:
                raise FormatError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which this reader does not know")
            lo, hi = info["data_offsets"]
            f.seek(start + lo)
            raw = np.frombuffer(f.read(hi - lo), dtype=np.dtype(dtypes[info["dtype"]]).newbyteorder("<"))
            raw = raw.reshape(info["shape"])
            arrays[name] = _bf16_to_f32(raw) if info["dtype"] == "BF16" else raw.copy()
    return arrays, metadata


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, with a clear error for a truncated or foreign one."""
    path = Path(path)
    _check_file(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise FormatError(
            f"{path} is not a readable .npz archive ({type(e).__name__}: {e}); it may be truncated"
        ) from None
    for name, array in arrays.items():
        if array.dtype.kind == "V" and array.dtype.itemsize == 2:
            arrays[name] = _bf16_to_f32(array.view(np.uint16))  # bfloat16 saved by jax/ml_dtypes
    return arrays


def read_torch_pickle(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], list[str]]:
    """The tensors of a PyTorch checkpoint (.pth/.pt/.bin), and notes on any unwrapping done.

    Loaded with weights_only=True (no code from the file runs). A {"model": ...} or {"state_dict": ...}
    wrapper, as training scripts save, is unwrapped.
    """
    path = Path(path)
    _check_file(path)
    try:
        import torch
    except ImportError:
        raise FormatError(
            f"{path} is a PyTorch pickle and reading it needs torch, which is not installed; "
            "install torch, or save the state dict as .safetensors"
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise FormatError(
            f"{path} could not be read as a PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "it may be truncated or not a state dict"
        ) from None
    notes: list[str] = []
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            notes.append(f"read the state dict under {key!r} in {path.name}")
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise FormatError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
    arrays: dict[str, np.ndarray] = {}
    skipped = []
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            skipped.append(name)
            continue
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()  # exact; numpy has no bfloat16
        arrays[str(name)] = value.numpy().copy()
    if skipped:
        notes.append(f"ignored {len(skipped)} non-tensor entries in {path.name}: {skipped[:5]}")
    return arrays, notes


def read_tensor_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    """(arrays, metadata, notes) of a .safetensors, .npz or PyTorch file, chosen by its suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        arrays, metadata = read_safetensors(path)
        return arrays, metadata, []
    if suffix in NPZ_SUFFIXES:
        return read_npz(path), {}, []
    if suffix in TORCH_SUFFIXES:
        arrays, notes = read_torch_pickle(path)
        return arrays, {}, notes
    _check_file(path)
    raise FormatError(
        f"{path}: unknown weights file type {suffix or '(no suffix)'!r}; expected one of "
        f"{SAFETENSORS_SUFFIXES + NPZ_SUFFIXES + TORCH_SUFFIXES} or a Hugging Face model directory"
    )


def write_safetensors(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Writes arrays (in the given order) and string metadata to a .safetensors file, atomically."""
    from safetensors.numpy import save_file

    tensors = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata))


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes arrays to an uncompressed .npz (as Google's checkpoints are), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a path
            np.savez(f, **{name: np.asarray(a) for name, a in arrays.items()})


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    """Writes an indented JSON file atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
