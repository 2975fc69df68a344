"""train.schedule (what the PyTorch trainer sets) is the learning rate optax computes in train.jax_loop.optim."""

from __future__ import annotations

import numpy as np
import pytest

from train.jax_loop.optim import lr_schedule
from train.recipes import get_recipe
from train.schedule import learning_rate, warmup_steps


@pytest.mark.parametrize("name, epochs, spe", [("default", 200, 351), ("default", 5, 351), ("default", 1, 7),
                                               ("tutorial", 50, 390), ("tutorial", 3, 5)])
def test_every_step_has_optax_rate(name, epochs, spe):
    recipe = get_recipe(name, epochs=epochs)
    total = epochs * spe
    ours, theirs = learning_rate(recipe, spe, total), lr_schedule(recipe, spe, total)
    steps = np.unique(np.linspace(0, total, 400).astype(int))
    got = np.array([ours(int(s)) for s in steps])
    want = np.array([float(theirs(int(s))) for s in steps])
    # optax computes in float32: 2 ulps of the peak rate.
    np.testing.assert_allclose(got, want, rtol=0, atol=2.5e-7 * recipe.lr)


def test_shapes_of_the_schedules():
    default = get_recipe("default", epochs=200)
    lr = learning_rate(default, 100, 20000)
    warm = warmup_steps(default, 100, 20000)
    assert warm == 500 and lr(0) == 0 and lr(warm) == pytest.approx(default.lr) and lr(20000) == pytest.approx(0, abs=1e-12)
    assert lr(250) == pytest.approx(default.lr / 2)
    tutorial = get_recipe("tutorial", epochs=50)
    lr = learning_rate(tutorial, 10, 500)
    assert lr(199) == tutorial.lr and lr(200) == tutorial.lr / 2 and lr(400) == tutorial.lr / 4  # StepLR, every 20 epochs
