"""`vit train --init-from FILE --freeze backbone`: linear probing in both trainers. Only the head trains (and a
distilled model's second head); every other tensor comes out bit for bit as the checkpoint put it in; the JAX step
never differentiates the backbone; freezing a random backbone is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_train_run import assert_same_weights, options, tiny_dataset
from train.param_groups import trains
from vit_cli.main import main
from vit_spec import ViTConfig, load_weights, random_weights, save_weights
from vit_spec.formats import load_checkpoint

pytestmark = pytest.mark.xdist_group("train_freeze")

SOURCE = ViTConfig(image_size=16, patch_size=4, width=32, depth=2, heads=4, mlp_dim=64, num_classes=5)
HEAD = ("head.weight", "head.bias")


@pytest.fixture(scope="module")
def source_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("source") / "source.safetensors"
    save_weights(path, SOURCE, random_weights(SOURCE, seed=7))
    return path


def _frozen_run(source_file: Path, workdir: Path, framework: str, **changes) -> dict[str, np.ndarray]:
    """A 4-step finetune run of `framework` with --freeze backbone; the weights it saved."""
    base = dict(recipe="finetune", init_from=str(source_file), freeze="backbone", steps=4, framework=framework)
    run_options = options(workdir, **{**base, **changes})
    if framework == "jax":
        from train.jax_loop.trainer import train
    else:
        from train.torch_loop.trainer import train
    result = train(run_options, dataset=tiny_dataset())
    assert all(r["grad_norm"] > 0 for r in result.records if r["kind"] == "train")  # the head's gradient
    assert json.loads((workdir / "config.json").read_text())["freeze"] == "backbone"
    return load_weights(workdir / "model.safetensors")[1]


def _assert_only_the_head_trained(source_file: Path, trained: dict[str, np.ndarray]) -> None:
    _, start = load_checkpoint(source_file, image_size=32, num_classes=10)  # the backbone as the run loaded it
    backbone = [name for name in trained if name not in HEAD]
    assert len(backbone) > 10 and set(backbone) <= set(start)
    for name in backbone:
        assert trained[name].tobytes() == start[name].tobytes(), f"{name} moved under --freeze backbone"
    # The new head starts at zero (big_vision's fine-tuning), and trained.
    assert np.abs(trained["head.weight"]).max() > 0 and np.abs(trained["head.bias"]).max() > 0


def test_jax_trains_only_the_head_and_keeps_the_backbone_bit_for_bit(source_file, tmp_path):
    # Two steps per call (a scan over the frozen step) and drop path on: the backbone still does not move.
    changes = dict(steps_per_dispatch=2, log_every=2, checkpoint_every=2, regularisation={"drop_path": 0.1})
    trained = _frozen_run(source_file, tmp_path / "run", "jax", **changes)
    _assert_only_the_head_trained(source_file, trained)
    # Its checkpoints (an optimizer state of the head only) resume: as if killed after step 2, the same weights.
    shutil.copytree(tmp_path / "run", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "4")
    (tmp_path / "resumed" / "model.safetensors").unlink()
    assert_same_weights(_frozen_run(source_file, tmp_path / "resumed", "jax", **changes), trained)


def test_torch_trains_only_the_head_and_keeps_the_backbone_bit_for_bit(source_file, tmp_path):
    trained = _frozen_run(source_file, tmp_path / "run", "torch", regularisation={"drop_path": 0.1})
    _assert_only_the_head_trained(source_file, trained)


def test_the_frozen_jax_step_never_differentiates_the_backbone():
    """The program JAX hands XLA, by XLA's count of its floating-point operations (before optimisation: XLA could
    drop gradients computed and then discarded, and hide it). The backward pass of a matmul costs twice its forward,
    so a step that differentiates the backbone costs about three forward passes; one that differentiates only the
    head (whose input is then a constant) about one. Computing the backbone's gradients and zeroing or masking them
    afterwards (optax.set_to_zero, a zero learning rate) would cost as much as the full step: this fails then."""
    import jax

    from jax_vit import ViT, init_params
    from train.jax_loop.optim import make_optimizer
    from train.jax_loop.step import TrainState, make_update_step
    from train.recipes import RECIPES

    config = SOURCE.replace(image_size=32, num_classes=10)
    recipe = RECIPES["finetune"]
    tx, schedule = make_optimizer(recipe, 10, 100)
    update = make_update_step(ViT(config), tx, schedule)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 10, 16)
    targets = np.eye(10, dtype=np.float32)[labels]
    params = init_params(config, 0)
    flops, states = {}, {}
    for freeze in (None, "backbone"):
        states[freeze] = TrainState.create(params, tx, freeze)
        cost = update.lower(states[freeze], x, targets, labels, jax.random.key(0)).cost_analysis()  # traced, not run
        flops[freeze] = (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]
    assert flops["backbone"] < 0.5 * flops[None], flops
    # And the optimizer state (SGD's momentum) covers the head only.
    state = states["backbone"]
    modules = {next(k.key for k in path if isinstance(k, jax.tree_util.DictKey))
               for path, _ in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
               if any(isinstance(k, jax.tree_util.DictKey) for k in path)}
    assert modules == {"head"}


def test_a_distilled_models_two_heads_train_and_nothing_else():
    """The rule on names both twins apply (train.param_groups.trains), on a distilled model: in the JAX split of the
    parameters, and in the PyTorch step's optimizer (whose clipping and grad_norm cover what it holds)."""
    import torch_vit
    from jax_vit import init_params
    from train.jax_loop.step import split_trainable
    from train.recipes import RECIPES
    from train.torch_loop.step import TrainStep

    config = SOURCE.replace(distilled=True)
    assert [n for n in torch_vit.ViT(config).state_dict() if trains(n, "backbone")] == [
        "head.weight", "head.bias", "head_dist.weight", "head_dist.bias"]
    assert all(trains(n, None) for n in torch_vit.ViT(config).state_dict())
    trainable, frozen = split_trainable(init_params(config, 0), "backbone")
    assert sorted(trainable) == ["head", "head_dist"] and "blocks_0" in frozen and "dist_token" in frozen

    model = torch_vit.ViT(config)
    step = TrainStep(model, RECIPES["finetune"], 10, 100, config.num_classes, freeze="backbone")
    in_optimizer = {id(p) for g in step.optimizer.param_groups for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in in_optimizer}
    assert names == {"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == names
    assert len(step.params) == 4


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_freezing_a_random_backbone_is_refused(framework, tmp_path):
    if framework == "jax":
        from train.jax_loop.trainer import train
    else:
        from train.torch_loop.trainer import train
    with pytest.raises(ValueError, match=r"--freeze backbone trains the head on a pretrained backbone: give the "
                                         r"checkpoint with --init-from FILE"):
        train(options(tmp_path / "run", freeze="backbone", framework=framework), dataset=tiny_dataset())
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_vit_train_refuses_freeze_without_init_from(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("train.data.load", lambda name, data_dir=None: tiny_dataset())
    code = main(["train", "--freeze", "backbone", "--steps", "1", "--no-progress", "--workdir", str(tmp_path / "run")])
    assert code == 2
    assert "--freeze backbone trains the head on a pretrained backbone" in capsys.readouterr().err
