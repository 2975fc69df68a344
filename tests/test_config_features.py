"""ViTConfig's architecture features (timm's VisionTransformer options): defaults that keep the standard ViT,
config files written before them, and validation messages that name the fix."""

from __future__ import annotations

import json

import pytest

from vit_spec import ConfigError, ViTConfig, param_shapes
from vit_spec.config import FEATURE_FIELDS

_TINY = dict(image_size=32, patch_size=8, num_classes=10, width=64, depth=2, heads=4, mlp_dim=128)

# A config file as written before the features existed (tutorial model): every key it had, none of the new ones.
OLD_JSON = json.dumps({
    "attention_dropout": 0.0, "channels": 3, "depth": 4, "drop_path": 0.0, "dropout": 0.0, "gelu": "exact",
    "heads": 8, "image_mean": [0.5, 0.5, 0.5], "image_size": 32, "image_std": [0.5, 0.5, 0.5],
    "layer_norm_eps": 1e-06, "mlp_dim": 256, "num_classes": 10, "patch_size": 4, "pool": "cls",
    "pos_embed": "learned", "qkv_bias": True, "representation_size": None, "width": 128,
})


def test_old_json_loads_with_the_defaults_and_is_written_back_unchanged():
    config = ViTConfig.from_json(OLD_JSON)
    assert config == ViTConfig.from_variant("tutorial")
    assert (config.layer_scale_init, config.class_token, config.reg_tokens, config.pos_embed_covers_prefix) == (None, None, 0, True)
    assert (config.final_norm, config.pre_norm, config.patch_bias, config.activation, config.mlp) == ("tokens", False, True, "gelu", "plain")
    assert (config.mlp_norm, config.norm, config.qk_norm, config.distilled) == (False, "layer", False, False)
    assert (config.patch_norm, config.attn_norm, config.proj_bias, config.pool_include_prefix) == (False, False, True, False)
    assert config.has_class_token and config.num_prefix_tokens == 1 and config.num_pos_embed_tokens == config.num_tokens == 65
    # A standard ViT's dict holds no feature key: files stay as they were, readable by earlier versions.
    assert config.to_json() == json.dumps(json.loads(OLD_JSON), sort_keys=True)


def test_old_mean_pool_json_keeps_no_class_token():
    config = ViTConfig.from_dict({**json.loads(OLD_JSON), "pool": "mean"})
    assert not config.has_class_token and config.num_prefix_tokens == 0
    assert "cls_token" not in param_shapes(config)


def test_features_round_trip_through_json():
    config = ViTConfig(**_TINY, layer_scale_init=1e-5, class_token=True, reg_tokens=4, pos_embed_covers_prefix=False,
                       final_norm="pooled", pre_norm=True, patch_bias=False, activation="silu", mlp="swiglu",
                       mlp_norm=True, norm="rms", qk_norm=True, pool="mean", patch_norm=True, attn_norm=True,
                       proj_bias=False, pool_include_prefix=True)
    assert ViTConfig.from_json(config.to_json()) == config
    assert set(FEATURE_FIELDS) - {"distilled"} <= set(json.loads(config.to_json()))


def test_prefix_tokens_and_position_slots():
    config = ViTConfig(**_TINY, reg_tokens=4)
    assert config.num_prefix_tokens == 5 and config.num_tokens == 16 + 5
    assert param_shapes(config)["pos_embed"] == (1, 21, 64) and param_shapes(config)["reg_token"] == (1, 4, 64)
    patches_only = config.replace(pos_embed_covers_prefix=False)
    assert param_shapes(patches_only)["pos_embed"] == (1, 16, 64)
    distilled = ViTConfig(**_TINY, distilled=True)
    assert distilled.num_prefix_tokens == 2 and param_shapes(distilled)["pos_embed"] == (1, 18, 64)
    assert {"dist_token", "head_dist.weight", "head_dist.bias"} <= set(param_shapes(distilled))


def test_mlp_widths():
    packed = ViTConfig(**_TINY, mlp="swiglu_packed", activation="silu")
    assert packed.mlp_fc1_dim == 256 and param_shapes(packed)["blocks.0.mlp.fc1.weight"] == (256, 64)
    assert param_shapes(packed)["blocks.0.mlp.fc2.weight"] == (64, 128)
    split = ViTConfig(**_TINY, mlp="swiglu", activation="silu", mlp_norm=True)
    shapes = param_shapes(split)
    assert shapes["blocks.0.mlp.fc1_g.weight"] == shapes["blocks.0.mlp.fc1_x.weight"] == (128, 64)
    assert shapes["blocks.0.mlp.norm.weight"] == (128,) and "blocks.0.mlp.fc1.weight" not in shapes


def test_patch_norm_attn_norm_and_bias_free_projections_in_timms_names():
    standard = param_shapes(ViTConfig(**_TINY, pool="map"))
    config = ViTConfig(**_TINY, patch_norm=True, attn_norm=True, proj_bias=False, pool="map")
    shapes = param_shapes(config)
    assert shapes["patch_embed.norm.weight"] == shapes["patch_embed.norm.bias"] == (64,)
    assert shapes["blocks.1.attn.norm.weight"] == shapes["blocks.1.attn.norm.bias"] == (64,)
    names = list(shapes)  # timm's order: the patch norm after the projection, the attention norm before proj
    assert names.index("patch_embed.norm.weight") == names.index("patch_embed.proj.bias") + 1
    assert names.index("blocks.0.attn.norm.weight") == names.index("blocks.0.attn.qkv.bias") + 1
    gone = {n for n in standard if n not in shapes}
    assert gone == {f"blocks.{i}.{part}.bias" for i in range(2) for part in ("attn.proj", "mlp.fc1", "mlp.fc2")}
    assert "attn_pool.mlp.fc1.bias" in shapes and "attn_pool.proj.bias" in shapes  # the MAP head keeps its biases
    rms = param_shapes(config.replace(norm="rms"))
    assert "patch_embed.norm.bias" not in rms and "blocks.0.attn.norm.bias" not in rms
    assert param_shapes(ViTConfig(**_TINY, pool="mean", class_token=True, pool_include_prefix=True)) == param_shapes(
        ViTConfig(**_TINY, pool="mean", class_token=True))


def test_rms_norm_has_no_biases_anywhere():
    config = ViTConfig(**_TINY, norm="rms", qk_norm=True, pre_norm=True, pool="map")
    norms = [n for n in param_shapes(config) if "." in n and "norm" in n.split(".")[-2]]
    assert norms and all(n.endswith(".weight") for n in norms)


@pytest.mark.parametrize(
    "fields, words",
    [
        (dict(pool="avg"), "unknown pool 'avg': use one of ('cls', 'mean', 'map', 'none')"),
        (dict(pool="cls", class_token=False), "set class_token=True (or None)"),
        (dict(class_token="yes"), "class_token must be True, False or None"),
        (dict(reg_tokens=-1), "reg_tokens must be an int >= 0"),
        (dict(reg_tokens=True), "reg_tokens must be an int >= 0"),
        (dict(layer_scale_init=0.0), "layer_scale_init must be a positive number (e.g. 1e-5) or None"),
        (dict(layer_scale_init=True), "layer_scale_init must be a positive number"),
        (dict(final_norm="fc"), "unknown final_norm 'fc': use one of ('tokens', 'pooled', 'none')"),
        (dict(norm="batch"), "unknown norm 'batch': use one of ('layer', 'rms')"),
        (dict(activation="relu"), "unknown activation 'relu': use one of ('gelu', 'quick_gelu', 'silu')"),
        (dict(mlp="moe"), "unknown mlp 'moe'"),
        (dict(mlp="swiglu"), "mlp='swiglu' gates with silu, but activation='gelu': set activation='silu'"),
        (dict(mlp="swiglu_packed", activation="quick_gelu"), "set activation='silu'"),
        (dict(mlp="geglu", activation="silu"), "mlp='geglu' gates with gelu, but activation='silu': set activation='gelu'"),
        (dict(pool="none"), "pool='none' returns every token, so there is no head: set num_classes=0"),
        (dict(pool="none", num_classes=0, final_norm="pooled"), "use final_norm='tokens' or 'none'"),
        (dict(distilled=True, pool="mean"), "distilled=True reads the [CLS] and distillation tokens: set pool='cls'"),
        (dict(distilled=True, reg_tokens=1), "set reg_tokens=0"),
        (dict(distilled=True, representation_size=32), "set representation_size=None"),
        (dict(distilled=True, final_norm="pooled"), "use final_norm='tokens' or 'none'"),
        (dict(distilled=True, pos_embed_covers_prefix=False), "set pos_embed_covers_prefix=True"),
        (dict(pre_norm=1), "pre_norm must be True or False"),
        (dict(qk_norm="yes"), "qk_norm must be True or False"),
        (dict(patch_norm=1), "patch_norm must be True or False"),
        (dict(attn_norm="yes"), "attn_norm must be True or False"),
        (dict(proj_bias=None), "proj_bias must be True or False"),
        (dict(pool_include_prefix=True), "but pool='cls': set pool='mean' or 'map', or pool_include_prefix=False"),
        (dict(pool_include_prefix=True, pool="mean"), "has no prefix tokens"),
    ],
)
def test_invalid_features_are_refused_with_the_fix(fields, words):
    with pytest.raises(ConfigError) as err:
        ViTConfig(**{**_TINY, **fields})
    assert words in str(err.value)


def test_unknown_key_still_refused():
    with pytest.raises(ConfigError, match="unknown ViTConfig fields"):
        ViTConfig.from_dict({**json.loads(OLD_JSON), "register_tokens": 4})
