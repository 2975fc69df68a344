"""What a train step does to a batch: framework-free, read by both trainers' augmentation
(train.jax_loop.augment in JAX, train.torch_loop.augment with torchvision)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What the train step does to a batch. RandAugment magnitudes are levels out of 10, as timm's; each op's
    strength at a level is torchvision's RandAugment's (posterize keeps 4 bits at 9; see train.jax_loop.augment).

    The first step is a crop: the padding crop (`crop_padding` > 0, CIFAR's), or the Inception-style
    random-resized crop (`random_resized_crop`, for fine-tuning on images at the model's resolution): a box
    of `crop_scale` of the image's area and aspect ratio (width / height) in `crop_ratio`, resized back to
    the image's size, as torchvision's `RandomResizedCrop` (whose defaults these are). One or the other:
    both on is an error.
    """

    crop_padding: int = 4
    random_resized_crop: bool = False
    crop_scale: tuple[float, float] = (0.08, 1.0)  # area fraction of the box, uniform in this range
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # box width / height, log-uniform in this range
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

    def __post_init__(self) -> None:
        # Tuples, whatever came in (a list from JSON): the config is a static, hashed argument of jit.
        object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))
        object.__setattr__(self, "crop_ratio", tuple(float(v) for v in self.crop_ratio))
        if self.random_resized_crop and self.crop_padding > 0:
            raise ValueError(
                f"random_resized_crop=True and crop_padding={self.crop_padding} are two crops in one place: "
                "the random-resized crop replaces the padding crop; set crop_padding=0 with it"
            )
        if len(self.crop_scale) != 2 or not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            raise ValueError(
                f"crop_scale={self.crop_scale} must be (lo, hi) area fractions with 0 < lo <= hi <= 1, "
                "e.g. (0.08, 1.0)"
            )
        if len(self.crop_ratio) != 2 or not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(
                f"crop_ratio={self.crop_ratio} must be (lo, hi) aspect ratios (width / height) with 0 < lo <= hi, "
                "e.g. (3 / 4, 4 / 3)"
            )
