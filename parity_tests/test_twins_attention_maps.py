"""Both twins draw the same pictures: the attention probabilities that `vit attention` reads from JAX and
from PyTorch, and the rollout and maps made of them, agree to 1e-5 on the same weights and images."""

from __future__ import annotations

import numpy as np
import pytest

from jax_vit.inference import attention as jax_attention
from parity_tests.matrix import CONFIGS, config_params
from torch_vit.inference import attention as torch_attention
from vit_figures.attention import maps_of
from vit_spec import random_weights, save_weights
from vit_spec.attention_maps import rollout

TOL = 1e-5
# The attention configs of the matrix: every pooling (MAP: its pooling attention), prefix tokens (registers, the
# distillation token, a [CLS] token beside mean pooling), position embedding and shape; B/16 adds nothing new.
NAMES = [n for n in CONFIGS if n not in ("B/16", "tutorial_batch1")]


@pytest.mark.parametrize("name", config_params(NAMES))
def test_attention_rollout_and_maps_agree(name, tmp_path):
    config, batch = CONFIGS[name]
    path = tmp_path / "model.safetensors"
    save_weights(path, config, random_weights(config, seed=0))
    h, w = config.image_hw
    images = np.random.default_rng(1).integers(0, 256, (batch, h, w, config.channels), dtype=np.uint8)
    jax_side, torch_side = jax_attention(path, images), torch_attention(path, images)

    assert len(jax_side.layers) == len(torch_side.layers) == config.depth
    for i, (a, b) in enumerate(zip(jax_side.layers, torch_side.layers)):
        assert a.shape == b.shape == (batch, config.heads, config.num_tokens, config.num_tokens)
        diff = float(np.abs(a - b).max())
        assert diff <= TOL, f"{name}: layer {i}'s attention probabilities differ by {diff:.2e} > {TOL}"
    if config.pool == "map":
        assert jax_side.pool.shape == torch_side.pool.shape == (batch, config.heads, 1, config.num_patches)
        diff = float(np.abs(jax_side.pool - torch_side.pool).max())
        assert diff <= TOL, f"{name}: the MAP head's attention differs by {diff:.2e} > {TOL}"
    else:
        assert jax_side.pool is None and torch_side.pool is None
    diff = float(np.abs(rollout(jax_side.layers) - rollout(torch_side.layers)).max())
    assert diff <= TOL, f"{name}: the rollout differs by {diff:.2e} > {TOL}"
    for layer in range(-config.depth, config.depth):
        jm, tm = maps_of(jax_side, config, layer), maps_of(torch_side, config, layer)
        for what in ("heads", "head_mean", "rollout"):
            diff = float(np.abs(getattr(jm, what) - getattr(tm, what)).max())
            assert diff <= TOL, f"{name}: the {what} maps of layer {layer} differ by {diff:.2e} > {TOL}"
    scale = max(float(np.abs(torch_side.logits).max()), 1.0)
    diff = float(np.abs(jax_side.logits - torch_side.logits).max()) / scale
    assert diff <= TOL, f"{name}: the logits beside the maps differ by {diff:.2e} (scaled) > {TOL}"
