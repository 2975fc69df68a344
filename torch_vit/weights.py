"""The PyTorch model <-> the project's weight file (the state dict already is the shared layout)."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
import torch

from vit_spec import ViTConfig, check_weights, load_weights, save_weights

from torch_vit.model import ViT


def state_dict_numpy(model: ViT) -> dict[str, np.ndarray]:
    """The model's state dict as numpy arrays (timm names), detached and on the CPU."""
    return {name: t.detach().cpu().numpy() for name, t in model.state_dict().items()}


def model_from_state_dict(config: ViTConfig, state_dict: Mapping[str, np.ndarray | torch.Tensor]) -> ViT:
    """A ViT holding `state_dict` exactly, in the dtype of the given arrays."""
    arrays = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in state_dict.items()}
    check_weights(config, arrays)
    model = ViT(config)
    dtypes = {a.dtype for a in arrays.values()}
    if len(dtypes) == 1:
        model = model.to(torch.from_numpy(next(iter(arrays.values()))).dtype)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, strict=True)
    return model.eval()


def save(path: str | os.PathLike, model: ViT, class_names: Sequence[str] | None = None) -> None:
    """Writes the model's weights and config, and the class names if given, to a .safetensors file (atomic)."""
    save_weights(path, model.config, state_dict_numpy(model), class_names)


def load(path: str | os.PathLike) -> ViT:
    """Reads a .safetensors file written by either framework into a ViT in eval mode."""
    config, arrays = load_weights(path)
    return model_from_state_dict(config, arrays)
