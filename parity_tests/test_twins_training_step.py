"""Whole training steps agree: a few AdamW steps (optax.adamw vs torch.optim.AdamW) on one batch
leave the twins with the same parameters.

One slice is set apart: the key bias. Softmax ignores a constant added to every score of a row, so
the key bias's gradient is zero in exact arithmetic, and what each framework computes for it is
rounding noise, which Adam's division by sqrt(v) blows up to full-size steps. Its gradient is checked
to be that noise (near zero in both twins), and the rest of every parameter to agree.
"""

import numpy as np
import pytest

from parity_tests.matrix import assert_agree, weights_and_images
from twins import differences, jax_side, torch_side


def _without_key_bias(params: dict, width: int) -> dict:
    out = dict(params)
    for name in params:
        if name.endswith("attn.qkv.bias"):
            out[name] = np.concatenate([params[name][:width], params[name][2 * width :]])
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["tutorial", "mean_pool_sincos2d", "representation_size"])
def test_adamw_steps_agree(name, dtype):
    config, weights, images = weights_and_images(name)
    labels = np.arange(images.shape[0]) % config.num_classes
    kwargs = dict(steps=3, lr=1e-3, weight_decay=0.05, dtype=dtype)
    after_torch = torch_side.adamw_steps(config, weights, images, labels, **kwargs)
    after_jax = jax_side.adamw_steps(config, weights, images, labels, **kwargs)
    if config.pos_embed == "sincos2d":
        assert np.array_equal(after_torch["pos_embed"], after_jax["pos_embed"])  # fixed: untouched by both
    diffs = differences.compare(
        _without_key_bias(after_torch, config.width), _without_key_bias(after_jax, config.width), differences.STEP_TOL[dtype]
    )
    assert_agree(diffs, f"{name}, {dtype}, parameters after 3 AdamW steps")
    # And the steps did move the parameters.
    moved = max(np.abs(after_torch[k] - weights[k]).max() for k in weights if k != "pos_embed")
    assert moved > 1e-4


def test_key_bias_gradient_is_rounding_noise_in_both_twins():
    config, weights, images = weights_and_images("tutorial")
    labels = np.arange(images.shape[0]) % config.num_classes
    d = config.width
    for grads in (
        torch_side.gradients(config, weights, images, labels),
        jax_side.gradients(config, weights, images, labels),
    ):
        for i in range(config.depth):
            g = grads[f"blocks.{i}.attn.qkv.bias"]
            assert np.abs(g[d : 2 * d]).max() < 1e-5 * np.abs(g).max()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layer_decay", [None, 0.65], ids=["sgd", "sgd_layer_decay"])
def test_finetune_sgd_steps_agree(layer_decay, dtype):
    """Whole steps of the finetune recipe (momentum SGD, clipping, warmup + cosine; with and without layer decay),
    each twin's own gradients into its own optimizer (twins.lockstep): the same parameters after 4 steps."""
    from twins import lockstep
    from vit_spec import ViTConfig, random_weights

    recipe = lockstep.lockstep_recipe("finetune", 16, lr=0.05, layer_decay=layer_decay)
    config = ViTConfig(image_size=32, patch_size=8, num_classes=10, width=64, depth=2, heads=4, mlp_dim=128)
    weights = random_weights(config, seed=0)
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 16)) for _ in range(4)]
    torch_metrics, after_torch = torch_side.lockstep_steps(config, recipe, weights, batches, 1, 8, dtype)
    jax_metrics, after_jax = jax_side.lockstep_steps(config, recipe, weights, batches, 1, 8, dtype)
    assert [m["lr"] for m in jax_metrics] == pytest.approx([m["lr"] for m in torch_metrics], rel=1e-6)
    diffs = differences.compare(after_torch, after_jax, differences.STEP_TOL[dtype])
    assert_agree(diffs, f"finetune (layer decay {layer_decay}), {dtype}, parameters after 4 SGD steps")
    moved = max(np.abs(after_torch[k] - weights[k]).max() for k in weights)
    assert moved > 1e-4
