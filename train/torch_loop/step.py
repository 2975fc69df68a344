"""The PyTorch train step: the recipe's optimizer (train.torch_loop.optim), its learning rate, the loss and one update.

The same semantics as the JAX step (train.jax_loop.step, train.jax_loop.optim), which the parity suite checks update by
update: PyTorch's Adam with L2 decay (`adam_l2`), AdamW with weight decay masked to matrices (`adamw`) or SGD with
momentum (`sgd`), gradients clipped to a global norm as optax clips them, the learning rate of train.schedule set
before each update (times each group's layer scale under layer-wise decay), soft-target cross-entropy (label
smoothing, mixup, CutMix).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from torch_vit import ViT
from train import param_groups
from train.augment_config import AugmentConfig
from train.recipes import Recipe
from train.schedule import learning_rate
from train.torch_loop import augment as torch_augment
from train.torch_loop.optim import clip_by_global_norm, global_norm, make_optimizer

Metrics = dict[str, float]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against (B, classes) probability targets (optax.softmax_cross_entropy)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 loss under bfloat16 autocast
    return -(targets.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(-1).mean()


class TrainStep:
    """One update of `model` with the recipe's optimizer, clipping and learning rate.

    `step(images_u8, labels, step_index)` augments the uint8 NHWC batch (train.torch_loop.augment, drawing
    from torch's global RNG, which the trainer seeds per step), runs forward and backward, clips, updates
    and returns the metrics of the JAX step: loss, accuracy (of the unmixed labels), lr, grad_norm
    (before clipping), finite. A non-finite loss or gradient leaves the parameters untouched.

    `freeze` (train.param_groups.FREEZE_CHOICES) turns requires_grad off on the parameters that do not train (as
    the JAX TrainState.create's): the optimizer, clipping and grad_norm then cover the others only.
    """

    def __init__(
        self,
        model: ViT,
        recipe: Recipe,
        steps_per_epoch: int,
        total_steps: int,
        num_classes: int,
        augment: AugmentConfig | None = None,
        autocast_dtype: torch.dtype | None = None,
        freeze: str | None = None,
    ):
        self.model, self.recipe, self.num_classes = model, recipe, num_classes
        if freeze is not None:  # the frozen parameters get no gradient, no optimizer state and no update
            for name, param in model.named_parameters():
                param.requires_grad_(param_groups.trains(name, freeze))
        self.augment = augment or recipe.augment
        self.optimizer = make_optimizer(model, recipe)
        self.lr: Callable[[int], float] = learning_rate(recipe, steps_per_epoch, total_steps)
        self.autocast_dtype = autocast_dtype
        self.params = [p for p in model.parameters() if p.requires_grad]

    def step(self, images: torch.Tensor, labels: torch.Tensor, step_index: int) -> Metrics:
        device = next(self.model.parameters()).device
        x, targets = torch_augment.augment_batch(images, labels, self.num_classes, self.augment)
        return self.update(x.to(device), targets.to(device), labels.to(device), step_index)

    def update(self, x: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, step_index: int) -> Metrics:
        """The step on an augmented, normalised NCHW batch and its soft targets."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        x = x.to(self.params[0].dtype)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype or torch.bfloat16, enabled=self.autocast_dtype is not None):
            logits = self.model(x)
        loss = soft_cross_entropy(logits, targets)
        loss.backward()
        finite_loss = bool(torch.isfinite(loss))
        applied = self.apply_gradients(step_index, finite_loss)
        return {"loss": float(loss.detach()), "accuracy": float((logits.argmax(-1) == labels).float().mean()), **applied}

    def apply_gradients(self, step_index: int, finite_loss: bool = True) -> Metrics:
        """The optimizer half of a step, on the gradients in the parameters' .grad: the learning rate of
        `step_index`, clipping, then the update (skipped when the loss or the gradients are not finite)."""
        lr = self.lr(step_index)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # layer decay (checkpoints from before it have no scale)
        grads = [p.grad for p in self.params]
        norm = global_norm(grads)
        finite = finite_loss and bool(torch.isfinite(norm))
        if finite:
            if self.recipe.clip_norm:
                clip_by_global_norm(grads, self.recipe.clip_norm, norm)
            self.optimizer.step()
        return {"lr": float(lr), "grad_norm": float(norm), "finite": finite}

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)
