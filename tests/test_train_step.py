"""The train step, the on-device augmentation and the optimizers of the two recipes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jax_vit import ViT, init_params
from train import augment, optim
from train.augment import AugmentConfig
from train.recipes import RECIPES, get_recipe
from train.step import TrainState, make_train_step
from vit_spec import ViTConfig

TINY = ViTConfig.from_variant("mu/8", num_classes=10, image_size=32)


def _batch(n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)


def test_loss_decreases_on_a_fixed_batch():
    recipe = RECIPES["default"].replace(lr=3e-3, warmup_epochs=0, augment=AugmentConfig())
    tx, schedule = optim.make_optimizer(recipe, steps_per_epoch=1, total_steps=1000)
    state = TrainState.create(init_params(TINY, 0), tx)
    step = make_train_step(ViT(TINY), tx, schedule, recipe.augment, 10)
    images, labels = _batch()
    # A learnable batch: each class tints its images with its own colour.
    tint = np.random.default_rng(1).integers(0, 128, (10, 1, 1, 3))
    images = (images // 2 + tint[labels]).astype(np.uint8)
    key = jax.random.key(0)
    losses = []
    for _ in range(40):
        state, metrics = step(state, (jnp.asarray(images), jnp.asarray(labels)), key)
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 40
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses


def test_step_is_deterministic_and_depends_on_the_step():
    recipe = RECIPES["default"]
    tx, schedule = optim.make_optimizer(recipe, 10, 100)
    step = make_train_step(ViT(TINY), tx, schedule, recipe.augment, 10)
    images, labels = _batch()
    runs = []
    for _ in range(2):
        state = TrainState.create(init_params(TINY, 0), tx)
        for _ in range(3):
            state, metrics = step(state, (jnp.asarray(images), jnp.asarray(labels)), jax.random.key(1))
        runs.append(jax.tree_util.tree_leaves(state.params))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", ["tutorial", "default"])
def test_augmentation_keeps_shapes_and_labels(name):
    cfg = RECIPES[name].augment
    images, labels = _batch(32)
    x, targets = jax.jit(lambda k, i, l: augment.augment_batch(k, i, l, 10, cfg))(jax.random.key(3), images, labels)
    assert x.shape == (32, 32, 32, 3) and x.dtype == jnp.float32
    assert targets.shape == (32, 10)
    np.testing.assert_allclose(np.asarray(targets).sum(-1), 1.0, rtol=1e-5)
    targets = np.asarray(targets)
    if cfg.mixup_alpha == 0 and cfg.cutmix_alpha == 0 and cfg.label_smoothing == 0:
        np.testing.assert_array_equal(targets.argmax(-1), labels)
        np.testing.assert_array_equal(targets.max(-1), 1.0)
    else:
        # Mixed targets put their mass on the example's own label and its partner's (the reversed batch).
        partner = labels[::-1]
        floor = cfg.label_smoothing / 10
        for i in range(32):
            heavy = set(np.flatnonzero(targets[i] > floor + 1e-6))
            assert heavy <= {labels[i], partner[i]}, (i, heavy)


def test_crop_and_flip_move_pixels_only():
    images, _ = _batch(8)
    x = jnp.asarray(images, jnp.float32)
    cropped = np.asarray(augment.random_crop(jax.random.key(0), x, 4))
    padded = np.pad(images.astype(np.float32), ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in range(8):  # each output is some 32x32 window of the zero-padded input
        windows = [padded[i, a : a + 32, b : b + 32] for a in range(9) for b in range(9)]
        assert any(np.array_equal(cropped[i], w) for w in windows)
    flipped = np.asarray(augment.random_flip(jax.random.key(1), x))
    kinds = [np.array_equal(flipped[i], images[i]) or np.array_equal(flipped[i], images[i, :, ::-1]) for i in range(8)]
    assert all(kinds)
    assert not np.array_equal(flipped, images)  # with 8 images, some flip (seeded)


def test_each_randaugment_op_keeps_shape_and_range():
    images, _ = _batch(4)
    x = jnp.asarray(images, jnp.float32) / 255

    @jax.jit
    def all_ops(x, m):
        return jnp.stack([jax.vmap(lambda im: op(im, m))(x) for op in augment._OPS])

    for m in (-0.9, 0.9):
        out = np.asarray(all_ops(x, jnp.float32(m)))
        assert out.shape == (augment.NUM_RANDAUGMENT_OPS,) + x.shape
        assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1.0 + 1e-6
        changed = [not np.allclose(out[i], x) for i in range(len(out))]
        assert sum(changed) >= augment.NUM_RANDAUGMENT_OPS - 2, changed  # all but identity (and a no-op edge)


def test_mixup_cutmix_mixes_targets_like_images():
    cfg = AugmentConfig(cutmix_alpha=1.0, mix_prob=1.0)
    images = jnp.zeros((4, 32, 32, 3)).at[:2].set(1.0)  # first half white, second black
    targets = jax.nn.one_hot(jnp.asarray([0, 0, 1, 1]), 2)
    mixed, t = augment.mix(jax.random.key(5), images, targets, cfg)
    # The white fraction of each image equals its target weight on class 0 (CutMix's area lambda).
    np.testing.assert_allclose(np.asarray(mixed).mean((1, 2, 3)), np.asarray(t)[:, 0], atol=1e-6)


def test_masked_weight_decay_leaves_biases_norms_and_embeddings_alone():
    params = init_params(TINY, 0)  # every kind of leaf the big models have, at a fraction of the cost
    mask = optim.weight_decay_mask(params)
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): v for path, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
    assert flat["cls_token"] is False and flat["pos_embed"] is False
    assert flat["patch_embed/proj/kernel"] is True and flat["head/kernel"] is True
    for name, decays in flat.items():
        assert decays == name.endswith("kernel"), name
    # Behaviour: with zero gradients only the decayed leaves move.
    recipe = RECIPES["default"].replace(warmup_epochs=0)
    tx, _ = optim.make_optimizer(recipe, 1, 100)
    opt_state = tx.init(params)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    new = params
    update = jax.jit(tx.update)
    for _ in range(2):  # the first step's learning rate is 0 (warmup starts there)
        updates, opt_state = update(zeros, opt_state, new)
        new = optax.apply_updates(new, updates)
    moved = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), params, new)
    for path, did_move in jax.tree_util.tree_flatten_with_path(moved)[0]:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        if not name.endswith("kernel"):
            assert not did_move, name
        elif "head" not in name:  # the head kernel starts at zero: decay leaves it at zero
            assert did_move, name


def test_tutorial_optimizer_is_torch_adam_with_l2_and_steplr():
    torch = pytest.importorskip("torch")
    recipe = RECIPES["tutorial"]
    tx, schedule = optim.make_optimizer(recipe, steps_per_epoch=2, total_steps=200)
    assert float(schedule(0)) == pytest.approx(3e-4) and float(schedule(39)) == pytest.approx(3e-4)
    assert float(schedule(40)) == pytest.approx(1.5e-4) and float(schedule(80)) == pytest.approx(7.5e-5)
    w0 = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    tw = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = torch.optim.Adam([tw], lr=3e-4, weight_decay=1e-4)
    params, state = {"w": jnp.asarray(w0)}, tx.init({"w": jnp.asarray(w0)})
    for i in range(5):
        g = np.random.default_rng(i + 1).normal(size=(5, 3)).astype(np.float32)
        tw.grad = torch.from_numpy(g.copy())
        topt.step()
        updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(params["w"]), tw.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_default_schedule_warms_up_then_decays_to_zero():
    recipe = get_recipe("default", epochs=10)
    _, schedule = optim.make_optimizer(recipe, steps_per_epoch=100, total_steps=1000)
    warmup = 100  # a tenth of the run: shorter than 5 epochs
    assert float(schedule(0)) == 0.0
    assert float(schedule(warmup)) == pytest.approx(1e-3)
    assert float(schedule(550)) == pytest.approx(5e-4, rel=1e-2)
    assert float(schedule(1000)) == pytest.approx(0.0, abs=1e-9)
