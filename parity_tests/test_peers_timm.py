"""timm <-> this project, checked against timm itself: random timm models converted with `vit convert`,
our JAX and PyTorch logits required to match timm's (fused attention off), and our files loaded by timm
with strict=True.

Prints one "peer-diff" line per comparison: pytest parity_tests -k peers -s | grep peer-diff
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
jax = pytest.importorskip("jax")

from safetensors.numpy import load_file as load_numpy  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

import jax_vit  # noqa: E402
import torch_vit  # noqa: E402
from vit_cli.main import main  # noqa: E402
from parity_tests.peers import convert, images_nchw, our_logits, perturb, report, scaled_diff, unfused  # noqa: E402
from vit_spec import ViTConfig, read_metadata  # noqa: E402
from parity_tests.peers import timm_class, timm_kwargs  # noqa: E402



# (timm kwargs, file suffix, extra `vit convert` flags, what the case covers)
CASES = {
    "cls-patch8": (
        dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0, num_classes=7),
        ".safetensors", ["--heads", "4"],
    ),
    "avg-noqkvbias-patch6": (
        dict(img_size=24, patch_size=6, embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0, num_classes=10,
             class_token=False, global_pool="avg", fc_norm=False, qkv_bias=False),
        ".pth", ["--heads", "3"],
    ),
    "nonsquare-tanh-eps1e-5-nohead": (
        dict(img_size=(16, 24), patch_size=(4, 8), embed_dim=32, depth=1, num_heads=2, mlp_ratio=3.0, num_classes=0,
             act_layer="gelu_tanh", norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-5)),
        ".bin", ["--heads", "2", "--gelu", "tanh", "--layer-norm-eps", "1e-5", "--source-image-size", "16x24"],
    ),
    "no-embed-class": (
        dict(img_size=20, patch_size=5, embed_dim=40, depth=2, num_heads=5, mlp_ratio=2.0, num_classes=3,
             no_embed_class=True),
        ".safetensors", ["--heads", "5"],
    ),
}


def save_timm(model: torch.nn.Module, path) -> None:
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if str(path).endswith(".safetensors"):
        save_file(sd, str(path))
    else:
        torch.save(sd, path)


@pytest.mark.parametrize("case", list(CASES))
def test_timm_to_ours_and_back(case, tmp_path):
    kwargs, suffix, flags = CASES[case]
    torch.manual_seed(len(case))
    model = perturb(VisionTransformer(**kwargs), seed=len(case))
    src = tmp_path / f"timm{suffix}"
    save_timm(model, src)
    ours = tmp_path / "ours.safetensors"
    convert(src, ours, "--from", "timm", *flags)

    config, _ = jax_vit.load(ours)
    images = images_nchw(config.image_hw, seed=1)
    with torch.no_grad():
        ref = model(torch.from_numpy(images)).numpy()
    out_jax, out_torch = our_logits(ours, images)
    report(f"timm -> vit [{case}]", jax=scaled_diff(out_jax, ref), torch=scaled_diff(out_torch, ref))

    # Back: --to timm, loaded strictly into the VisionTransformer its recorded config describes.
    back = tmp_path / "back.safetensors"
    convert(ours, back, "--to", "timm")
    recorded = ViTConfig.from_dict(json.loads(read_metadata(back)["vit_timm"])["config"])
    rebuilt = timm_class(recorded)(**timm_kwargs(recorded))
    rebuilt.load_state_dict(load_file(str(back)), strict=True)
    with torch.no_grad():
        again = unfused(rebuilt)(torch.from_numpy(images)).numpy()
    report(f"vit -> timm [{case}]", timm=scaled_diff(again, out_torch))

    # timm -> vit -> timm gives back timm's tensors bit for bit (no_embed_class too: the table is kept as it is).
    before = {k: v.numpy() for k, v in model.state_dict().items()}
    after = load_numpy(str(back))
    assert sorted(before) == sorted(after)
    assert all(np.array_equal(before[k], after[k]) for k in before), "timm -> vit -> timm changed a tensor"


def test_our_file_loads_in_timm_strict(tmp_path):
    """A file this project writes (a torch_vit model, sincos2d + mean pooling) is a timm state dict as it is."""
    config = ViTConfig(image_size=24, patch_size=6, width=48, depth=2, heads=4, mlp_dim=96, num_classes=5,
                       pool="mean", pos_embed="sincos2d", gelu="tanh")
    torch.manual_seed(0)
    model = perturb(torch_vit.ViT(config), seed=3)
    path = tmp_path / "ours.safetensors"
    torch_vit.save(path, model)
    images = images_nchw(config.image_hw, seed=2)
    timm_model = VisionTransformer(img_size=24, patch_size=6, embed_dim=48, depth=2, num_heads=4, mlp_ratio=2.0,
                                   num_classes=5, class_token=False, global_pool="avg", fc_norm=False, act_layer="gelu_tanh")
    timm_model.load_state_dict(load_file(str(path)), strict=True)
    with torch.no_grad():
        ref = unfused(timm_model)(torch.from_numpy(images)).numpy()
    out_jax, out_torch = our_logits(path, images)
    report("vit file loaded by timm strict [sincos2d, mean]", jax=scaled_diff(out_jax, ref), torch=scaled_diff(out_torch, ref))


def test_timm_model_name_variant(tmp_path):
    """--variant with a timm model name: the architecture and normalisation of that name."""
    torch.manual_seed(7)
    # A smaller perturbation at depth 12: 0.1 on every weight makes a deep net amplify rounding, not test conversion.
    model = perturb(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4), seed=7, scale=0.02)
    src = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), src)
    ours = tmp_path / "tiny.safetensors"
    convert(src, ours, "--variant", "vit_tiny_patch16_224")
    config, _ = jax_vit.load(ours)
    cfg = model.pretrained_cfg
    assert config.image_mean == pytest.approx(cfg["mean"]) and config.image_std == pytest.approx(cfg["std"])
    images = images_nchw(config.image_hw, seed=4, n=1)
    with torch.no_grad():
        ref = model(torch.from_numpy(images)).numpy()
    out_jax, out_torch = our_logits(ours, images)
    report("timm -> vit [vit_tiny_patch16_224 by name]", jax=scaled_diff(out_jax, ref), torch=scaled_diff(out_torch, ref))


def test_timm_names_match_timm():
    """Our table of timm's plain ViT names agrees with timm's own models and pretrained configs, features included."""
    from timm.models import vision_transformer as vt

    from vit_spec.formats.timm_models import model_fields
    from vit_spec.formats.variants import _TIMM_NAME, STANDARD_FEATURES, resolve_variant

    checked = 0
    for name, entry in vt.default_cfgs.items():
        if not _TIMM_NAME.fullmatch(name):
            continue
        model = timm.create_model(name, pretrained=False, device="meta")
        built = model_fields(model, name)[0]
        assert {k: built[k] for k in STANDARD_FEATURES} == STANDARD_FEATURES, f"{name}: not a plain ViT"
        for tag, cfg in entry.cfgs.items():
            fields = resolve_variant(f"{name}.{tag}").fields
            assert fields["width"] == model.embed_dim and fields["depth"] == len(model.blocks)
            assert fields["heads"] == model.blocks[0].attn.num_heads
            assert fields["mlp_dim"] == model.blocks[0].mlp.fc1.out_features
            assert fields["image_size"] == cfg.input_size[-1]
            assert fields["image_mean"] == pytest.approx(cfg.mean) and fields["image_std"] == pytest.approx(cfg.std), name
            checked += 1
        default = resolve_variant(name).fields
        first = next(iter(entry.cfgs.values()))
        assert default["image_mean"] == pytest.approx(first.mean), f"{name}: default tag's normalisation"
    assert checked > 30


def test_resnet_state_dict_is_refused(tmp_path, capsys):
    src = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), src)
    assert main(["convert", str(src), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "not a ViT checkpoint" in err and "patch_embed.proj.weight" in err and "conv1.weight" in err


def test_width_mismatch_with_variant_is_refused(tmp_path, capsys):
    kwargs, _, _ = CASES["cls-patch8"]
    src = tmp_path / "timm.safetensors"
    save_timm(VisionTransformer(**{**kwargs, "patch_size": 16, "img_size": 32}), src)
    assert main(["convert", str(src), str(tmp_path / "out.safetensors"), "--variant", "S/16"]) == 2
    err = capsys.readouterr().err
    assert "the checkpoint has width=64" in err and "S/16 has width=384" in err


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(attn_layer="diff"), "differential attention (DiffAttention)"),
        (dict(pos_embed="none"), "no position embedding"),
    ],
)
def test_timm_models_we_cannot_compute_are_refused(kwargs, words, tmp_path, capsys):
    base = dict(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=3)
    src = tmp_path / "timm.safetensors"
    save_timm(VisionTransformer(**{**base, **kwargs}), src)
    assert main(["convert", str(src), str(tmp_path / "out.safetensors"), "--heads", "2"]) == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs",
    [dict(global_pool="avg", class_token=False), dict(init_values=1e-5), dict(reg_tokens=2), dict(qk_norm=True),
     dict(global_pool="map"), dict(global_pool="avg", fc_norm=True, reg_tokens=1, no_embed_class=True),
     dict(final_norm=False), dict(scale_mlp_norm=True, qk_norm=True), dict(scale_attn_norm=True),
     dict(proj_bias=False)],
)
def test_timm_features_once_refused_now_convert(kwargs, tmp_path):
    """What the converter used to refuse: read from the tensors alone (--heads), computing timm's logits."""
    base = dict(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=3)
    model = perturb(VisionTransformer(**{**base, **kwargs}), seed=11)
    src = tmp_path / "timm.safetensors"
    save_timm(model, src)
    ours = tmp_path / "ours.safetensors"
    convert(src, ours, "--heads", "2")
    images = images_nchw((16, 16), seed=5)
    with torch.no_grad():
        ref = model(torch.from_numpy(images)).numpy()
    out_jax, out_torch = our_logits(ours, images)
    report(f"timm -> vit [{kwargs}]", jax=scaled_diff(out_jax, ref), torch=scaled_diff(out_torch, ref))
