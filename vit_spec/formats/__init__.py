"""Checkpoint formats: this project's, timm's, Hugging Face's, Google's (vision_transformer and big_vision).

Each format module maps its files <-> (ViTConfig, shared-layout numpy arrays); nothing here imports
jax, and torch only to read a .pth/.bin pickle (vit_spec.formats.tensor_files.read_torch_pickle).

    load_checkpoint(path, ...) -> (config, state_dict)    the entry point for fine-tuning
    read_checkpoint / adapt_checkpoint / write_checkpoint  the steps, with notes (used by `vit convert`)
"""

from vit_spec.formats.adapt import HEAD_PARAMS, adapt_checkpoint, change_head, change_image_size, init_head, missing_params
from vit_spec.formats.checkpoint import ASSUMABLE_FIELDS, Checkpoint
from vit_spec.formats.checkpoint_io import (
    FORMATS,
    WRITABLE_FORMATS,
    detect_format,
    load_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from vit_spec.formats.errors import FormatError, UnsupportedModelError
from vit_spec.formats.flags import CONVERT_FLAGS, Flags

__all__ = [
    "ASSUMABLE_FIELDS",
    "CONVERT_FLAGS",
    "FORMATS",
    "HEAD_PARAMS",
    "WRITABLE_FORMATS",
    "Checkpoint",
    "Flags",
    "FormatError",
    "UnsupportedModelError",
    "adapt_checkpoint",
    "change_head",
    "change_image_size",
    "detect_format",
    "init_head",
    "load_checkpoint",
    "missing_params",
    "read_checkpoint",
    "write_checkpoint",
]
