"""What a train step does to a batch: framework-free, read by both trainers' augmentation
(train.jax_loop.augment in JAX, train.torch_loop.augment with torchvision)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What the train step does to a batch. RandAugment magnitudes are levels out of 10, as timm's; each op's
    strength at a level is torchvision's RandAugment's (posterize keeps 4 bits at 9; see train.jax_loop.augment)."""

    crop_padding: int = 4
    flip: bool = True
    randaugment_ops: int = 0  # ops per image; 0 turns RandAugment off
    randaugment_magnitude: float = 9.0
    randaugment_prob: float = 0.5  # each chosen op is applied with this probability (timm)
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0  # probability that a batch is mixed at all
    switch_prob: float = 0.5  # probability of CutMix rather than mixup when both are on
    label_smoothing: float = 0.0
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
