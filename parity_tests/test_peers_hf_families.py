"""Hugging Face's DINOv2, DINOv2-with-registers, SigLIP, CLIP and DeiT <-> this project, checked against transformers:
small random models (every parameter perturbed) saved with save_pretrained, converted with `vit convert`, our JAX
and PyTorch outputs required to match transformers' (eager attention, float32), then converted back with `--to hf`
and loaded by the same class with from_pretrained.

Prints one "peer-diff" line per comparison: pytest parity_tests -k peers -s | grep peer-diff
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
jax = pytest.importorskip("jax")

import transformers as T  # noqa: E402

import jax_vit  # noqa: E402
from parity_tests.peers import convert, images_nchw, our_logits, perturb, report, scaled_diff  # noqa: E402
from vit_cli.main import main  # noqa: E402

EAGER = dict(attn_implementation="eager")
SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
SIGLIP_V = dict(**SMALL, intermediate_size=96, image_size=28, patch_size=7)
CLIP_V = dict(**SMALL, intermediate_size=96, image_size=28, patch_size=7)
TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def _dinov2(**kw):
    return T.Dinov2Model(T.Dinov2Config(**SMALL, mlp_ratio=2, image_size=28, patch_size=14, layerscale_value=0.5, **kw, **EAGER))


# name -> (build the model, what its output is, tensors the round trip legitimately changes)
CASES = {
    "Dinov2Model": (lambda: _dinov2(), "pooler_output", {"embeddings.mask_token"}),
    "Dinov2Model-swiglu": (lambda: _dinov2(use_swiglu_ffn=True), "pooler_output", {"embeddings.mask_token"}),
    "Dinov2WithRegistersModel": (
        lambda: T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(
            **SMALL, mlp_ratio=2, image_size=28, patch_size=14, num_register_tokens=3, hidden_act="gelu_pytorch_tanh", **EAGER)),
        "pooler_output", {"embeddings.mask_token", "embeddings.cls_token", "embeddings.position_embeddings"}),
    "SiglipVisionModel": (lambda: T.SiglipVisionModel(T.SiglipVisionConfig(**SIGLIP_V, **EAGER)), "pooler_output", set()),
    "SiglipVisionModel-nohead": (
        lambda: T.SiglipVisionModel(T.SiglipVisionConfig(**SIGLIP_V, vision_use_head=False, **EAGER)), "last_hidden_state", set()),
    "SiglipForImageClassification": (
        lambda: T.SiglipForImageClassification(T.SiglipConfig(vision_config=SIGLIP_V, text_config=TEXT, num_labels=5, **EAGER)),
        "logits", set()),
    "CLIPVisionModel": (lambda: T.CLIPVisionModel(T.CLIPVisionConfig(**CLIP_V, **EAGER)), "pooler_output", set()),
    "CLIPForImageClassification": (
        lambda: T.CLIPForImageClassification(T.CLIPConfig(vision_config=CLIP_V, text_config=TEXT, num_labels=5, **EAGER)),
        "logits", {"vision_model.post_layernorm.weight", "vision_model.post_layernorm.bias"}),
    "DeiTModel": (
        lambda: T.DeiTModel(T.DeiTConfig(**SMALL, intermediate_size=96, image_size=28, patch_size=7, pooler_output_size=24, **EAGER)),
        "pooler_output", set()),
    "DeiTForImageClassification": (
        lambda: T.DeiTForImageClassification(T.DeiTConfig(**SMALL, intermediate_size=96, image_size=28, patch_size=7,
                                                           num_labels=6, hidden_act="gelu_new", **EAGER)),
        "logits", set()),
    "DeiTForImageClassificationWithTeacher": (
        lambda: T.DeiTForImageClassificationWithTeacher(T.DeiTConfig(**SMALL, intermediate_size=96, image_size=28,
                                                                      patch_size=7, num_labels=6, **EAGER)),
        "logits", set()),
}


def hf_output(model, images: np.ndarray, what: str, **kw) -> np.ndarray:
    with torch.no_grad():
        return getattr(model(pixel_values=torch.from_numpy(images), **kw), what).numpy()


def build(name: str, seed: int):
    torch.manual_seed(seed)
    return perturb(CASES[name][0](), seed)


@pytest.mark.parametrize("name", list(CASES))
def test_hf_family_to_ours_and_back(name, tmp_path):
    _, what, changed = CASES[name]
    model = build(name, seed=len(name))
    src = tmp_path / "hf"
    model.save_pretrained(src)
    ours = tmp_path / "ours.safetensors"
    convert(src, ours)
    images = images_nchw((28, 28), seed=1)
    ref = hf_output(model, images, what)
    out_jax, out_torch = our_logits(ours, images)
    report(f"hf {name} -> vit", jax=scaled_diff(out_jax, ref), torch=scaled_diff(out_torch, ref))

    back = tmp_path / "back"
    convert(ours, back, "--to", "hf")
    cls = type(model)
    assert json.loads((back / "config.json").read_text())["architectures"] == [cls.__name__]
    reloaded = cls.from_pretrained(back, **EAGER).eval()
    auto = getattr(T, "AutoModelForImageClassification" if what == "logits" else "AutoModel")
    assert type(auto.from_pretrained(back)) is cls
    report(f"vit -> hf {name}", hf=scaled_diff(hf_output(reloaded, images, what), out_torch))
    original, again = model.state_dict(), reloaded.state_dict()
    # Every tensor the class reads comes back bit for bit, except those the conversion changes on purpose (see CASES).
    differs = [k for k in again if k in original and k not in changed and not torch.equal(original[k], again[k])]
    assert not differs, f"hf -> vit -> hf changed {differs[:5]}"


@pytest.mark.parametrize("name", ["Dinov2Model", "Dinov2WithRegistersModel", "SiglipVisionModel", "CLIPVisionModel",
                                  "DeiTForImageClassification"])
def test_new_image_size_matches_hf_interpolation(name, tmp_path):
    """--image-size 42 (a 3x3 or 6x6 grid from 2x2 or 4x4) against transformers' own interpolation at run time
    (interpolate_pos_encoding): bicubic without antialiasing (--no-antialias), but for Dinov2WithRegisters, which
    antialiases (the default here)."""
    _, what, _ = CASES[name]
    model = build(name, seed=3)
    src = tmp_path / "hf"
    model.save_pretrained(src)
    ours = tmp_path / "ours.safetensors"
    convert(src, ours, "--image-size", "42", *([] if name == "Dinov2WithRegistersModel" else ["--no-antialias"]))
    images = images_nchw((42, 42), seed=2)
    kw = {} if name.startswith("Dinov2") else {"interpolate_pos_encoding": True}
    ref = hf_output(model, images, what, **kw)
    out_jax, out_torch = our_logits(ours, images)
    report(f"hf {name} at 42x42 -> vit", jax=scaled_diff(out_jax, ref), torch=scaled_diff(out_torch, ref))


@pytest.mark.parametrize("name", ["Dinov2WithRegistersModel", "SiglipForImageClassification", "CLIPVisionModel",
                                  "DeiTForImageClassificationWithTeacher"])
def test_new_head(name, tmp_path):
    """--num-classes 3 on a converted family model: a new head of 3 outputs, the rest unchanged."""
    model = build(name, seed=4)
    src = tmp_path / "hf"
    model.save_pretrained(src)
    ours = tmp_path / "ours.safetensors"
    convert(src, ours, "--num-classes", "3", "--head-seed", "0")
    config, _ = jax_vit.load(ours)
    assert config.num_classes == 3
    out_jax, out_torch = our_logits(ours, images_nchw((28, 28), seed=3))
    assert out_jax.shape == out_torch.shape == (3, 3)
    report(f"hf {name} --num-classes 3: jax vs torch", twins=scaled_diff(out_jax, out_torch))


def test_dinov2_classifier_is_refused(tmp_path, capsys):
    config = T.Dinov2Config(**SMALL, mlp_ratio=2, image_size=28, patch_size=14, num_labels=3)
    T.Dinov2ForImageClassification(config).save_pretrained(tmp_path / "hf")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "concatenated with the mean of the patch tokens" in err and "Dinov2Model" in err


def test_two_tower_models_read_as_vision_tower(tmp_path, capsys):
    """CLIPModel and SiglipModel (both towers): the vision tower; the rest (text tower, visual_projection, logit
    scale/bias) named as left out."""
    clip = perturb(T.CLIPModel(T.CLIPConfig(vision_config=CLIP_V, text_config=TEXT, **EAGER)), seed=6)
    clip.save_pretrained(tmp_path / "clip")
    capsys.readouterr()
    convert(tmp_path / "clip", tmp_path / "ours.safetensors")
    printed = capsys.readouterr().out
    assert "text_model" in printed and "visual_projection" in printed and "logit_scale" in printed
    images = images_nchw((28, 28), seed=4)
    ref = hf_output(clip.vision_model, images, "pooler_output")
    out_jax, out_torch = our_logits(tmp_path / "ours.safetensors", images)
    report("hf CLIPModel (vision tower) -> vit", jax=scaled_diff(out_jax, ref), torch=scaled_diff(out_torch, ref))

    # The weights file alone is read with the config.json beside it; without one it is refused, saying why.
    convert(tmp_path / "clip" / "model.safetensors", tmp_path / "file.safetensors")
    bare = tmp_path / "bare" / "model.safetensors"
    bare.parent.mkdir()
    bare.write_bytes((tmp_path / "clip" / "model.safetensors").read_bytes())
    assert main(["convert", str(bare), str(tmp_path / "bare.safetensors")]) == 2
    assert "config.json" in capsys.readouterr().err

    siglip = perturb(T.SiglipModel(T.SiglipConfig(vision_config=SIGLIP_V, text_config=TEXT, **EAGER)), seed=7)
    siglip.save_pretrained(tmp_path / "siglip")
    convert(tmp_path / "siglip", tmp_path / "siglip.safetensors")
    assert "logit_bias" in capsys.readouterr().out
    ref = hf_output(siglip.vision_model, images, "pooler_output")
    out_jax, out_torch = our_logits(tmp_path / "siglip.safetensors", images)
    report("hf SiglipModel (vision tower) -> vit", jax=scaled_diff(out_jax, ref), torch=scaled_diff(out_torch, ref))


@pytest.mark.parametrize("name, what", [
    ("dinov2_like", "pooler_output"),      # registers, SwiGLU, layer scale -> Dinov2WithRegistersModel
    ("deit3_like", "pooler_output"),       # layer scale, no [CLS] position -> Dinov2Model (a zero [CLS] slot)
    ("siglip_like", "pooler_output"),      # MAP head -> SiglipVisionModel
    ("deit_distilled", "logits"),          # -> DeiTForImageClassificationWithTeacher
    ("mean_pool", "logits"),               # Google's "gap" ViT -> SiglipForImageClassification
])
def test_our_feature_models_to_hf(name, what, tmp_path):
    """Models of this project's parity matrix (not from transformers) written --to hf: the class chosen by the config
    computes what our PyTorch twin computes."""
    from parity_tests.matrix import CONFIGS as MATRIX
    from vit_spec.layout import random_weights
    from vit_spec.weights_file import save_weights

    config = MATRIX[name][0]
    config = config if what == "logits" else config.replace(num_classes=0)
    ours = tmp_path / "ours.safetensors"
    save_weights(ours, config, random_weights(config, seed=5))
    convert(ours, tmp_path / "hf", "--to", "hf")
    arch = json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"][0]
    model = getattr(T, arch).from_pretrained(tmp_path / "hf", **EAGER).eval()
    images = images_nchw(config.image_hw, seed=6)
    _, out_torch = our_logits(ours, images)
    report(f"vit {name} -> hf {arch}", hf=scaled_diff(hf_output(model, images, what), out_torch))


def test_models_no_hf_class_computes_are_refused(tmp_path, capsys):
    from parity_tests.matrix import CONFIGS as MATRIX
    from vit_spec.layout import random_weights
    from vit_spec.weights_file import save_weights

    for name, needle in (("rmsnorm_qknorm", "RMSNorm"), ("dinov2_like", "Dinov2ForImageClassification"),
                         ("siglip_like", "--num-classes 0")):
        config = MATRIX[name][0]
        save_weights(tmp_path / f"{name}.safetensors", config, random_weights(config))
        assert main(["convert", str(tmp_path / f"{name}.safetensors"), str(tmp_path / name), "--to", "hf"]) == 2
        assert needle in capsys.readouterr().err, name
