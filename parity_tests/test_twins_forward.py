"""The JAX and PyTorch twins, given the same weights and images, compute the same tensors.

Compared: the patch embedding (before and after the position embedding), every layer's attention
probabilities, every block's output, the final norm, the pooled features, the pre-logits and the
logits, and the logits once more through each framework's fused attention kernel. Differences are
max |jax - torch| scaled by max |torch|: at most 1e-5 in float32, 1e-12 in float64.
"""

import pytest

from parity_tests.matrix import CONFIGS, DTYPES, assert_agree, config_params, parity_run


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", config_params())
def test_every_layer_agrees(name, dtype):
    report = parity_run(name, dtype)
    assert_agree(report.forward, f"{name}, {dtype}, forward")


@pytest.mark.parametrize("name", config_params(["tutorial", "nonsquare_image_and_patch", "mean_pool", "sincos2d"]))
def test_small_configs_agree_to_the_float32_floor(name):
    # Rounding alone: a straightforward port sits near 1e-6 on small models; 2e-6 leaves headroom.
    worst = max(parity_run(name, "float32").forward, key=lambda d: d.scaled)
    assert worst.scaled <= 2e-6, f"{name}: {worst}"


@pytest.mark.xdist_group("tutorial")
def test_compared_tensors_cover_every_layer():
    config, _ = CONFIGS["tutorial"]
    names = [d.name for d in parity_run("tutorial", "float32").forward]
    expected = ["patch_embed", "embed"]
    for i in range(config.depth):
        expected += [f"blocks.{i}.attn_probs", f"blocks.{i}"]
    expected += ["encoded", "pooled", "logits", "logits (fused attention)"]
    assert names == expected


@pytest.mark.parametrize("name", config_params(["dinov2_like", "eva_like", "geglu_no_final_norm_rms_map"]))
def test_scanned_blocks_agree_on_feature_configs(name):
    """ViT(scan_blocks=True) stacks the features' block tensors (layer scale, qk-norm, GLU MLPs, RMSNorm) over
    depth like the rest, and computes the PyTorch twin's logits."""
    import jax
    import numpy as np

    from jax_vit import ViT, params_from_state_dict
    from jax_vit.inference import matmul_precision
    from parity_tests.matrix import weights_and_images
    from twins import torch_side
    from twins.differences import FORWARD_TOL, scaled_difference

    config, weights, images = weights_and_images(name)
    with matmul_precision("float32"):
        params = params_from_state_dict(config, weights, scan_blocks=True)
        out = np.asarray(jax.jit(ViT(config, scan_blocks=True).apply)({"params": params}, images))
    _, scaled = scaled_difference(out, torch_side.forward(config, weights, images)["logits"].astype(np.float64))
    assert scaled <= FORWARD_TOL["float32"], f"{name}: scanned JAX logits differ from PyTorch's by {scaled:.2e} (scaled)"
