"""Hugging Face transformers <-> this project, checked against transformers itself: random ViTs
(ViTForImageClassification, ViTModel with its pooler) converted with `vit convert`, our JAX and
PyTorch outputs required to match HF's (eager attention), and our conversions loaded by
`ViTForImageClassification.from_pretrained`.

Prints one "peer-diff" line per comparison: pytest parity_tests -k peers -s | grep peer-diff
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
jax = pytest.importorskip("jax")

from transformers import ViTConfig as HFConfig  # noqa: E402
from transformers import ViTForImageClassification, ViTModel  # noqa: E402

import jax_vit  # noqa: E402
import torch_vit  # noqa: E402
from vit_cli.main import main  # noqa: E402
from parity_tests.peers import convert, images_nchw, our_logits, perturb, report, scaled_diff  # noqa: E402
from vit_spec import ViTConfig  # noqa: E402
from vit_spec.formats import load_checkpoint  # noqa: E402



def hf_forward(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(images))
    return (out.logits if hasattr(out, "logits") else out.pooler_output).numpy()


CASES = {
    # HF's defaults: eps 1e-12, exact GELU.
    "gelu-eps1e-12-patch8": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                 image_size=32, patch_size=8, num_labels=7),
    "gelu_pytorch_tanh-nonsquare-patch6-noqkvbias": dict(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96, image_size=[24, 36],
        patch_size=6, num_labels=10, hidden_act="gelu_pytorch_tanh", qkv_bias=False, layer_norm_eps=1e-6),
    "gelu_new": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                     image_size=16, patch_size=4, num_labels=3, hidden_act="gelu_new"),
    "gelu_fast": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                      image_size=16, patch_size=4, num_labels=3, hidden_act="gelu_fast"),
    "gelu_accurate": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          image_size=16, patch_size=4, num_labels=3, hidden_act="gelu_accurate"),
    "gelu_python": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        image_size=16, patch_size=4, num_labels=3, hidden_act="gelu_python"),
}


def build(kind: type, seed: int, **config) -> torch.nn.Module:
    hf_config = HFConfig(**config, attn_implementation="eager")
    torch.manual_seed(seed)
    model = kind(hf_config, add_pooling_layer=True) if kind is ViTModel else kind(hf_config)
    return perturb(model, seed)


def _hw(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


@pytest.mark.parametrize("case", list(CASES))
def test_hf_classifier_to_ours_and_back(case, tmp_path):
    config = CASES[case]
    model = build(ViTForImageClassification, len(case), **config)
    src = tmp_path / "hf"
    model.save_pretrained(src)
    ours = tmp_path / "ours.safetensors"
    convert(src, ours, "--from", "hf")
    images = images_nchw(_hw(config["image_size"]), seed=1)
    ref = hf_forward(model, images)
    out_jax, out_torch = our_logits(ours, images)
    report(f"hf -> vit [{case}]", jax=scaled_diff(out_jax, ref), torch=scaled_diff(out_torch, ref))

    back = tmp_path / "back"
    convert(ours, back, "--to", "hf")
    reloaded = ViTForImageClassification.from_pretrained(back, attn_implementation="eager").eval()
    report(f"vit -> hf [{case}]", hf=scaled_diff(hf_forward(reloaded, images), out_torch))
    original, again = model.state_dict(), reloaded.state_dict()
    assert sorted(original) == sorted(again)
    assert all(torch.equal(original[k], again[k]) for k in original), "hf -> vit -> hf changed a tensor"


def test_hf_bare_state_dict(tmp_path):
    """A .bin without config.json: heads from --heads, eps and GELU HF's defaults unless told."""
    config = CASES["gelu_pytorch_tanh-nonsquare-patch6-noqkvbias"]
    model = build(ViTForImageClassification, 5, **config)
    src = tmp_path / "bare" / "pytorch_model.bin"
    src.parent.mkdir()
    torch.save(model.state_dict(), src)
    ours = tmp_path / "ours.safetensors"
    convert(src, ours, "--heads", "3", "--source-image-size", "24x36", "--gelu", "tanh", "--layer-norm-eps", "1e-6")
    images = images_nchw((24, 36), seed=2)
    out_jax, out_torch = our_logits(ours, images)
    ref = hf_forward(model, images)
    report("hf state dict (.bin) -> vit", jax=scaled_diff(out_jax, ref), torch=scaled_diff(out_torch, ref))


def test_hf_vitmodel_pooler_is_pre_logits(tmp_path):
    """ViTModel's pooler (Dense + tanh on [CLS]) is the pre-logits layer: num_classes 0, representation_size."""
    config = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=16,
                  patch_size=4, pooler_output_size=24)
    model = build(ViTModel, 11, **config)
    src = tmp_path / "hf"
    model.save_pretrained(src)
    ours = tmp_path / "ours.safetensors"
    convert(src, ours)
    loaded, _ = jax_vit.load(ours)
    assert loaded.representation_size == 24 and loaded.num_classes == 0 and loaded.layer_norm_eps == 1e-12
    images = images_nchw((16, 16), seed=3)
    ref = hf_forward(model, images)
    out_jax, out_torch = our_logits(ours, images)
    report("hf ViTModel pooler -> vit", jax=scaled_diff(out_jax, ref), torch=scaled_diff(out_torch, ref))

    back = tmp_path / "back"
    convert(ours, back, "--to", "hf")
    reloaded = ViTModel.from_pretrained(back, attn_implementation="eager").eval()
    report("vit -> hf ViTModel pooler", hf=scaled_diff(hf_forward(reloaded, images), out_torch))


def test_hf_classifier_ignores_its_pooler_tensors(tmp_path, capsys, caplog):
    """A ViTForImageClassification file that also holds vit.pooler.dense.* (issue 18): HF builds the classifier's
    ViT without a pooler and ignores them (logits = classifier(layernorm([CLS]))), so `vit convert` and
    load_checkpoint (`vit train --init-from`) must too, and name the tensors they leave out."""
    from safetensors.torch import load_file, save_file

    config = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
                  patch_size=8, num_labels=5)
    src = tmp_path / "hf"
    build(ViTForImageClassification, 18, **config).save_pretrained(src)
    tensors = load_file(src / "model.safetensors")
    gen = torch.Generator().manual_seed(18)
    tensors["vit.pooler.dense.weight"] = torch.randn(32, 32, generator=gen)
    tensors["vit.pooler.dense.bias"] = torch.randn(32, generator=gen)
    save_file(tensors, src / "model.safetensors", {"format": "pt"})
    model = ViTForImageClassification.from_pretrained(src, attn_implementation="eager").eval()
    images = images_nchw((32, 32), seed=18)
    ref = hf_forward(model, images)

    capsys.readouterr()
    ours = tmp_path / "ours.safetensors"
    convert(src, ours)
    printed = capsys.readouterr().out
    assert "vit.pooler.dense.weight" in printed and "vit.pooler.dense.bias" in printed, printed
    loaded, _ = jax_vit.load(ours)
    assert loaded.representation_size is None and loaded.num_classes == 5
    out_jax, out_torch = our_logits(ours, images)
    report("hf classifier with pooler tensors -> vit", jax=scaled_diff(out_jax, ref), torch=scaled_diff(out_torch, ref))

    with caplog.at_level(logging.INFO, logger="vit_spec.formats"):
        config, state_dict = load_checkpoint(src)
    assert config.representation_size is None and config.num_classes == 5
    assert "vit.pooler.dense.weight" in caplog.text and "vit.pooler.dense.bias" in caplog.text
    with torch.no_grad():
        out = torch_vit.model_from_state_dict(config, state_dict)(torch.from_numpy(images)).numpy()
    report("hf classifier with pooler tensors -> load_checkpoint", torch=scaled_diff(out, ref))


def test_our_model_to_hf(tmp_path):
    """A model this project made (tanh GELU, eps 1e-6, non-default normalisation) as a HF directory."""
    config = ViTConfig(image_size=20, patch_size=5, width=40, depth=2, heads=5, mlp_dim=72, num_classes=6,
                       gelu="tanh", image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225))
    torch.manual_seed(0)
    model = perturb(torch_vit.ViT(config), seed=4)
    ours = tmp_path / "ours.safetensors"
    torch_vit.save(ours, model)
    out = tmp_path / "hf"
    convert(ours, out, "--to", "hf")
    reloaded = ViTForImageClassification.from_pretrained(out, attn_implementation="eager").eval()
    images = images_nchw((20, 20), seed=5)
    _, out_torch = our_logits(ours, images)
    report("vit (torch_vit model) -> hf", hf=scaled_diff(hf_forward(reloaded, images), out_torch))
    processor = transformers.ViTImageProcessor.from_pretrained(out)
    assert processor.image_mean == pytest.approx(config.image_mean) and processor.image_std == pytest.approx(config.image_std)


def test_hf_activation_we_lack_is_refused(tmp_path, capsys):
    model = build(ViTForImageClassification, 0, **{**CASES["gelu_new"], "hidden_act": "quick_gelu"})
    model.save_pretrained(tmp_path / "hf")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "quick_gelu" in err and "gelu_pytorch_tanh" in err
