"""A ResNet-18 on CIFAR-10: the tutorial's reference point ("ResNet-18 gets ~95%"), measured on this project's
data at the same wall-clock time as a ViT run (`vit baseline`).

A reference, not a twin: PyTorch only, outside torch_vit and the parity suite. The model is torchvision's
`resnet18` in the CIFAR form the standard baselines build (kuangliu's pytorch-cifar, the ResNet papers'
CIFAR experiments): a 3x3 stride-1 stem and no max-pool, so the 32x32 image keeps its resolution into the
first stage; 11.17M parameters. torchvision's, because it is the ResNet-18 everyone already has, and PyTorch's
oneDNN convolutions are what this CPU runs a CNN fastest with.

Its recipe is the CIFAR baselines' own: SGD with Nesterov momentum 0.9, weight decay 5e-4 on every parameter,
batch 128, peak rate 0.1 with a linear warmup (15% of the run) and cosine decay to zero (a one-cycle shape, for
short runs), 4-px padded crop and flip. Its data is the ViT runs': the same tfds splits (5000 training examples
held out for validation), the same BatchOrder, the same torchvision augmentation (train.torch_loop.augment),
torch's RNG seeded per step. Its records are metrics.jsonl's, so `vit plot` draws it beside the ViT runs, and
it resumes from its checkpoints bit-exactly as the trainers do.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from train import run
from train.augment_config import AugmentConfig
from train.data import BatchOrder, Split
from train.metrics import MetricsLog, Progress
from train.recipes import CIFAR10_MEAN, CIFAR10_STD
from train.torch_loop.augment import augment_batch
from train.torch_loop.checkpoint import TorchCheckpoints
from train.torch_loop.optim import global_norm
from train.torch_loop.step import soft_cross_entropy
from train.torch_loop.trainer import step_seed
from vit_spec import atomic_path

MODEL = "resnet18-cifar"


@dataclasses.dataclass(frozen=True)
class ResNetRecipe:
    """The CIFAR ResNet baselines' recipe (kuangliu's pytorch-cifar; "Bag of Tricks" for the warmup)."""

    name: str = MODEL
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    batch_size: int = 128
    warmup_fraction: float = 0.15
    augment: AugmentConfig = AugmentConfig(crop_padding=4, flip=True, mean=CIFAR10_MEAN, std=CIFAR10_STD)

    def learning_rate(self, step: int, total: int) -> float:
        """The rate step `step` of a `total`-step run updates with: linear warmup from 0, then cosine to 0."""
        warmup = max(1, int(self.warmup_fraction * total))
        if step < warmup:
            return self.lr * step / warmup
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total - warmup) / max(total - warmup, 1)))

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def resnet18_cifar(num_classes: int = 10) -> torch.nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem: conv 3x3 stride 1 (64 channels), no max-pool."""
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    torch.nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision's others
    model.maxpool = torch.nn.Identity()
    return model


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: Split, recipe: ResNetRecipe, batch_size: int = 500) -> dict[str, float]:
    """{"accuracy", "loss"} on a split of uint8 NHWC images, normalised as in training, BatchNorm in eval mode."""
    mean = torch.tensor(recipe.augment.mean).view(1, 3, 1, 1)
    std = torch.tensor(recipe.augment.std).view(1, 3, 1, 1)
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(split.labels), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(split.images[start : start + batch_size])).permute(0, 3, 1, 2)
        y = torch.from_numpy(np.asarray(split.labels[start : start + batch_size], np.int64))
        logits = model((x.float() / 255.0 - mean) / std)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
    return {"accuracy": correct / len(split.labels), "loss": loss / len(split.labels)}


def _optimizer(model: torch.nn.Module, recipe: ResNetRecipe) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                           weight_decay=recipe.weight_decay)


def _meta(options: run.TrainOptions, data: run.InMemoryData, recipe: ResNetRecipe, model: torch.nn.Module,
          total: int, spe: int) -> dict[str, Any]:
    """config.json's record, and what a checkpoint must match to be resumed (train.run.check_same_run)."""
    return {
        "framework": "torch",
        "model": MODEL,
        "model_config": {"name": MODEL, "num_classes": data.num_classes, "parameters": parameter_count(model)},
        "dataset": data.name,
        "recipe": recipe.to_dict(),
        "validation": data.validation_record,
        "seed": options.seed,
        "total_steps": total,
        "steps_per_epoch": spe,
    }


def train(options: run.TrainOptions, recipe: ResNetRecipe = ResNetRecipe(), dataset: Any = None) -> dict[str, Any]:
    """Trains (or resumes, in options.workdir) the ResNet-18 for options.epochs (or options.steps) and writes
    metrics.jsonl, curves.png, config.json, checkpoints and model.pt. Returns the final scores by split.

    Args:
        options: the ViT runs' options where they apply: dataset, data_dir, validation, seed, epochs or steps,
            workdir, eval_every, log_every, keep_checkpoints, progress.
        recipe: the baseline's recipe (its batch size is the run's).
        dataset: small in-memory data replacing options.dataset (tests).
    """
    assert options.workdir, "the baseline writes to a workdir: give options.workdir"
    workdir = Path(options.workdir)
    data = run.load_in_memory(options, dataset)
    if data.image_shape[-1] != 3:
        raise ValueError(f"the ResNet baseline reads RGB images; {data.name} has {data.image_shape[-1]} channel(s)")
    order = BatchOrder(len(data.train), recipe.batch_size, options.seed)
    spe = order.steps_per_epoch
    total = options.steps or (options.epochs or 1) * spe

    torch.manual_seed(options.seed)
    model = resnet18_cifar(data.num_classes)
    optimizer = _optimizer(model, recipe)
    meta = _meta(options, data, recipe, model, total, spe)
    checkpoints = TorchCheckpoints(workdir, keep=options.keep_checkpoints)
    start = 0
    restored = checkpoints.restore_latest(meta)
    if restored is not None:
        start, state, _ = restored
        run.check_not_past_end(start, total, workdir)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    workdir.mkdir(parents=True, exist_ok=True)
    with atomic_path(workdir / "config.json") as tmp:
        tmp.write_text(json.dumps({**meta, "options": dataclasses.asdict(options)}, indent=2) + "\n")

    log = MetricsLog(workdir, start)
    progress = Progress(total, start, enabled=options.progress)
    progress.note(f"{MODEL}: torchvision's resnet18 with a 3x3 stem and no max-pool, {parameter_count(model):,} "
                  f"parameters; SGD (Nesterov {recipe.momentum:g}, weight decay {recipe.weight_decay:g}), lr {recipe.lr:g} "
                  f"warmup {recipe.warmup_fraction:.0%} + cosine, batch {recipe.batch_size}, crop + flip")
    progress.note(run.examples_line(len(data.train), data.validation, data.test) + "; on the CPU")
    if start:
        progress.note(f"resuming from step {start} of {total} in {workdir}")
    evals: dict[str, dict[str, float]] = {}
    try:
        pending: list[dict[str, float]] = []
        tick = time.perf_counter()
        for step in range(start, total):
            pending.append(_step(model, optimizer, recipe, data, order, options.seed, step, total))
            progress.update(1)
            done = step + 1
            want_eval = run.wants_eval(done, total, spe, options.eval_every, data.validation is not None)
            want_checkpoint = done == total or done % spe == 0
            if done % options.log_every == 0 or done == total or want_eval or want_checkpoint:
                record = run.summarise(pending, done, spe, recipe.batch_size, time.perf_counter() - tick)
                if not record.pop("finite"):
                    raise run.DivergedError(run.diverged_message(done - len(pending), done, checkpoints.steps(),
                                                                 checkpoints.directory))
                log.write(record)
                progress.show(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.1%}",
                              img_s=f"{record['images_per_s'] or 0:.0f}", lr=f"{record['lr']:.2e}")
                pending = []
            if want_eval:
                score = lambda split: evaluate(model, split, recipe)
                evals.update(run.evaluation_round(data.validation, data.test, done, total, spe, score, log, progress,
                                                  workdir / "curves.png"))
            if want_checkpoint:
                checkpoints.save(done, model, optimizer.state_dict(), meta)
            if want_eval or want_checkpoint or not pending:
                tick = time.perf_counter()
    finally:
        progress.close()
    for name, split in (("validation", data.validation), ("test", data.test)):
        if name not in evals and split is not None:  # a finished run resumed: nothing trained, still report
            evals[name] = evaluate(model, split, recipe)
    with atomic_path(workdir / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    return evals


def _step(model: torch.nn.Module, optimizer: torch.optim.SGD, recipe: ResNetRecipe, data: run.InMemoryData,
          order: BatchOrder, seed: int, step: int, total: int) -> dict[str, float]:
    """One SGD step on batch `step`; its augmentation drawn from torch's RNG seeded by (seed, step)."""
    idx = order.indices(step)
    torch.manual_seed(step_seed(seed, step))
    labels = torch.from_numpy(data.train.labels[idx].astype(np.int64))
    x, targets = augment_batch(torch.from_numpy(data.train.images[idx]), labels, data.num_classes, recipe.augment)
    lr = recipe.learning_rate(step, total)
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    loss = soft_cross_entropy(logits, targets)
    loss.backward()
    norm = global_norm([p.grad for p in model.parameters()])
    finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(norm))
    if finite:
        optimizer.step()
    return {"loss": float(loss.detach()), "accuracy": float((logits.argmax(-1) == labels).float().mean()), "lr": lr,
            "grad_norm": float(norm), "finite": finite}
