"""Training recipes: every hyperparameter of a run, by name (`--recipe`), with flags overriding a few."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from train.augment_config import AugmentConfig

if TYPE_CHECKING:
    from vit_spec import ViTConfig

# The usual CIFAR-10 channel mean and std (of the training split's pixels).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# The tutorial's torchvision Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)): the widely
# copied CIFAR-10 constants whose "std" is the mean of per-image standard deviations.
TUTORIAL_STD = (0.2023, 0.1994, 0.2010)

# The regularisation that `--randaugment`, `--mixup`, ... set one by one, and that the `default`
# recipe chooses from the run's length (length_scaled_regularisation).
REGULARISATION_PARTS = ("crop_padding", "randaugment_ops", "randaugment_magnitude", "mixup_alpha", "cutmix_alpha",
                        "label_smoothing", "drop_path", "dropout")
# The parts that are ViTConfig fields (Recipe.model_overrides), not augmentation.
MODEL_PARTS = ("drop_path", "dropout")
# Recipe.optimizer's values (`--optimizer`).
OPTIMIZERS = ("adamw", "sgd", "adam_l2")


class RecipeError(ValueError):
    """An unknown recipe or an impossible override."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train: optimizer, schedule, batch, length, augmentation and model-side regularisation.

    optimizer: "adam_l2" (PyTorch's Adam(weight_decay=wd): wd * param added to the gradient, every
        parameter decayed), "adamw" (decoupled decay, masked to weights: no biases, norms,
        position embedding or [CLS] token) or "sgd" (SGD with `momentum`, as torch.optim.SGD: dampening 0, no
        Nesterov; weight decay, where non-zero, wd * param added to the gradient before the momentum, masked
        as adamw's).
    layer_decay: None, or layer-wise learning-rate decay (BEiT, MAE): the learning rate of layer l (0: the
        embeddings and prefix tokens; i + 1: block i, and the final norm with the last block; depth + 1: what
        follows, fc_norm, MAP head, head) scaled by layer_decay ** (depth + 1 - l), as timm's
        param_groups_layer_decay (train.param_groups); weight decay is scaled with it (timm scales the group's lr).
    schedule: "step" (StepLR: lr * gamma every step_epochs epochs) or "warmup_cosine" (linear warmup
        for warmup_epochs, at most warmup_max_fraction of the run, then cosine to zero).
    """

    name: str
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    weight_decay: float
    schedule: str
    step_epochs: int = 20
    step_gamma: float = 0.5
    warmup_epochs: float = 0.0
    warmup_max_fraction: float = 0.1
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.9  # sgd's
    layer_decay: float | None = None
    clip_norm: float | None = None
    augment: AugmentConfig = AugmentConfig()
    # ViTConfig fields set by the recipe (regularisation), on a model built from scratch and on a fine-tuned
    # checkpoint's config; after as_trained, the rates of the model that trains.
    model_overrides: tuple[tuple[str, Any], ...] = ()
    # ViTConfig fields of a model the recipe builds from scratch (not of a checkpoint it fine-tunes);
    # --pos-embed and --pool override them.
    architecture: tuple[tuple[str, Any], ...] = ()
    # True: regularisation is length_scaled_regularisation(the run's epochs), not the values above.
    length_scaled: bool = False

    def replace(self, **changes: Any) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model_overrides"] = dict(self.model_overrides)
        out["architecture"] = dict(self.architecture)
        return out


RECIPES: dict[str, Recipe] = {
    # The tutorial, reproduced faithfully for comparison.
    "tutorial": Recipe(
        name="tutorial",
        epochs=50,
        batch_size=128,
        lr=3e-4,
        optimizer="adam_l2",
        weight_decay=1e-4,
        schedule="step",
        step_epochs=20,
        step_gamma=0.5,
        augment=AugmentConfig(crop_padding=4, flip=True, mean=CIFAR10_MEAN, std=TUTORIAL_STD),
        # nn.Dropout(0.1) after the position embedding, on the attention output and in the MLP.
        model_overrides=(("dropout", 0.1),),
    ),
    # Ours: the from-scratch ViT recipe of DeiT / "ViT for small datasets" / CCT, sized for CIFAR, with
    # its regularisation scaled to the run's length (below: the values of a run of 100 epochs or more).
    "default": Recipe(
        name="default",
        epochs=200,
        batch_size=128,
        lr=1e-3,
        optimizer="adamw",
        weight_decay=0.05,
        schedule="warmup_cosine",
        warmup_epochs=5,
        warmup_max_fraction=0.1,
        b2=0.999,
        clip_norm=1.0,
        augment=AugmentConfig(
            crop_padding=4,
            flip=True,
            randaugment_ops=2,
            randaugment_magnitude=9.0,
            mixup_alpha=0.8,
            cutmix_alpha=1.0,
            mix_prob=0.5,
            switch_prob=0.5,
            label_smoothing=0.1,
            mean=CIFAR10_MEAN,
            std=CIFAR10_STD,
        ),
        model_overrides=(("drop_path", 0.1),),
        # big_vision's plain-ViT baseline's fixed 2-D sin-cos table: nothing to learn, worth 2.4 points of
        # validation accuracy after 5 epochs here (README); --pos-embed learned is the tutorial's.
        architecture=(("pos_embed", "sincos2d"),),
        length_scaled=True,
    ),
    # Fine-tuning a converted checkpoint (`vit train --init-from FILE`): the ViT paper's transfer recipe (its
    # fine-tuning code, google-research/vision_transformer, and big_vision's transfer configs): momentum SGD, no
    # weight decay, gradients clipped to norm 1, linear warmup then cosine to zero, at batch 512 and lr 0.01-0.03
    # there: 0.03 * 128 / 512 = 0.0075 at batch 128, rounded up to 0.01 (the paper's sweep is {0.001, 0.003,
    # 0.01, 0.03}). Their warmup is 500 of 10,000 steps (CIFAR): 5%, here half an epoch and at most 5% of the run.
    # Transfer runs are short: 10 epochs, not length-scaled. No label smoothing, mixup, CutMix or RandAugment;
    # dropout and stochastic depth 0, as the paper fine-tunes; random-resized crops and flips; the checkpoint's
    # own normalisation (as_trained). The AdamW + layer-decay alternative (BEiT, MAE) is FINETUNE_ADAMW_FLAGS away.
    "finetune": Recipe(
        name="finetune",
        epochs=10,
        batch_size=128,
        lr=0.01,
        optimizer="sgd",
        momentum=0.9,
        weight_decay=0.0,
        schedule="warmup_cosine",
        warmup_epochs=0.5,
        warmup_max_fraction=0.05,
        clip_norm=1.0,
        augment=AugmentConfig(crop_padding=0, random_resized_crop=True, flip=True),
        model_overrides=(("drop_path", 0.0), ("dropout", 0.0)),
    ),
}

# Recipes meant for `--init-from`: a run from scratch is allowed, with a note.
FINE_TUNING = ("finetune",)

# `vit train --init-from FILE --recipe finetune` + these: AdamW with layer-wise learning-rate decay, BEiT's and
# MAE's fine-tuning (timm's param_groups_layer_decay). Layer decay 0.65, weight decay 0.05 and drop path 0.1 are
# their ViT-B values; lr 5e-4 at batch 128 is BEiT's 4e-3 at batch 1024 scaled linearly (MAE's rule, 5e-4 *
# batch / 256, gives 2.5e-4; scaling BEiT's by the square root, 1.4e-3). Warmup, cosine, clipping and
# augmentation stay the recipe's.
FINETUNE_ADAMW_FLAGS = ("--optimizer", "adamw", "--layer-decay", "0.65", "--lr", "5e-4", "--weight-decay", "0.05",
                        "--drop-path", "0.1")

# length_scaled_regularisation: no strong regularisation up to SHORT_EPOCHS, all of it from LONG_EPOCHS.
SHORT_EPOCHS, LONG_EPOCHS = 10.0, 100.0


def regularisation_strength(epochs: float) -> float:
    """0 for runs of up to 10 epochs, 1 from 100 epochs, linear in log(epochs) between (0.5 at ~32, 0.7 at 50)."""
    if epochs <= SHORT_EPOCHS:
        return 0.0
    return min(1.0, math.log(epochs / SHORT_EPOCHS) / math.log(LONG_EPOCHS / SHORT_EPOCHS))


def length_scaled_regularisation(epochs: float) -> dict[str, Any]:
    """What `default` regularises a run of `epochs` epochs with, at strength s = regularisation_strength(epochs).

    Random crop (4 px zero padding) from s > 0; RandAugment: 2 ops at magnitude 9 s (off at s = 0); mixup
    alpha 0.8 s and CutMix alpha 1.0 s, half the batches mixed (off at s = 0); stochastic depth 0.1 s. Flips
    and label smoothing 0.1 at every length; no dropout (a fine-tune keeps its checkpoint's: resolve). A short
    run learns too little to overfit: crops, mixing, RandAugment and stochastic depth then only make the task
    harder (measured on the validation split: README, "A recipe that scales with the run"); a long run needs
    them (DeiT; "Vision Transformer for Small-Size Datasets"): at 100+ epochs they are DeiT's values, but for
    RandAugment's posterize, which keeps torchvision's 4 bits at magnitude 9, not DeiT's 1
    (train.jax_loop.augment).
    """
    s = regularisation_strength(epochs)
    return {
        "crop_padding": 4 if s > 0 else 0,
        "randaugment_ops": 2 if s > 0 else 0,
        "randaugment_magnitude": round(9.0 * s, 4),
        "mixup_alpha": round(0.8 * s, 4),
        "cutmix_alpha": round(1.0 * s, 4),
        "label_smoothing": 0.1,
        "drop_path": round(0.1 * s, 4),
        "dropout": 0.0,
    }


def regularisation(recipe: Recipe) -> dict[str, Any]:
    """The recipe's values of REGULARISATION_PARTS."""
    model = dict(recipe.model_overrides)
    a = recipe.augment
    return {
        "crop_padding": a.crop_padding, "randaugment_ops": a.randaugment_ops, "randaugment_magnitude": a.randaugment_magnitude,
        "mixup_alpha": a.mixup_alpha, "cutmix_alpha": a.cutmix_alpha, "label_smoothing": a.label_smoothing,
        "drop_path": model.get("drop_path", 0.0), "dropout": model.get("dropout", 0.0),
    }


def resolve(recipe: Recipe, epochs: float, overrides: dict[str, Any] | None = None) -> Recipe:
    """The recipe as a run of `epochs` epochs uses it: a length-scaled recipe's regularisation for that
    length, then each explicitly given part (`overrides`, from --mixup, --drop-path, ...) on top."""
    parts = regularisation(recipe)
    if recipe.length_scaled:
        parts.update(length_scaled_regularisation(epochs))
    given = set()
    for name, value in (overrides or {}).items():
        if name not in REGULARISATION_PARTS:
            raise RecipeError(f"unknown regularisation {name!r}: use one of {REGULARISATION_PARTS}")
        if value is not None:
            parts[name] = value
            given.add(name)
    _check_parts(parts)
    augment = dataclasses.replace(
        recipe.augment, **{k: parts[k] for k in ("crop_padding", "randaugment_ops", "randaugment_magnitude", "mixup_alpha",
                                                  "cutmix_alpha", "label_smoothing")}
    )
    # The model's rates (model_overrides: what `vit train --init-from` sets on the checkpoint's config): a flag's,
    # zero included; else the recipe's where it names the rate or scales it above zero. A rate neither sets is
    # left out, so a fine-tune keeps the checkpoint's (as_trained then reports it).
    model = dict(recipe.model_overrides)
    for name in MODEL_PARTS:
        if name in given or parts[name] or name in model:
            model[name] = parts[name]
    return recipe.replace(augment=augment, model_overrides=tuple(sorted(model.items())))


def as_trained(recipe: Recipe, config: ViTConfig) -> Recipe:
    """The resolved recipe as the model `config` trains with it, for everything a run reports (describe,
    config.json): augmentation normalising with the model's constants (a fine-tuned checkpoint brings its own),
    and the model's own rates in model_overrides (a fine-tune keeps the checkpoint's dropout or drop_path where
    neither the recipe nor a flag sets it; its attention dropout, which no flag sets, is recorded where non-zero)."""
    augment = dataclasses.replace(recipe.augment, mean=config.image_mean, std=config.image_std)
    model = {**dict(recipe.model_overrides), **{name: getattr(config, name) for name in MODEL_PARTS}}
    if config.attention_dropout:
        model["attention_dropout"] = config.attention_dropout
    return recipe.replace(augment=augment, model_overrides=tuple(sorted(model.items())))


def _check_parts(parts: dict[str, Any]) -> None:
    if not (isinstance(parts["crop_padding"], int) and parts["crop_padding"] >= 0):
        raise RecipeError(f"--crop-padding must be an int >= 0 (0: no random crop), got {parts['crop_padding']!r}")
    if not (isinstance(parts["randaugment_ops"], int) and 0 <= parts["randaugment_ops"] <= 14):
        raise RecipeError(f"--randaugment-ops must be an int in 0..14, got {parts['randaugment_ops']!r}")
    if not 0 <= parts["randaugment_magnitude"] <= 10:
        raise RecipeError(f"--randaugment-magnitude must be in [0, 10] (timm's levels), got {parts['randaugment_magnitude']}")
    for name, flag in (("mixup_alpha", "--mixup"), ("cutmix_alpha", "--cutmix")):
        if parts[name] < 0:
            raise RecipeError(f"{flag} (a Beta alpha) must be >= 0 (0: off), got {parts[name]}")
    for name, flag in (("label_smoothing", "--label-smoothing"), ("drop_path", "--drop-path"), ("dropout", "--dropout")):
        if not 0 <= parts[name] < 1:
            raise RecipeError(f"{flag} must be in [0, 1), got {parts[name]}")


def describe(recipe: Recipe, epochs: float) -> str:
    """One line for the start of a run: the recipe and the regularisation it resolved to (after as_trained:
    the model's own rates, a fine-tuned checkpoint's attention dropout included where non-zero)."""
    parts = regularisation(recipe)
    how = (f"scaled to {epochs:g} epochs (strength {regularisation_strength(epochs):.2f})"
           if recipe.length_scaled else "fixed")
    attention = dict(recipe.model_overrides).get("attention_dropout")  # a checkpoint's (as_trained)
    if attention:
        parts["attention_dropout"] = attention
    shown = ", ".join(f"{k} {v:g}" for k, v in parts.items())
    return f"recipe {recipe.name}: lr {recipe.lr:g}, {optimizer_text(recipe)}, {recipe.schedule}; regularisation {how}: {shown}"


def optimizer_text(recipe: Recipe) -> str:
    """The optimizer in a few words: "sgd (momentum 0.9)", "adamw (weight decay 0.05, layer decay 0.65)"."""
    details = [f"momentum {recipe.momentum:g}"] if recipe.optimizer == "sgd" else []
    if recipe.weight_decay or recipe.optimizer != "sgd":
        details.append(f"weight decay {recipe.weight_decay:g}")
    if recipe.layer_decay is not None:
        details.append(f"layer decay {recipe.layer_decay:g}")
    return f"{recipe.optimizer} ({', '.join(details)})"


def get_recipe(
    name: str,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    optimizer: str | None = None,
    weight_decay: float | None = None,
    layer_decay: float | None = None,
) -> Recipe:
    """The named recipe with the command line's overrides applied (None: the recipe's)."""
    if name not in RECIPES:
        raise RecipeError(f"unknown recipe {name!r}: use one of {sorted(RECIPES)}")
    recipe = RECIPES[name]
    if epochs is not None:
        if epochs <= 0:
            raise RecipeError(f"--epochs must be positive, got {epochs}")
        recipe = recipe.replace(epochs=epochs)
    if batch_size is not None:
        if batch_size <= 0:
            raise RecipeError(f"--batch-size must be positive, got {batch_size}")
        recipe = recipe.replace(batch_size=batch_size)
    if lr is not None:
        if not lr > 0:
            raise RecipeError(f"--lr must be positive, got {lr}")
        recipe = recipe.replace(lr=lr)
    if optimizer is not None:
        if optimizer not in OPTIMIZERS:
            raise RecipeError(f"unknown --optimizer {optimizer!r}: use one of {OPTIMIZERS}")
        recipe = recipe.replace(optimizer=optimizer)
    if weight_decay is not None:
        if not weight_decay >= 0:
            raise RecipeError(f"--weight-decay must be at least 0, got {weight_decay}")
        recipe = recipe.replace(weight_decay=weight_decay)
    if layer_decay is not None:
        if not 0 < layer_decay <= 1:
            raise RecipeError(f"--layer-decay must be in (0, 1] (1: every layer at the full rate), got {layer_decay}")
        recipe = recipe.replace(layer_decay=layer_decay)
    return recipe
