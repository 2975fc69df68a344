"""The train step and the optimizers of the two recipes (augmentation: test_train_augment.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jax_vit import ViT, init_params
from train.jax_loop import optim
from train.jax_loop.augment import AugmentConfig
from train.jax_loop.step import TrainState, make_train_step
from train.recipes import RECIPES, get_recipe
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


# Layer-wise learning-rate decay: timm's grouping, by name, in both twins.

@pytest.mark.parametrize("kind", ["cls", "registers"])
def test_layer_scales_are_timms_param_groups_layer_decay_name_by_name(kind):
    """train.param_groups.layer_scales against timm's own param_groups_layer_decay on a timm VisionTransformer of depth
    2 (a [CLS] token; or registers, a pre-norm and layer scale), then the twins' use of it: the PyTorch optimizer's
    groups (same names) and the JAX per-leaf scales (mapped back to timm names), per-block and scanned layouts."""
    timm = pytest.importorskip("timm")
    from timm.optim._param_groups import param_groups_layer_decay

    import torch_vit
    from jax_vit import params_from_state_dict, state_dict_from_params
    from jax_vit.block_layout import stack_blocks, unstack_blocks
    from train.param_groups import layer_id, layer_scales
    from train.recipes import get_recipe
    from train.torch_loop.optim import optimizer_groups
    from vit_spec import random_weights

    extra = dict(reg_tokens=2, pre_norm=True, init_values=1e-5) if kind == "registers" else {}
    model = timm.models.vision_transformer.VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2,
                                                             num_heads=4, num_classes=5, **extra)
    decay = 0.5
    timm_scale = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in param_groups_layer_decay(model, weight_decay=0.05, layer_decay=decay):
        timm_scale.update({names[id(p)]: group["lr_scale"] for p in group["params"]})
    ours = layer_scales(names.values(), decay)
    assert ours == pytest.approx(timm_scale) and ours.keys() == timm_scale.keys()
    # The rule, spelled out: stem 0, block i -> i + 1, the final norm with the last block, the head after.
    assert [layer_id(n, 2) for n in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight",
                                     "blocks.1.mlp.fc2.bias", "norm.weight", "head.weight")] == [0, 0, 0, 1, 2, 2, 3]
    if kind == "registers":
        assert ours["reg_token"] == ours["norm_pre.weight"] == ours["cls_token"] == decay ** 3

    # The same model in the project's layout (timm's names): the twins scale each tensor as timm would.
    config = ViTConfig(image_size=16, patch_size=4, width=32, depth=2, heads=4, mlp_dim=128, num_classes=5,
                       reg_tokens=extra.get("reg_tokens", 0), pre_norm=bool(extra), patch_bias=not extra,
                       layer_scale_init=extra.get("init_values"))
    weights = random_weights(config)
    assert set(weights) == set(timm_scale)
    recipe = get_recipe("finetune", layer_decay=decay)
    torch_model = torch_vit.ViT(config)
    torch_names = {id(p): n for n, p in torch_model.named_parameters()}
    torch_scale = {torch_names[id(p)]: g["lr_scale"] for g in optimizer_groups(torch_model, recipe) for p in g["params"]}
    assert torch_scale == pytest.approx(timm_scale)
    params = params_from_state_dict(config, weights)
    for layout in (params, stack_blocks(params)):
        tree = optim.layer_scale_tree(layout, decay)
        as_arrays = jax.tree.map(lambda s, p: np.broadcast_to(np.asarray(s), p.shape), tree, layout)
        jax_scale = {n: float(np.unique(v).item()) for n, v in state_dict_from_params(config, unstack_blocks(as_arrays)).items()}
        assert jax_scale == pytest.approx(timm_scale)


def test_layer_decay_scales_adamws_decoupled_decay_too():
    """timm scales a group's lr, and AdamW's decoupled decay is lr * wd * param: with zero gradients, a tensor of
    layer scale s shrinks by lr * s * wd per step, in JAX as in torch.optim.AdamW."""
    recipe = get_recipe("finetune", optimizer="adamw", weight_decay=0.5, layer_decay=0.5, lr=0.1).replace(
        warmup_epochs=0, clip_norm=None, schedule="step", step_epochs=1000)
    from jax_vit import params_from_state_dict
    from vit_spec import random_weights

    params = params_from_state_dict(TINY, random_weights(TINY, seed=1))  # a non-zero head too
    tx, _ = optim.make_optimizer(recipe, 1, 100)
    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    depth = TINY.depth
    for path, scale in ((("patch_embed", "proj"), 0.5 ** (depth + 1)), (("blocks_0", "attn", "qkv"), 0.5 ** depth),
                        ((f"blocks_{depth - 1}", "mlp", "fc1"), 0.5), (("head",), 1.0)):
        kernel, update = params, updates
        for key in path + ("kernel",):
            kernel, update = kernel[key], update[key]
        np.testing.assert_allclose(np.asarray(update), -0.1 * scale * 0.5 * np.asarray(kernel), rtol=1e-5, atol=1e-12)


def test_sgd_is_torch_sgd_with_momentum():
    """The finetune recipe's optimizer is torch.optim.SGD(momentum=0.9) (dampening 0, no Nesterov: v = g + m v,
    p -= lr v), its weight decay (where non-zero) added to the gradient before the momentum, as torch's."""
    torch = pytest.importorskip("torch")
    recipe = get_recipe("finetune", weight_decay=0.01).replace(clip_norm=None, schedule="step", step_epochs=1000)
    tx, schedule = optim.make_optimizer(recipe, steps_per_epoch=1, total_steps=100)
    assert float(schedule(0)) == pytest.approx(0.01) and recipe.momentum == 0.9
    w0 = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    tw = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = torch.optim.SGD([tw], lr=0.01, momentum=0.9, weight_decay=0.01)
    params = {"dense": {"kernel": jnp.asarray(w0)}}  # a kernel: decayed under the mask
    state = tx.init(params)
    for i in range(5):
        g = np.random.default_rng(i + 1).normal(size=(5, 3)).astype(np.float32)
        tw.grad = torch.from_numpy(g.copy())
        topt.step()
        updates, state = tx.update({"dense": {"kernel": jnp.asarray(g)}}, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(params["dense"]["kernel"]), tw.detach().numpy(), rtol=1e-6, atol=1e-7)
