"""ViTConfig: fields, validation with clear errors, named variants, JSON round trip, parameter counts."""

import json

import pytest

from vit_spec import ConfigError, ViTConfig, num_params


def test_tutorial_variant_is_the_tutorials_cifar_model():
    c = ViTConfig.from_variant("tutorial")
    assert (c.image_size, c.patch_size, c.width, c.depth, c.heads, c.mlp_dim, c.num_classes) == (32, 4, 128, 4, 8, 256, 10)
    assert c.num_patches == 64 and c.num_tokens == 65 and c.head_dim == 16


def test_tutorial_model_has_546k_parameters_not_the_tutorials_2_5m():
    # The tutorial claimed ~2.5M; the standard pre-norm ViT of its shape has 546,186.
    assert num_params(ViTConfig.from_variant("tutorial")) == 546_186


@pytest.mark.parametrize(
    "variant, count",
    [("Ti/16", 5_717_416), ("S/16", 22_050_664), ("B/16", 86_567_656), ("L/16", 304_326_632), ("H/14", 632_045_800)],
)
def test_parameter_counts_match_the_published_ones(variant, count):
    assert num_params(ViTConfig.from_variant(variant)) == count


@pytest.mark.parametrize(
    "variant, fields, millions",
    [("g/14", {}, 1011), ("G/14", {}, 1843),  # "Scaling Vision Transformers", table 2 (encoders, no head)
     ("So400m/14", {"pool": "map"}, 428)],  # SigLIP's So400m/14 vision tower: timm's 427.68M
)
def test_the_big_variants_have_their_published_size(variant, fields, millions):
    config = ViTConfig.from_variant(variant, num_classes=0, **fields)
    assert round(num_params(config) / 1e6) == millions


def test_the_big_variants_have_big_visions_shapes():
    shape = lambda c: (c.width, c.depth, c.mlp_dim, c.heads)
    assert shape(ViTConfig.from_variant("g/14")) == (1408, 40, 6144, 16)
    assert shape(ViTConfig.from_variant("G/14")) == (1664, 48, 8192, 16)
    assert shape(ViTConfig.from_variant("So400m/14")) == (1152, 27, 4304, 16)


def test_variants_take_any_patch_size_and_overrides():
    c = ViTConfig.from_variant("S/8", image_size=64, num_classes=100)
    assert (c.width, c.depth, c.heads, c.mlp_dim, c.patch_size, c.image_size, c.num_classes) == (384, 12, 6, 1536, 8, 64, 100)
    assert ViTConfig.from_variant("B/16x8").patch_hw == (16, 8)


@pytest.mark.parametrize("variant", ["X/16", "S", "S/", "B-16", "", "tutorial/4"])
def test_unknown_variant_is_refused_with_the_known_ones(variant):
    with pytest.raises(ConfigError, match="unknown variant.*Ti"):
        ViTConfig.from_variant(variant)


def test_unknown_override_is_refused():
    with pytest.raises(ConfigError, match="unknown ViTConfig fields.*hidden_size"):
        ViTConfig.from_variant("S/16", hidden_size=10)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(width=100, heads=8), "width 100 is not divisible by heads 8"),
        (dict(image_size=30, patch_size=4), r"image_size \(30, 30\) is not divisible by patch_size \(4, 4\)"),
        (dict(image_size=(32, 30), patch_size=(4, 4)), "not divisible by patch_size"),
        (dict(width=0), "width must be a positive int"),
        (dict(depth=-1), "depth must be a positive int"),
        (dict(heads=2.0), "heads must be a positive int"),
        (dict(image_size=0), "image_size must be positive"),
        (dict(patch_size=(4, 4, 4)), r"patch_size must be an int or \(height, width\)"),
        (dict(num_classes=-1), "num_classes must be an int >= 0"),
        (dict(pool="max"), "unknown pool 'max'"),
        (dict(pos_embed="rope"), "unknown pos_embed 'rope'"),
        (dict(pos_embed="sincos2d", width=130, heads=2), "sincos2d' needs width divisible by 4"),
        (dict(gelu="quick"), "unknown gelu 'quick'"),
        (dict(dropout=1.0), r"dropout must be a rate in \[0, 1\)"),
        (dict(drop_path=-0.1), r"drop_path must be a rate"),
        (dict(layer_norm_eps=0), "layer_norm_eps must be a positive number"),
        (dict(representation_size=0), "representation_size must be a positive int or None"),
        (dict(channels=1, image_mean=(0.5, 0.5, 0.5)), "image_mean has 3 values but channels is 1"),
        (dict(image_std=(0.5, 0.0, 0.5)), "image_std must be positive"),
        (dict(qkv_bias="yes"), "qkv_bias must be True or False"),
    ],
)
def test_a_config_that_cannot_work_is_refused_by_name(fields, message):
    base = dict(image_size=32, patch_size=4, width=64, depth=2, heads=4, mlp_dim=128, num_classes=10)
    with pytest.raises(ConfigError, match=message):
        ViTConfig(**{**base, **fields})


def test_config_is_frozen():
    c = ViTConfig.from_variant("tutorial")
    with pytest.raises(AttributeError):
        c.width = 3


@pytest.mark.parametrize(
    "config",
    [
        ViTConfig.from_variant("tutorial"),
        ViTConfig(image_size=(24, 40), patch_size=(4, 8), width=48, depth=2, heads=3, mlp_dim=96, num_classes=7,
                  pool="mean", pos_embed="sincos2d", representation_size=24, gelu="tanh", qkv_bias=False,
                  layer_norm_eps=1e-12, dropout=0.1, attention_dropout=0.05, drop_path=0.2,
                  image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225)),
    ],
)
def test_to_dict_from_dict_round_trips_through_json(config):
    data = json.loads(json.dumps(config.to_dict()))
    assert ViTConfig.from_dict(data) == config
    assert ViTConfig.from_json(config.to_json()) == config


def test_from_dict_refuses_unknown_fields_and_bad_json():
    with pytest.raises(ConfigError, match="unknown ViTConfig fields.*embed_dim"):
        ViTConfig.from_dict({"embed_dim": 768})
    with pytest.raises(ConfigError, match="not valid JSON"):
        ViTConfig.from_json("{width: 3")


def test_drop_path_rates_rise_linearly_to_the_last_block():
    c = ViTConfig.from_variant("tutorial", drop_path=0.3)
    assert c.drop_path_rates() == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_vit_spec_imports_neither_framework():
    import subprocess
    import sys

    code = "import sys, vit_spec, vit_spec.inputs; assert 'jax' not in sys.modules and 'torch' not in sys.modules, [m for m in sys.modules if m in ('jax', 'torch')]"
    subprocess.run([sys.executable, "-c", code], check=True)
