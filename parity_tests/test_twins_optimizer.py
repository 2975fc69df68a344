"""The optimizers agree update by update: optax (train.jax_loop.optim) and torch.optim (train.torch_loop.optim, .step) given the same
gradients, with the default recipe's warmup+cosine rate, global-norm clipping and weight decay masked to
matrices, with the tutorial's Adam with L2 decay and StepLR, and with the finetune recipe's momentum SGD, alone and
with layer-wise learning-rate decay (as is, with masked weight decay, and its AdamW alternative).

The gradients are the PyTorch twin's, of the label-smoothed loss, fed to both optimizers: what differs is
then the optimizers' arithmetic alone. (Each twin's own gradients feed its own optimizer in
test_twins_training_run.py, where Adam's division by sqrt(v) magnifies their float32 rounding.)
"""

from __future__ import annotations

import numpy as np
import pytest

from twins import lockstep
from twins.differences import compare
from vit_spec import ViTConfig, random_weights

UPDATE_TOL = 1e-6  # max |jax - torch| scaled by max |torch|, per tensor, float32
UPDATES = 4

_FEATURES = dict(image_size=32, patch_size=8, num_classes=10, width=64, depth=2, heads=4, mlp_dim=128)


def _batch(config: ViTConfig, seed: int, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, w = config.image_hw
    return rng.integers(0, 256, (batch, h, w, config.channels), dtype=np.uint8), rng.integers(0, config.num_classes, batch)


def _case(name: str):
    """(recipe, config) of a case: the recipe as the parity suite runs it (twins.lockstep), changed to exercise
    what the case is about, and the model it updates."""
    if name == "default":
        recipe = lockstep.lockstep_recipe("default", 16, clip_norm=0.5)  # a clip that bites
        assert recipe.augment.label_smoothing > 0 and recipe.weight_decay > 0 and recipe.optimizer == "adamw"
    elif name == "tutorial":  # StepLR halving after the second update
        recipe = lockstep.lockstep_recipe("tutorial", 16, step_epochs=2)
    elif name == "sgd":  # the finetune recipe's momentum SGD, with a clip that bites
        recipe = lockstep.lockstep_recipe("finetune", 16, clip_norm=0.5)
        assert (recipe.optimizer, recipe.momentum, recipe.weight_decay, recipe.layer_decay) == ("sgd", 0.9, 0.0, None)
    elif name == "sgd_layer_decay":  # and layer decay, and a masked weight decay (L2 before the momentum)
        recipe = lockstep.lockstep_recipe("finetune", 16, clip_norm=0.5, layer_decay=0.65, weight_decay=0.01)
    else:  # "adamw_layer_decay": the finetune recipe's AdamW alternative (recipes.FINETUNE_ADAMW_FLAGS)
        recipe = lockstep.lockstep_recipe("finetune", 16, lr=5e-4, optimizer="adamw", layer_decay=0.65,
                                          weight_decay=0.05)
    # The finetune cases on a small model with a [CLS] token, two blocks and a final norm: four layer scales.
    config = (ViTConfig.from_variant("tutorial", **dict(recipe.model_overrides)) if name in ("default", "tutorial")
              else ViTConfig(**_FEATURES, **dict(recipe.model_overrides)))
    return recipe, config


@pytest.mark.parametrize("case", ["default", "tutorial", "sgd", "sgd_layer_decay", "adamw_layer_decay"])
def test_optimizer_updates_agree(case):
    import jax
    import optax
    import torch

    from jax_vit import params_from_state_dict, state_dict_from_params
    from torch_vit import model_from_state_dict, state_dict_numpy
    from train.jax_loop.optim import make_optimizer
    from train.torch_loop.step import TrainStep, soft_cross_entropy

    recipe, config = _case(case)
    weights = random_weights(config, seed=0)
    # Epochs of one step in a run of 8: the warmup recipes warm up over update 0 (rate 0), then their cosine starts.
    spe, total = 1, 8
    model = model_from_state_dict(config, weights).train()
    torch_opt = TrainStep(model, recipe, spe, total, config.num_classes)
    tx, schedule = make_optimizer(recipe, spe, total)
    params = jax.tree.map(jax.numpy.asarray, params_from_state_dict(config, weights))
    opt_state = tx.init(params)
    jax_update = jax.jit(lambda g, s, p: tx.update(g, s, p))
    if recipe.layer_decay:  # the groups' rates really differ: stem, block 0, block 1 (+ final norm), head
        assert sorted({g["lr_scale"] for g in torch_opt.optimizer.param_groups}) == pytest.approx(
            [recipe.layer_decay ** k for k in (3, 2, 1, 0)])
    rates = []
    for i in range(UPDATES):
        x, targets = lockstep.lockstep_inputs(_batch(config, i), recipe.augment, config.num_classes, "float32")
        model.zero_grad(set_to_none=True)
        soft_cross_entropy(model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())), torch.from_numpy(targets)).backward()
        grads = {name: p.grad.detach().numpy().copy() for name, p in model.named_parameters()}
        if config.pos_embed == "sincos2d":
            grads["pos_embed"] = np.zeros_like(weights["pos_embed"])
        metrics = torch_opt.apply_gradients(i)
        updates, opt_state = jax_update(params_from_state_dict(config, grads), opt_state, params)
        params = optax.apply_updates(params, updates)
        rates.append((metrics["lr"], float(schedule(i))))
        if recipe.clip_norm and recipe.clip_norm < 1:
            assert metrics["grad_norm"] > recipe.clip_norm, "the clip did not bite"
        diffs = compare(state_dict_numpy(model), state_dict_from_params(config, params), UPDATE_TOL)
        failing = [d for d in diffs if not d.ok]
        assert not failing, f"{case}: parameters after update {i} differ:\n" + "\n".join(map(str, failing))
    for i, (torch_lr, optax_lr) in enumerate(rates):
        assert optax_lr == pytest.approx(torch_lr, rel=1e-6, abs=1e-12), f"update {i}: learning rates differ"
    assert len({r for r, _ in rates}) >= 2 and max(r for r, _ in rates) > 0  # the schedule moved
    moved = max(np.abs(state_dict_numpy(model)[k] - weights[k]).max() for k in weights if k != "pos_embed")
    assert moved > 1e-4


@pytest.mark.parametrize("config", [
    ViTConfig.from_variant("tutorial"),
    ViTConfig(**_FEATURES, layer_scale_init=1e-5, reg_tokens=2, class_token=True, pool="map", mlp="swiglu",
              activation="silu", qk_norm=True),
    ViTConfig(**_FEATURES, distilled=True, norm="rms", mlp="swiglu_packed", activation="silu"),
], ids=["tutorial", "registers_layer_scale_map", "distilled_rms"])
def test_weight_decay_masks_agree(config):
    """The same parameters are decayed: JAX's "kernel" leaves, torch's matrices, both outside
    vit_spec.layout.NO_DECAY_NAMES (position embedding, prefix tokens, MAP latent, layer-scale gains)."""
    import jax

    import torch_vit
    from jax_vit import init_params, state_dict_from_params
    from train.jax_loop.optim import weight_decay_mask
    from train.torch_loop.optim import decays
    from vit_spec import exempt_from_decay

    params = init_params(config, 0)
    as_arrays = jax.tree.map(lambda m, p: np.full(p.shape, float(m), np.float32), weight_decay_mask(params), params)
    jax_decayed = {k for k, v in state_dict_from_params(config, as_arrays).items() if np.all(v == 1)}
    torch_decayed = {n for n, p in torch_vit.ViT(config).named_parameters() if decays(n, p)}
    assert torch_decayed == jax_decayed
    assert "head.weight" in torch_decayed and "pos_embed" not in torch_decayed and "blocks.0.norm1.weight" not in torch_decayed
    exempt = [n for n in state_dict_from_params(config, params) if exempt_from_decay(n)]
    assert exempt and not set(exempt) & torch_decayed
    assert all(n.endswith(".weight") and n.split(".")[-2] not in ("q_norm", "k_norm", "norm") for n in torch_decayed), torch_decayed
