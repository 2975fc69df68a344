"""vit_spec.formats without any framework: every writer inverted by its reader, format detection,
and the layouts' details (big_vision's stacked blocks and [CLS] without position, HF's two naming
schemes, bfloat16 files). Agreement with the peers themselves is in parity_tests/test_peers_*.py.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from vit_spec import ViTConfig, random_weights, save_weights, sincos_2d
from vit_spec.formats import (
    Checkpoint,
    FormatError,
    UnsupportedModelError,
    detect_format,
    read_checkpoint,
    write_checkpoint,
)
from vit_spec.formats import big_vision, google_npz, hf, timm
from vit_spec.formats.tensor_files import read_safetensors
from vit_spec.formats.variants import IMAGENET_MEAN_STD, resolve_variant



CONFIGS = {
    "cls-prelogits": ViTConfig(image_size=16, patch_size=4, width=32, depth=2, heads=4, mlp_dim=64, num_classes=5,
                               representation_size=24, gelu="tanh"),
    "mean-nonsquare": ViTConfig(image_size=(16, 24), patch_size=(4, 8), width=24, depth=1, heads=3, mlp_dim=40,
                                num_classes=3, pool="mean", gelu="tanh"),
    "cls-hf-like": ViTConfig(image_size=12, patch_size=3, width=16, depth=2, heads=2, mlp_dim=32, num_classes=4,
                             layer_norm_eps=1e-12, image_mean=IMAGENET_MEAN_STD[0], image_std=IMAGENET_MEAN_STD[1]),
}


def test_formats_import_no_framework():
    code = (
        "import sys, vit_spec.formats, vit_spec.resample, vit_cli.convert; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'torch', 'timm', 'transformers')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["cls-prelogits", "mean-nonsquare"])
def test_google_npz_round_trip(name):
    config = CONFIGS[name]
    sd = random_weights(config)
    arrays, notes = google_npz.to_google(Checkpoint(config, sd, "vit"))
    assert "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel" in arrays
    back = google_npz.from_google(arrays, "test", config.image_size if name == "mean-nonsquare" else None)
    assert back.config == config.replace(image_mean=(0.5,) * 3, image_std=(0.5,) * 3)
    assert set(back.assumed) == {"gelu", "layer_norm_eps", "image_mean", "image_std"}
    assert sorted(back.state_dict) == sorted(sd)
    assert all(np.array_equal(back.state_dict[k], sd[k]) for k in sd)


def test_google_npz_linen_numbering_is_read():
    config = CONFIGS["cls-prelogits"]
    arrays, _ = google_npz.to_google(Checkpoint(config, random_weights(config), "vit"))
    renames = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0", "LayerNorm_2": "LayerNorm_1",
               "MlpBlock_3": "MlpBlock_0"}
    linen = {}
    for k, v in arrays.items():
        for a, b in renames.items():
            k = k.replace(a, b)
        linen[k] = v
    back = google_npz.from_google(linen, "test")
    ref = google_npz.from_google(arrays, "test")
    assert all(np.array_equal(back.state_dict[k], ref.state_dict[k]) for k in ref.state_dict)


def test_hf_round_trip_and_both_naming_schemes():
    config = CONFIGS["cls-hf-like"]
    sd = random_weights(config, seed=1)
    arrays, hf_config, processor, _ = hf.to_hf(Checkpoint(config, sd, "vit"))
    assert hf_config["layer_norm_eps"] == 1e-12 and hf_config["hidden_act"] == "gelu"
    back = hf.from_hf(arrays, hf_config, processor, "test")
    assert back.config == config and not back.assumed
    assert all(np.array_equal(back.state_dict[k], sd[k]) for k in sd)
    # transformers 5's in-memory names: layers.N.attention.q_proj, mlp.fc1, ...
    v5 = {}
    for k, v in arrays.items():
        k = k.replace("encoder.layer.", "layers.").replace("attention.attention.query", "attention.q_proj")
        k = k.replace("attention.attention.key", "attention.k_proj").replace("attention.attention.value", "attention.v_proj")
        k = k.replace("attention.output.dense", "attention.o_proj").replace("intermediate.dense", "mlp.fc1")
        k = k.replace("output.dense", "mlp.fc2")
        v5[k] = v
    again = hf.from_hf(v5, hf_config, processor, "test")
    assert all(np.array_equal(again.state_dict[k], sd[k]) for k in sd)


def test_hf_bare_state_dict_assumes_hf_defaults():
    config = CONFIGS["cls-hf-like"]
    arrays, _, _, _ = hf.to_hf(Checkpoint(config, random_weights(config), "vit"))
    with pytest.raises(FormatError, match="number of attention heads"):
        hf.from_hf(arrays, None, None, "bare")
    back = hf.from_hf(arrays, None, None, "bare", heads=2)
    assert back.config.layer_norm_eps == 1e-12 and back.config.gelu == "exact"
    assert back.config.image_mean == (0.5, 0.5, 0.5)
    assert set(back.assumed) == {"layer_norm_eps", "gelu", "image_mean", "image_std"}


def test_hf_pooler_follows_architectures():
    """Issue 18: pooler.dense.* is the pre-logits layer only where HF computes it: a ViTModel (or, with no
    `architectures` recorded, as before, and said); a ViTForImageClassification ignores it, and so the reader."""
    config = CONFIGS["cls-hf-like"]
    arrays, hf_config, processor, _ = hf.to_hf(Checkpoint(config, random_weights(config, seed=2), "vit"))
    assert hf_config["architectures"] == ["ViTForImageClassification"] and not any("pooler" in k for k in arrays)
    rng = np.random.default_rng(0)
    pooler = {"vit.pooler.dense.weight": rng.standard_normal((16, 16), dtype=np.float32),
              "vit.pooler.dense.bias": rng.standard_normal(16, dtype=np.float32)}
    with_pooler = {**arrays, **pooler}

    classifier = hf.from_hf(with_pooler, hf_config, processor, "test")
    assert classifier.config == config and "pre_logits.fc.weight" not in classifier.state_dict
    said = " ".join(classifier.messages())
    assert "vit.pooler.dense.weight" in said and "vit.pooler.dense.bias" in said and "ViTForImageClassification" in said

    no_arch = {k: v for k, v in hf_config.items() if k != "architectures"}
    for recorded in (no_arch, None):
        kept = hf.from_hf(with_pooler, recorded, processor, "test", heads=2)
        assert kept.config.representation_size == 16
        assert np.array_equal(kept.state_dict["pre_logits.fc.weight"], pooler["vit.pooler.dense.weight"])
        assert any("architectures" in m and "vit.pooler.dense.weight" in m for m in kept.messages())
    # No pooler tensors, no architectures: nothing to say about a pooler.
    assert not any("pooler" in m for m in hf.from_hf(arrays, no_arch, processor, "test").messages())

    model = ViTConfig(image_size=12, patch_size=3, width=16, depth=2, heads=2, mlp_dim=32, num_classes=0,
                      representation_size=8, layer_norm_eps=1e-12)
    arrays, hf_config, processor, _ = hf.to_hf(Checkpoint(model, random_weights(model, seed=3), "vit"))
    assert hf_config["architectures"] == ["ViTModel"] and "pooler.dense.weight" in arrays
    back = hf.from_hf(arrays, hf_config, processor, "test")
    assert back.config == model and not any("pooler" in m for m in back.messages())


def test_hf_refusals():
    mean = CONFIGS["mean-nonsquare"]
    with pytest.raises(UnsupportedModelError, match="always reads a \\[CLS\\] token"):
        hf.to_hf(Checkpoint(mean, random_weights(mean), "vit"))
    rep = CONFIGS["cls-prelogits"]
    with pytest.raises(UnsupportedModelError, match="no pre-logits layer"):
        hf.to_hf(Checkpoint(rep, random_weights(rep), "vit"))
    arrays, hf_config, processor, _ = hf.to_hf(Checkpoint(CONFIGS["cls-hf-like"], random_weights(CONFIGS["cls-hf-like"]), "vit"))
    with pytest.raises(UnsupportedModelError, match="quick_gelu"):
        hf.from_hf(arrays, {**hf_config, "hidden_act": "quick_gelu"}, processor, "test")
    with pytest.raises(UnsupportedModelError, match="model_type='deit'"):
        hf.from_hf(arrays, {**hf_config, "model_type": "deit"}, processor, "test")


@pytest.mark.parametrize("name", ["mean-nonsquare", "cls-hf-like"])
def test_timm_round_trip_with_recorded_kwargs(name, tmp_path):
    config = CONFIGS[name]
    sd = random_weights(config, seed=2)
    path = tmp_path / "timm.safetensors"
    write_checkpoint(Checkpoint(config, sd, "vit"), path, "timm")
    assert detect_format(path) == "timm"
    back = read_checkpoint(path)
    assert back.fmt == "timm" and back.config == config and not back.assumed
    assert all(np.array_equal(back.state_dict[k], sd[k]) for k in sd)


def test_timm_features_from_the_tensors_and_no_embed_class():
    config = ViTConfig(image_size=8, patch_size=4, width=8, depth=1, heads=2, mlp_dim=16, num_classes=2)
    sd = random_weights(config)
    gammas = {"blocks.0.ls1.gamma": np.ones(8, np.float32), "blocks.0.ls2.gamma": np.ones(8, np.float32)}
    assert timm.from_timm({**sd, **gammas}, {}, "x", heads=2).config.layer_scale_init == 1e-5
    # fc_norm in place of norm, with a [CLS] token: timm's average pooling (fc_norm=None with global_pool='avg').
    fc = {k.replace("norm.", "fc_norm.") if k.startswith("norm.") else k: v for k, v in sd.items()}
    back = timm.from_timm(fc, {}, "x", heads=2)
    assert (back.config.final_norm, back.config.pool, back.config.class_token) == ("pooled", "mean", True)
    with pytest.raises(UnsupportedModelError, match="differential attention"):
        timm.from_timm({**sd, "blocks.0.attn.lambda_q1": np.ones(4, np.float32)}, {}, "x", heads=2)
    with pytest.raises(UnsupportedModelError, match="HybridEmbed"):
        timm.from_timm({**sd, "patch_embed.backbone.stem.conv.weight": np.ones(8, np.float32)}, {}, "x", heads=2)
    with pytest.raises(FormatError, match="does not record the number of attention heads"):
        timm.from_timm(sd, {}, "x")
    # no_embed_class: no [CLS] slot in pos_embed; the config says so and the table is kept as it is.
    back = timm.from_timm({**sd, "pos_embed": sd["pos_embed"][:, 1:]}, {}, "x", heads=2)
    assert back.config.pos_embed_covers_prefix is False
    np.testing.assert_array_equal(back.state_dict["pos_embed"], sd["pos_embed"][:, 1:])
    rep = CONFIGS["cls-prelogits"]
    with pytest.raises(UnsupportedModelError, match="no pre-logits layer"):
        timm.to_timm(Checkpoint(rep, random_weights(rep), "vit"))


def big_vision_arrays(config: ViTConfig, sd: dict[str, np.ndarray], scanned: bool, prefix: str) -> dict[str, np.ndarray]:
    """big_vision's layout from a shared one: Google's layout, renumbered, pos_embedding at the top, no [CLS] slot."""
    arrays, _ = google_npz.to_google(Checkpoint(config, sd, "vit"))
    out = {}
    for k, v in arrays.items():
        if k == "Transformer/posembed_input/pos_embedding":
            out["pos_embedding"] = v[:, config.num_prefix_tokens:]
            continue
        for a, b in (("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0"), ("LayerNorm_2", "LayerNorm_1"),
                     ("MlpBlock_3", "MlpBlock_0")):
            k = k.replace(a, b)
        out[k] = v
    if scanned:
        blocks = [{k.split("/", 2)[2]: v for k, v in out.items() if k.startswith(f"Transformer/encoderblock_{i}/")}
                  for i in range(config.depth)]
        out = {k: v for k, v in out.items() if not k.startswith("Transformer/encoderblock_")}
        out.update({f"Transformer/encoderblock/{k}": np.stack([b[k] for b in blocks]) for k in blocks[0]})
    return {prefix + k: v for k, v in out.items()}


@pytest.mark.parametrize("scanned, prefix", [(False, "params/"), (True, ""), (True, "params/img/")])
def test_big_vision_reading(scanned, prefix):
    config = ViTConfig(image_size=16, patch_size=4, width=32, depth=2, heads=4, mlp_dim=64, num_classes=5, gelu="tanh")
    sd = random_weights(config, seed=3)
    sd["pos_embed"][:, 0] = 0  # big_vision's [CLS] token gets no position
    arrays = big_vision_arrays(config, sd, scanned, prefix)
    assert big_vision.is_big_vision(arrays) and not google_npz.is_google_npz(arrays)
    back = big_vision.from_big_vision(arrays, "bv")
    assert back.config == config
    assert all(np.array_equal(back.state_dict[k], sd[k]) for k in sd)


def test_big_vision_pool_types_and_sincos():
    config = ViTConfig(image_size=16, patch_size=4, width=32, depth=1, heads=4, mlp_dim=64, num_classes=5, pool="mean",
                       gelu="tanh")
    arrays = big_vision_arrays(config, random_weights(config), False, "params/")
    back = big_vision.from_big_vision(arrays, "bv")
    assert back.config.pool == "mean" and any("'gap'" in n for n in back.notes)
    with pytest.raises(UnsupportedModelError, match="first patch token"):
        big_vision.from_big_vision(arrays, "bv", pool_type="0")
    with pytest.raises(FormatError, match="needs a cls parameter"):
        big_vision.from_big_vision(arrays, "bv", pool_type="tok")
    with pytest.raises(UnsupportedModelError, match="MAPHead"):
        big_vision.from_big_vision({**arrays, "params/MAPHead_0/probe": np.zeros((1, 1, 32), np.float32)}, "bv")
    no_pos = {k: v for k, v in arrays.items() if k != "params/pos_embedding"}
    with pytest.raises(FormatError, match="sincos2d"):
        big_vision.from_big_vision(no_pos, "bv")
    sincos = big_vision.from_big_vision(no_pos, "bv", sincos_image_size=24)
    assert sincos.config.pos_embed == "sincos2d" and sincos.config.image_size == 24
    np.testing.assert_array_equal(sincos.state_dict["pos_embed"], sincos_2d(sincos.config))


def test_detection_and_wrong_from(tmp_path):
    config = CONFIGS["cls-hf-like"]
    sd = random_weights(config)
    save_weights(tmp_path / "ours.safetensors", config, sd)
    write_checkpoint(Checkpoint(config, sd, "vit"), tmp_path / "hf", "hf")
    write_checkpoint(Checkpoint(config.replace(layer_norm_eps=1e-6, gelu="tanh"), sd, "vit"), tmp_path / "g.npz", "npz")
    assert detect_format(tmp_path / "ours.safetensors") == "vit"
    assert detect_format(tmp_path / "hf") == "hf"
    assert detect_format(tmp_path / "hf" / "model.safetensors") == "hf"
    assert detect_format(tmp_path / "g.npz") == "npz"
    with pytest.raises(FormatError, match="--from timm expects a timm VisionTransformer state dict, but .* looks like a Hugging Face ViT"):
        read_checkpoint(tmp_path / "hf" / "model.safetensors", "timm")
    # The HF state-dict file beside its config.json is read with that config.
    assert read_checkpoint(tmp_path / "hf" / "model.safetensors").config == config


def test_bfloat16_safetensors_are_widened_exactly(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 1e-3], np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")  # exact bfloat16 values: low half is zero
    header = json.dumps({"w": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bits.tobytes())
    arrays, _ = read_safetensors(path)
    assert arrays["w"].dtype == np.float32
    np.testing.assert_array_equal(arrays["w"], (bits.astype(np.uint32) << 16).view(np.float32))


def test_variant_names():
    assert resolve_variant("S/16").fields == dict(patch_size=16, width=384, depth=12, heads=6, mlp_dim=1536)
    tiny = resolve_variant("vit_tiny_patch16_384").fields
    assert tiny["image_size"] == 384 and tiny["heads"] == 3 and tiny["image_mean"] == (0.5, 0.5, 0.5)
    assert resolve_variant("vit_base_patch16_224.mae").fields["image_mean"] == IMAGENET_MEAN_STD[0]
    with pytest.raises(FormatError, match="unknown pretrained tag"):
        resolve_variant("vit_base_patch16_224.mystery")


def test_other_timm_names_are_built_by_timm():
    pytest.importorskip("timm")
    clip = resolve_variant("vit_base_patch16_clip_224.openai").fields  # timm builds it on the meta device
    assert (clip["pre_norm"], clip["patch_bias"], clip["layer_norm_eps"], clip["heads"]) == (True, False, 1e-5, 12)
    with pytest.raises(FormatError, match="neither this project's variant nor a timm model name"):
        resolve_variant("vit_nonesuch_patch16_224")
