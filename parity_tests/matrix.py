"""The config matrix of the parity suite, and cached runs of both twins on it."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from twins import parity
from twins.differences import Difference
from vit_spec import ViTConfig, random_weights

_TINY = dict(image_size=32, patch_size=4, num_classes=10, width=64, depth=2, heads=4, mlp_dim=128)

# name -> (config, batch size). Small configs first; Ti/16 and B/16 are the published shapes at 224.
CONFIGS: dict[str, tuple[ViTConfig, int]] = {
    "tutorial": (ViTConfig.from_variant("tutorial"), 3),
    "tutorial_batch1": (ViTConfig.from_variant("tutorial"), 1),
    "nonsquare_image_and_patch": (
        ViTConfig(image_size=(24, 40), patch_size=(4, 8), num_classes=7, width=48, depth=2, heads=3, mlp_dim=96),
        2,
    ),
    "mean_pool": (ViTConfig(**_TINY, pool="mean"), 2),
    "sincos2d": (ViTConfig(**_TINY, pos_embed="sincos2d"), 2),
    "mean_pool_sincos2d": (ViTConfig(**_TINY, pool="mean", pos_embed="sincos2d"), 2),
    "representation_size": (ViTConfig(**_TINY, representation_size=48), 2),
    "one_head": (ViTConfig(**{**_TINY, "heads": 1}), 2),
    "no_qkv_bias_tanh_gelu_eps1e-12": (ViTConfig(**_TINY, qkv_bias=False, gelu="tanh", layer_norm_eps=1e-12), 2),
    "grayscale_no_head": (ViTConfig(**{**_TINY, "channels": 1, "num_classes": 0}, image_mean=(0.5,), image_std=(0.5,)), 2),
    # timm's architecture features (ViTConfig's second group), combined as the checkpoints to convert use them.
    "dinov2_like": (ViTConfig(**_TINY, layer_scale_init=1e-5, reg_tokens=2, pos_embed_covers_prefix=False,
                              mlp="swiglu_packed", activation="silu"), 2),
    "siglip_like": (ViTConfig(**_TINY, pool="map", gelu="tanh"), 2),
    "clip_like": (ViTConfig(**_TINY, pre_norm=True, patch_bias=False, activation="quick_gelu", layer_norm_eps=1e-5), 2),
    "deit_distilled": (ViTConfig(**_TINY, distilled=True), 2),
    "deit3_like": (ViTConfig(**_TINY, layer_scale_init=1e-6, pos_embed_covers_prefix=False), 2),
    "rmsnorm_qknorm": (ViTConfig(**_TINY, norm="rms", qk_norm=True), 2),
    "fc_norm_mean": (ViTConfig(**_TINY, pool="mean", class_token=True, reg_tokens=1, final_norm="pooled"), 2),
    "eva_like": (ViTConfig(**_TINY, mlp="swiglu", activation="silu", mlp_norm=True, qk_norm=True, pool="mean",
                           class_token=True, final_norm="pooled"), 2),
    "geglu_no_final_norm_rms_map": (ViTConfig(**_TINY, mlp="geglu", norm="rms", mlp_norm=True, pool="map",
                                              final_norm="none", pre_norm=True), 2),
    "tokens_out_sincos_registers": (ViTConfig(**{**_TINY, "num_classes": 0}, pool="none", class_token=True, reg_tokens=2,
                                              pos_embed="sincos2d"), 2),
    "aimv2_like": (ViTConfig(**_TINY, norm="rms", layer_norm_eps=1e-5, patch_norm=True, qkv_bias=False, proj_bias=False,
                             mlp="swiglu", activation="silu", pool="mean"), 2),
    "beit3_like": (ViTConfig(**_TINY, attn_norm=True, mlp_norm=True, layer_norm_eps=1e-5, pool="mean", class_token=True,
                             final_norm="pooled"), 2),
    "prefix_pool_map": (ViTConfig(**_TINY, pool="map", pool_include_prefix=True, reg_tokens=1, layer_scale_init=1e-5), 2),
    "prefix_pool_mean_patch_norm": (ViTConfig(**_TINY, pool="mean", pool_include_prefix=True, class_token=True,
                                              reg_tokens=2, patch_norm=True, proj_bias=False), 2),
    "Ti/16": (ViTConfig.from_variant("Ti/16"), 2),
    "B/16": (ViTConfig.from_variant("B/16"), 2),
}
DTYPES = ("float32", "float64")
# The configs of the timm architecture features (those after "grayscale_no_head"), for the tests that pick them.
FEATURE_CONFIGS = tuple(list(CONFIGS)[list(CONFIGS).index("dinov2_like") : list(CONFIGS).index("Ti/16")])


@functools.lru_cache(maxsize=None)
def weights_and_images(name: str) -> tuple[ViTConfig, dict[str, np.ndarray], np.ndarray]:
    config, batch = CONFIGS[name]
    return config, random_weights(config, seed=0), parity.random_images(config, batch, seed=1)


@functools.lru_cache(maxsize=None)
def parity_run(name: str, dtype: str) -> parity.ParityReport:
    """Both twins on the same weights and batch; cached so forward and gradient tests share one run (a report holds no tensors)."""
    config, weights, images = weights_and_images(name)
    return parity.run_parity(config, weights, images, dtype, seed=0)


def assert_agree(diffs: list[Difference], what: str) -> None:
    failing = [d for d in diffs if not d.ok]
    if failing:
        pytest.fail(f"{what}: {len(failing)} tensor(s) differ past tolerance:\n" + "\n".join(map(str, failing)), pytrace=False)


def config_params(names=None) -> list:
    """Config names as pytest params, each in its own xdist group so that one worker runs (and caches) it."""
    return [pytest.param(n, id=n, marks=pytest.mark.xdist_group(n)) for n in (names or CONFIGS)]
