"""The PyTorch twin's side of every comparison: the twin of twins.jax_side, function for function, under the same
names and layouts (timm names, NHWC inputs)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from torch_vit import model_from_state_dict, state_dict_numpy
from twins.differences import cast, named_intermediates
from twins.lockstep import Batch, lockstep_inputs
from vit_spec import ViTConfig


def _loss(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = model(images)
    if model.config.num_classes:
        return F.cross_entropy(logits, labels)
    return 0.5 * (logits**2).mean()


def _to_numpy(value):
    if isinstance(value, tuple):
        return tuple(_to_numpy(v) for v in value)
    return value.detach().numpy()


def forward(config: ViTConfig, state_dict: Mapping[str, np.ndarray], images_nhwc: np.ndarray, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Every compared tensor of the PyTorch twin, under the same names as twins.jax_side.forward's."""
    model = model_from_state_dict(config, cast(state_dict, dtype))
    images = torch.from_numpy(np.asarray(images_nhwc, dtype)).permute(0, 3, 1, 2)
    with torch.no_grad():
        _, inter = model(images, return_intermediates=True)
        out = named_intermediates({k: _to_numpy(v) for k, v in inter.items()}, config)
        out["logits (fused attention)"] = model(images).numpy()
    return out


def gradients(config: ViTConfig, state_dict: Mapping[str, np.ndarray], images_nhwc: np.ndarray, labels: np.ndarray, dtype: str = "float32") -> dict[str, np.ndarray]:
    """The PyTorch twin's gradients, under the same names and layouts as twins.jax_side.gradients'."""
    model = model_from_state_dict(config, cast(state_dict, dtype))
    images = torch.from_numpy(np.asarray(images_nhwc, dtype)).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    _loss(model, images, torch.from_numpy(labels)).backward()
    grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
    grads["input"] = images.grad.permute(0, 2, 3, 1).numpy()
    return grads


def adamw_steps(config: ViTConfig, state_dict: Mapping[str, np.ndarray], images_nhwc: np.ndarray, labels: np.ndarray, steps: int, lr: float, weight_decay: float, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Parameters after `steps` torch.optim.AdamW steps on one batch (timm names)."""
    model = model_from_state_dict(config, cast(state_dict, dtype))
    images = torch.from_numpy(np.asarray(images_nhwc, dtype)).permute(0, 3, 1, 2)
    labels_t = torch.from_numpy(labels)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay, foreach=False)
    for _ in range(steps):
        opt.zero_grad()
        _loss(model, images, labels_t).backward()
        opt.step()
    return state_dict_numpy(model)


def lockstep_steps(
    config: ViTConfig, recipe: Any, weights: Mapping[str, np.ndarray], batches: Sequence[Batch],
    steps_per_epoch: int, total_steps: int, dtype: str = "float32",
) -> tuple[list[dict[str, float]], dict[str, np.ndarray]]:
    """The PyTorch trainer's update (train.torch_loop.step.TrainStep) on the same inputs, as twins.jax_side's."""
    from train.torch_loop.step import TrainStep

    model = model_from_state_dict(config, cast(weights, dtype))
    trainer = TrainStep(model, recipe, steps_per_epoch, total_steps, config.num_classes)
    metrics = []
    for i, batch in enumerate(batches):
        x, targets = lockstep_inputs(batch, recipe.augment, config.num_classes, dtype)
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        metrics.append(trainer.update(x, torch.from_numpy(targets), torch.from_numpy(np.asarray(batch[1], np.int64)), i))
    return metrics, state_dict_numpy(model)
