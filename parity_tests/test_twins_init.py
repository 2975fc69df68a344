"""Both trainers start from the same distributions: torch_vit.ViT.init_like_flax draws what jax_vit.init_params
draws (per tensor: zero where it is zero, the same mean and spread elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest

from vit_spec import ViTConfig


_TINY = dict(image_size=32, patch_size=4, num_classes=10, width=64, depth=2, heads=4, mlp_dim=128)


@pytest.mark.parametrize("config", [ViTConfig.from_variant("tutorial"), ViTConfig.from_variant("S/16", num_classes=10),
                                    ViTConfig(**_TINY, representation_size=48),
                                    ViTConfig(**_TINY, layer_scale_init=1e-5, reg_tokens=2, pool="map", qk_norm=True,
                                              mlp="swiglu", activation="silu", pre_norm=True, patch_bias=False),
                                    ViTConfig(**_TINY, distilled=True, norm="rms", mlp="geglu", mlp_norm=True)],
                         ids=["tutorial", "S/16", "representation_size", "registers_map_swiglu", "distilled_rms_geglu"])
def test_the_pytorch_init_draws_from_the_jax_distributions(config):
    import torch

    import torch_vit
    from jax_vit import init_params, state_dict_from_params

    jax_weights = state_dict_from_params(config, init_params(config, 0))
    torch.manual_seed(0)
    model = torch_vit.ViT(config)
    model.init_like_flax()
    torch_weights = torch_vit.state_dict_numpy(model)
    assert torch_weights.keys() == jax_weights.keys()
    for name, j in jax_weights.items():
        t = torch_weights[name]
        if not j.any():
            assert not t.any(), f"{name}: zero in JAX, not in PyTorch"
            continue
        # Two samples of n draws: their spreads and means differ by a few standard errors at most.
        n = j.size
        assert t.std() == pytest.approx(j.std(), rel=max(0.02, 5 / np.sqrt(2 * n))), f"{name}: std {t.std():.3g} vs JAX {j.std():.3g}"
        assert abs(t.mean() - j.mean()) <= 6 * j.std() / np.sqrt(n), f"{name}: mean {t.mean():.3g} vs JAX {j.mean():.3g}"
        assert np.abs(t).max() <= 1.5 * np.abs(j).max() + 1e-6, f"{name}: range {np.abs(t).max():.3g} vs JAX {np.abs(j).max():.3g}"
