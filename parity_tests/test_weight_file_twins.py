"""One weight file for both twins: saved by one framework, loaded by the other, bit for bit;
and the same file is a timm VisionTransformer state dict (strict=True)."""

import functools

import numpy as np
import pytest
import torch

import jax_vit
import torch_vit
from parity_tests.matrix import CONFIGS, weights_and_images
from vit_spec import ViTConfig

SMALL = [n for n in CONFIGS if not n.startswith(("Ti/", "B/"))]


@pytest.mark.parametrize("name", SMALL)
def test_saved_by_jax_loaded_by_torch_is_bit_identical(name, tmp_path):
    config, weights, _ = weights_and_images(name)
    params = jax_vit.params_from_state_dict(config, weights)
    jax_vit.save(tmp_path / "w.safetensors", config, params)
    model = torch_vit.load(tmp_path / "w.safetensors")
    assert model.config == config
    for key, value in model.state_dict().items():
        assert np.array_equal(value.numpy(), weights[key]), key


@pytest.mark.parametrize("name", SMALL)
def test_saved_by_torch_loaded_by_jax_is_bit_identical(name, tmp_path):
    config, weights, _ = weights_and_images(name)
    torch_vit.save(tmp_path / "w.safetensors", torch_vit.model_from_state_dict(config, weights))
    loaded_config, params = jax_vit.load(tmp_path / "w.safetensors")
    assert loaded_config == config
    expected = jax_vit.params_from_state_dict(config, weights)
    import jax

    assert jax.tree.structure(params) == jax.tree.structure(expected)
    assert jax.tree.all(jax.tree.map(np.array_equal, params, expected))


def _timm_model(config: ViTConfig):
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=config.image_size,
        patch_size=config.patch_size,
        in_chans=config.channels,
        num_classes=config.num_classes,
        embed_dim=config.width,
        depth=config.depth,
        num_heads=config.heads,
        mlp_ratio=config.mlp_dim / config.width,
        qkv_bias=config.qkv_bias,
        class_token=config.pool == "cls",
        global_pool="token" if config.pool == "cls" else "avg",
        fc_norm=False,
        norm_layer=functools.partial(torch.nn.LayerNorm, eps=config.layer_norm_eps),
    ).eval()


@pytest.mark.parametrize("name", ["tutorial", "nonsquare_image_and_patch", "mean_pool", "sincos2d", "one_head", "Ti/16"])
def test_timm_loads_our_state_dict_strictly_and_computes_the_same_logits(name):
    config, weights, images = weights_and_images(name)
    ours = torch_vit.model_from_state_dict(config, weights)
    timm_model = _timm_model(config)
    timm_model.load_state_dict(ours.state_dict(), strict=True)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    with torch.no_grad():
        diff = (timm_model(x) - ours(x)).abs().max() / timm_model(x).abs().max()
    assert diff <= 1e-5, f"{name}: logits differ from timm's by {diff:.2e} (scaled)"
