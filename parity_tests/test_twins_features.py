"""Both twins give the same features: forward_features' final tokens, split into prefix and patch tokens
(vit_spec.tokens.split_tokens), and forward_head's pooled feature and logits, to 1e-5 scaled, on the configs of
timm's architecture features and the standard ones."""

from __future__ import annotations

import numpy as np
import pytest

from jax_vit import inference as jax_inference
from parity_tests.matrix import FEATURE_CONFIGS, config_params, weights_and_images
from torch_vit import inference as torch_inference
from twins.differences import scaled_difference
from vit_spec.tokens import split_tokens

TOL = 1e-5
NAMES = ["tutorial", "mean_pool", "representation_size", "grayscale_no_head", *FEATURE_CONFIGS]


@pytest.mark.parametrize("name", config_params(NAMES))
def test_tokens_and_pooled_features_agree(name):
    config, weights, images = weights_and_images(name)
    jax_tokens, jax_pooled = jax_inference.features(config, weights, images)
    torch_tokens, torch_pooled = torch_inference.features(config, weights, images)
    batch = len(images)
    assert jax_tokens.shape == torch_tokens.shape == (batch, config.num_tokens, config.width)
    for what, a, b in zip(("prefix tokens", "patch tokens"), split_tokens(jax_tokens, config), split_tokens(torch_tokens, config)):
        assert a.shape == b.shape
        if a.size:
            _, scaled = scaled_difference(a, b)
            assert scaled <= TOL, f"{name}: the {what} differ by {scaled:.2e} (scaled) > {TOL}"
    prefix, patches = split_tokens(torch_tokens, config)
    assert prefix.shape[1] == config.num_prefix_tokens and patches.shape[1] == config.num_patches
    if config.pool == "none":
        assert jax_pooled is None and torch_pooled is None
        return
    assert jax_pooled.shape == torch_pooled.shape == (batch, config.features_dim)
    _, scaled = scaled_difference(jax_pooled, torch_pooled)
    assert scaled <= TOL, f"{name}: the pooled features differ by {scaled:.2e} (scaled) > {TOL}"


@pytest.mark.parametrize("name", config_params(["tutorial", "siglip_like", "deit_distilled", "dinov2_like", "fc_norm_mean"]))
def test_forward_head_of_forward_features_is_the_models_output(name):
    """forward_head(forward_features(x)) is the model's own logits (in PyTorch bit for bit: the same ops), and
    pre_logits its "pre_logits" intermediate, in both twins."""
    import jax
    import torch

    from jax_vit import ViT, params_from_state_dict
    from jax_vit.inference import matmul_precision
    from torch_vit import model_from_state_dict

    config, weights, images = weights_and_images(name)
    model = ViT(config)
    with matmul_precision("float32"):
        variables = {"params": jax.device_put(params_from_state_dict(config, weights))}
        logits, inter = model.apply(variables, images, return_intermediates=True)
        tokens = model.apply(variables, images, method=ViT.forward_features)
        np.testing.assert_allclose(tokens, inter["encoded"], atol=1e-5)
        np.testing.assert_allclose(model.apply(variables, tokens, method=ViT.forward_head), logits, atol=1e-5)
        np.testing.assert_allclose(model.apply(variables, tokens, method=ViT.forward_head, pre_logits=True),
                                   inter["pre_logits"], atol=1e-5)
    net = model_from_state_dict(config, weights).eval()
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    with torch.no_grad():
        logits, inter = net(x, return_intermediates=True)
        tokens = net.forward_features(x)
        # The same ops as the forward pass (fused attention); the intermediates' explicit softmax rounds apart.
        assert torch.equal(net.forward_head(tokens), net(x))
        np.testing.assert_allclose(tokens.numpy(), inter["encoded"].numpy(), atol=1e-5)
        np.testing.assert_allclose(net.forward_head(tokens, pre_logits=True).numpy(), inter["pre_logits"].numpy(), atol=1e-5)
