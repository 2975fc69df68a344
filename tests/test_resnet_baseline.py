"""The tutorial's reference CNN (train.torch_loop.resnet_baseline, `vit baseline`): the CIFAR ResNet-18 as the baselines
build it, its recipe's schedule, and a run that resumes bit-exactly and can be plotted beside ViT runs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from train.data import Dataset, Split  # noqa: E402
from train.torch_loop.resnet_baseline import ResNetRecipe, parameter_count, resnet18_cifar, train  # noqa: E402
from train.run import TrainOptions  # noqa: E402


def tiny_cifar(n_train: int = 24, n_test: int = 8) -> Dataset:
    rng = np.random.default_rng(0)
    split = lambda n: Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32))
    return Dataset("tiny", 10, split(n_train), split(n_test))


def test_the_model_is_the_cifar_resnet18_of_the_baselines():
    model = resnet18_cifar(10)
    # kuangliu's pytorch-cifar ResNet18: 11,173,962 parameters (torchvision's ImageNet resnet18 with a 10-way head
    # and a 7x7 stem would have 11,181,642).
    assert parameter_count(model) == 11_173_962
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    features = {}
    model.layer4.register_forward_hook(lambda m, i, o: features.update(layer4=o.shape))
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert features["layer4"] == (2, 512, 4, 4)  # 32 -> 32, 16, 8, 4: the stem keeps the resolution


def test_the_schedule_warms_up_to_the_peak_then_decays_to_zero():
    recipe = ResNetRecipe()
    total = 1000
    lrs = [recipe.learning_rate(s, total) for s in range(total + 1)]
    assert lrs[0] == 0.0
    assert lrs[150] == pytest.approx(0.1)  # 15% warmup
    assert max(lrs) == pytest.approx(0.1)
    assert all(a <= b for a, b in zip(lrs[:150], lrs[1:151]))
    assert all(a >= b for a, b in zip(lrs[150:], lrs[151:]))
    assert lrs[total] == pytest.approx(0.0, abs=1e-12)


def _options(workdir, **kw):
    return TrainOptions(workdir=str(workdir), validation=8, log_every=2, progress=False, framework="torch", **kw)


def test_a_run_resumed_from_its_checkpoint_ends_bit_identical(tmp_path):
    recipe = dataclasses.replace(ResNetRecipe(), batch_size=8)
    data = tiny_cifar()
    whole = train(_options(tmp_path / "whole", epochs=2), recipe, data)
    again = tmp_path / "again"
    train(_options(again, epochs=2), recipe, data)
    steps = sorted(int(p.stem.split("_")[1]) for p in (again / "checkpoints").glob("step_*.pt"))
    assert steps == [2, 4]
    (again / "checkpoints" / "step_4.pt").unlink()  # as if killed after epoch 1
    (again / "model.pt").unlink()
    resumed = train(_options(again, epochs=2), recipe, data)
    assert resumed == whole
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    b = torch.load(again / "model.pt", weights_only=True)
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resuming"
    records = [json.loads(line) for line in (again / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in records} == {"train", "eval"}
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == sorted(set(train_steps)), "a resumed run repeats no metrics rows"
    assert [r["step"] for r in records if r["kind"] == "eval" and r["split"] == "test"] == [4]
