"""Whole training runs agree: the JAX trainer's step and the PyTorch trainer's step, from the same weights on
the same batches of real CIFAR-10, give the same loss at every step and the same parameters at the end.

Each recipe runs with its own optimizer, clipping, label smoothing and schedule over 50 steps (epochs of 2
steps, so that the tutorial's StepLR halves the rate at step 40 and the default's warmup and cosine both
happen); augmentation and dropout are off, so both twins see identical inputs.

As in test_twins_training_step.py, the key bias is set apart: its gradient is zero in exact arithmetic, so
Adam turns each framework's rounding noise into full-size steps of its own; it never changes the output.
"""

from __future__ import annotations

import numpy as np
import pytest

from parity_tests.test_twins_training_step import _without_key_bias
from twins import jax_side, lockstep, torch_side
from twins.differences import compare
from vit_spec import ViTConfig, random_weights

STEPS, STEPS_PER_EPOCH, BATCH = 50, 2, 32
# Losses at every step (relative) and final parameters (max |diff| scaled by max |torch|, per tensor).
LOSS_TOL = {"float32": 1e-5, "float64": 1e-12}
PARAM_TOL = {"float32": 1e-4, "float64": 1e-12}

pytestmark = pytest.mark.xdist_group("training_run")

# The tests train the tutorial model at half its depth and width (the same patches, tokens and head size): every
# layer kind and a block feeding a block, at a sixth of the arithmetic (float64 on 2 CPU cores made the full model
# a minute and more a run). training_report.py measures the full tutorial model.
SMALL = dict(depth=2, width=64, heads=4, mlp_dim=128)


def _cifar_batches(steps: int, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from train import data as data_lib

    from tests.test_train_run import cifar_dir

    source = data_lib.open_sources("cifar10", cifar_dir())["train"]
    split = data_lib.read_split(source, range(steps * batch))
    order = data_lib.BatchOrder(len(split), batch, seed=0)
    return [(split.images[order.indices(s)], split.labels[order.indices(s)]) for s in range(steps)]


@pytest.fixture(scope="module")
def batches():
    return _cifar_batches(STEPS // 2, BATCH)  # two epochs of the same examples, reshuffled


def _runs(recipe_name: str, dtype: str, batches, **model: int):
    recipe = lockstep.lockstep_recipe(recipe_name, BATCH)
    if recipe_name == "default":
        recipe = recipe.replace(lr=2e-3, clip_norm=0.5)  # a rate that moves the weights, a clip that bites
    config = ViTConfig.from_variant("tutorial", **model, **dict(recipe.model_overrides))
    weights = random_weights(config, seed=0)
    run = lambda fn: fn(config, recipe, weights, (batches * 2)[:STEPS], STEPS_PER_EPOCH, STEPS, dtype)
    return config, weights, run(torch_side.lockstep_steps), run(jax_side.lockstep_steps)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("recipe_name", ["tutorial", "default"])
def test_fifty_steps_agree(recipe_name, dtype, batches):
    run = _runs(recipe_name, dtype, batches, **SMALL)
    config, weights, (torch_metrics, torch_params), (jax_metrics, jax_params) = run
    torch_loss = np.array([m["loss"] for m in torch_metrics])
    jax_loss = np.array([m["loss"] for m in jax_metrics])
    rel = np.abs(jax_loss - torch_loss) / np.abs(torch_loss)
    worst = int(np.argmax(rel))
    assert rel[worst] <= LOSS_TOL[dtype], (
        f"{recipe_name}, {dtype}: the losses part at step {worst}: jax {jax_loss[worst]!r} vs torch {torch_loss[worst]!r} "
        f"(relative {rel[worst]:.2e} > {LOSS_TOL[dtype]:.0e}); first step past tolerance: {int(np.argmax(rel > LOSS_TOL[dtype]))}"
    )
    # The schedule is the same (optax computes it in float32: 1e-6 of the peak) and the run did learn.
    peak = max(m["lr"] for m in torch_metrics)
    assert [m["lr"] for m in jax_metrics] == pytest.approx([m["lr"] for m in torch_metrics], rel=0, abs=1e-6 * peak)
    assert torch_loss[-4:].mean() < 0.9 * torch_loss[:4].mean()
    diffs = compare(_without_key_bias(torch_params, config.width), _without_key_bias(jax_params, config.width),
                           PARAM_TOL[dtype])
    failing = [d for d in diffs if not d.ok]
    assert not failing, f"{recipe_name}, {dtype}: parameters after {STEPS} steps differ:\n" + "\n".join(map(str, failing))
    moved = max(np.abs(torch_params[k] - weights[k]).max() for k in weights if k != "pos_embed")
    assert moved > 1e-3
