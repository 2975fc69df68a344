"""Framework-free description of the ViT twins: config, variants, weight layout and file format.

Imports neither jax nor torch.
"""

from vit_spec.config import VARIANTS, ConfigError, ViTConfig
from vit_spec.layout import NO_DECAY_NAMES, WeightsError, check_finite, check_weights, num_params, param_shapes, random_weights, sincos_2d
from vit_spec.layout import exempt_from_decay
from vit_spec.weights_file import (
    atomic_path, load_weights, read_class_names, read_metadata, resolve_weights_path, save_weights,
)

__all__ = [
    "NO_DECAY_NAMES",
    "VARIANTS",
    "ConfigError",
    "ViTConfig",
    "WeightsError",
    "atomic_path",
    "check_finite",
    "check_weights",
    "exempt_from_decay",
    "load_weights",
    "num_params",
    "param_shapes",
    "random_weights",
    "read_class_names",
    "read_metadata",
    "resolve_weights_path",
    "save_weights",
    "sincos_2d",
]
