"""The Flax twin on its own: inputs it refuses, intermediates, attention, dropout, weight I/O."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_vit
from vit_spec import ViTConfig, random_weights
from vit_spec.inputs import ImageInputError

CONFIG = ViTConfig(image_size=(16, 24), patch_size=4, width=32, depth=2, heads=4, mlp_dim=64, num_classes=5)


@pytest.fixture(scope="module")
def params():
    return jax_vit.params_from_state_dict(CONFIG, random_weights(CONFIG))


def apply(params, images, **kw):
    return jax_vit.ViT(CONFIG).apply({"params": params}, images, **kw)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((2, 3, 16, 24), np.float32), r"which is NCHW; this model takes NHWC.*transpose\(0, 2, 3, 1\)"),
        (np.zeros((2, 16, 24, 3), np.uint8), "must be floating point, got dtype uint8"),
        (np.zeros((2, 16, 24, 3), np.int32), "must be floating point, got dtype int32"),
        (np.zeros((2, 32, 32, 3), np.float32), "images are 32x32 but the model was built for 16x24"),
        (np.zeros((2, 16, 24, 1), np.float32), "images have 1 channels .* built for 3"),
        (np.zeros((16, 24, 3), np.float32), r"4-D NHWC batch.*add a batch axis"),
    ],
)
def test_bad_images_get_a_clear_error(params, images, message):
    with pytest.raises(ImageInputError, match=message):
        apply(params, images)


def test_init_builds_the_shared_layout():
    params = jax_vit.init_params(CONFIG, 0)
    sd = jax_vit.state_dict_from_params(CONFIG, params)
    from vit_spec import param_shapes

    assert {k: v.shape for k, v in sd.items()} == param_shapes(CONFIG)


def test_params_round_trip_through_the_shared_layout_exactly(params):
    sd = jax_vit.state_dict_from_params(CONFIG, params)
    back = jax_vit.params_from_state_dict(CONFIG, sd)
    assert jax.tree.all(jax.tree.map(np.array_equal, params, back))


def test_intermediates_have_the_documented_shapes(params):
    x = np.random.default_rng(0).standard_normal((2, 16, 24, 3)).astype(np.float32)
    logits, inter = apply(params, x, return_intermediates=True)
    assert inter["patch_embed"].shape == (2, 24, 32)
    assert inter["embed"].shape == (2, 25, 32)
    assert [b.shape for b in inter["blocks"]] == [(2, 25, 32)] * 2
    assert [a.shape for a in inter["attn"]] == [(2, 4, 25, 25)] * 2
    np.testing.assert_allclose(np.asarray(inter["attn"][0]).sum(-1), 1.0, rtol=1e-6)
    assert inter["pooled"].shape == (2, 32) and logits.shape == (2, 5)
    # The fused-attention fast path computes the same logits.
    np.testing.assert_allclose(np.asarray(apply(params, x)), np.asarray(logits), atol=1e-5)


def test_the_fast_path_uses_the_packed_attention_with_its_own_gradient(params):
    x = jnp.zeros((2, 16, 24, 3))
    fast = str(jax.make_jaxpr(lambda p, x: apply(p, x))(params, x))
    slow = str(jax.make_jaxpr(lambda p, x: apply(p, x, return_intermediates=True))(params, x))
    # One hand-differentiated attention per layer (jax_vit.attention); the probabilities only on request.
    assert fast.count("name=_xla_attention") == CONFIG.depth and "name=_xla_attention" not in slow
    assert "f32[2,4,25,25]" in slow


def test_train_mode_drops_and_needs_a_dropout_rng():
    config = CONFIG.replace(dropout=0.2, attention_dropout=0.1, drop_path=0.2)
    params = jax_vit.params_from_state_dict(config, random_weights(config))
    model = jax_vit.ViT(config)
    x = np.random.default_rng(0).standard_normal((4, 16, 24, 3)).astype(np.float32)
    eval_a, eval_b = model.apply({"params": params}, x), model.apply({"params": params}, x)
    assert np.array_equal(eval_a, eval_b)
    with pytest.raises(Exception, match="dropout"):
        model.apply({"params": params}, x, train=True)
    a = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(1)})
    b = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(1)})
    c = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert np.array_equal(a, b) and not np.allclose(a, c) and not np.allclose(a, eval_a)


def test_bfloat16_compute_keeps_float32_params(params):
    x = np.random.default_rng(0).standard_normal((2, 16, 24, 3)).astype(np.float32)
    out = jax_vit.ViT(CONFIG, dtype=jnp.bfloat16).apply({"params": params}, x)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(apply(params, x)), atol=0.1)


def test_save_and_load(tmp_path, params):
    jax_vit.save(tmp_path / "w.safetensors", CONFIG, params)
    config, loaded = jax_vit.load(tmp_path / "w.safetensors")
    assert config == CONFIG
    assert jax.tree.all(jax.tree.map(np.array_equal, params, loaded))


def test_jax_vit_never_imports_torch():
    import subprocess
    import sys

    code = "import sys, jax_vit; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
