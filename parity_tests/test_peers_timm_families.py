"""Today's timm ViT families through `vit convert`, checked against timm itself: each family's timm model built by
timm at a small size with perturbed weights, saved as timm writes it (state_dict -> safetensors), converted with
`vit convert --variant NAME --heads H` (the name's architecture at the file's sizes) and back with `--to timm`.
Both twins' logits and final tokens agree with timm's within 1e-5 scaled, the timm constructor `vit convert` prints
loads the written file with strict=True and computes the same, and timm -> vit -> timm is bit-exact.

Prints one "peer-diff" line per family: pytest parity_tests/test_peers_timm_families.py -s | grep peer-diff
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
pytest.importorskip("jax")

from safetensors.numpy import load_file as load_numpy  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from parity_tests.peers import perturb, report, scaled_diff, unfused  # noqa: E402
from twins import jax_side, torch_side  # noqa: E402
from vit_cli.main import main  # noqa: E402
from vit_spec import load_weights  # noqa: E402

SMALL = dict(depth=2, embed_dim=64, num_heads=2)
# family -> (timm name, kwargs at a small size, what the family shows)
FAMILIES = {
    "dinov2": ("vit_small_patch14_dinov2.lvd142m", dict(SMALL, img_size=28), "layer scale, no head"),
    "dinov2-reg4": ("vit_small_patch14_reg4_dinov2.lvd142m", dict(SMALL, img_size=28),
                    "4 registers, position table without prefix slots"),
    "dinov2-giant-swiglu": ("vit_giant_patch14_dinov2.lvd142m", dict(depth=1, embed_dim=48, num_heads=2, img_size=28),
                            "packed SwiGLU (SwiGLUPacked)"),
    "deit": ("deit_tiny_patch16_224.fb_in1k", dict(SMALL, img_size=32, num_classes=7), "plain ViT, ImageNet norm"),
    "deit-distilled": ("deit_tiny_distilled_patch16_224.fb_in1k", dict(SMALL, img_size=32, num_classes=7),
                       "distillation token, two heads"),
    "deit3": ("deit3_small_patch16_224.fb_in1k", dict(SMALL, img_size=32, num_classes=7),
              "layer scale, no [CLS] position slot"),
    "siglip-map": ("vit_base_patch16_siglip_224.webli", dict(SMALL, img_size=32, num_classes=5),
                   "MAP head, no [CLS] token"),
    "siglip-gap": ("vit_base_patch16_siglip_gap_224.webli", dict(SMALL, img_size=32, num_classes=5),
                   "mean pool without fc_norm"),
    "clip": ("vit_base_patch16_clip_224.openai", dict(SMALL, img_size=32, num_classes=5),
             "pre_norm, no patch bias, eps 1e-5"),
    "clip-quickgelu": ("vit_base_patch16_clip_quickgelu_224.openai", dict(SMALL, img_size=32, num_classes=5),
                       "quick GELU"),
    "mim-mean-fc_norm": ("eva_large_patch14_196.in22k_ft_in22k_in1k", dict(SMALL, img_size=28, num_classes=5),
                         "mean pool with fc_norm (MAE/BEiT-style)"),
    "reg-gap-fc_norm": ("vit_betwixt_patch16_reg4_gap_256.sbb_in1k", dict(SMALL, img_size=32, num_classes=5),
                        "registers, mean pool, fc_norm"),
    "aimv2": ("aimv2_large_patch14_224.apple_pt", dict(SMALL, img_size=28),
              "RMSNorm on the patch embeddings (embed_norm_layer), bias-free projections and SwiGLU, mean pool"),
    "beit3": ("beit3_base_patch16_224.in22k_ft_in1k", dict(SMALL, img_size=32, num_classes=5),
              "a norm on the attention output (scale_attn_norm) and in the MLP, eps 1e-5, mean pool with fc_norm"),
    "prefix-pool-map": ("test_vit3.r160_in1k", dict(SMALL, img_size=32, num_classes=5),
                        "MAP head over the register token too (pool_include_prefix), layer scale"),
}


def timm_family(name: str, kwargs: dict, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return perturb(timm.create_model(name, pretrained=False, **kwargs), seed=seed)


def save_as_timm(model: torch.nn.Module, path) -> None:
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))


def vit_convert(capsys, *args) -> str:
    rc = main(["convert", *map(str, args)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


def snippet_of(out: str) -> str:
    """The timm constructor `vit convert --to timm` printed (its indented lines after 'load it in timm')."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "load it in timm" in line) + 1
    return "\n".join(line.strip() for line in lines[start:] if line.startswith("    "))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_timm_family_converts_both_ways(family, tmp_path, capsys):
    name, kwargs, _ = FAMILIES[family]
    model = timm_family(name, kwargs, seed=len(family))
    src = tmp_path / "timm.safetensors"
    save_as_timm(model, src)
    ours = tmp_path / "ours.safetensors"
    vit_convert(capsys, src, ours, "--variant", name, "--heads", kwargs["num_heads"])
    config, weights = load_weights(ours)
    assert config.image_mean == pytest.approx(model.pretrained_cfg["mean"])

    images = np.random.default_rng(1).standard_normal((2, *config.image_hw, 3)).astype(np.float32)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    with torch.no_grad():
        tokens, logits = model.forward_features(x).numpy(), model(x).numpy()
    diffs = {}
    for twin, side in (("jax", jax_side), ("torch", torch_side)):
        out = side.forward(config, weights, images)
        diffs[f"{twin} tokens"] = scaled_diff(out["encoded"], tokens)
        diffs[f"{twin} logits"] = scaled_diff(out["logits"], logits)

    # Back to timm: the printed constructor loads the file strictly and computes the same.
    back = tmp_path / "back.safetensors"
    out = vit_convert(capsys, ours, back, "--to", "timm")
    namespace: dict = {}
    exec(snippet_of(out), namespace)
    rebuilt = unfused(namespace["model"])
    assert type(rebuilt) is type(model)
    with torch.no_grad():
        diffs["timm from --to timm"] = scaled_diff(rebuilt(x).numpy(), logits)
    with capsys.disabled():  # the peer-diff line reaches -s
        report(f"timm family [{family}: {name}]", **diffs)

    # timm -> vit -> timm: every tensor bit for bit.
    before = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    after = load_numpy(str(back))
    assert list(after) == list(before) or sorted(after) == sorted(before)
    assert all(np.array_equal(before[k], after[k]) for k in before), "timm -> vit -> timm changed a tensor"
    # and vit -> timm -> vit gives our file back.
    again = tmp_path / "again.safetensors"
    vit_convert(capsys, back, again)
    config2, weights2 = load_weights(again)
    assert config2 == config and all(np.array_equal(weights[k], weights2[k]) for k in weights)


def test_without_a_variant_the_tensors_decide_the_features(tmp_path, capsys):
    """DINOv2 with registers read with --heads only: registers, layer scale and the position table without prefix
    slots come from the tensors; the rest is timm's default and said so."""
    name, kwargs, _ = FAMILIES["dinov2-reg4"]
    model = timm_family(name, kwargs, seed=3)
    src = tmp_path / "timm.safetensors"
    save_as_timm(model, src)
    out = vit_convert(capsys, src, tmp_path / "ours.safetensors", "--heads", "2")
    config, _ = load_weights(tmp_path / "ours.safetensors")
    assert (config.reg_tokens, config.pos_embed_covers_prefix, config.layer_scale_init) == (4, False, 1e-5)
    assert "no_embed_class" in out and "not recorded in a timm state dict" in out


def test_patch_norm_attn_norm_and_bias_free_projections_from_the_tensors_prefix_pooling_from_the_name(tmp_path, capsys):
    """AIMv2 and BEiT-3 read with --heads only: their norms and missing biases show in the tensors; pooling over the
    register token (test_vit3) does not, so it comes from the name. Hugging Face writing refuses all three."""
    found = {}
    for family, field in (("aimv2", "patch_norm"), ("beit3", "attn_norm"), ("prefix-pool-map", "pool_include_prefix")):
        name, kwargs, _ = FAMILIES[family]
        src = tmp_path / f"{family}.safetensors"
        save_as_timm(timm_family(name, kwargs, seed=7), src)
        vit_convert(capsys, src, tmp_path / f"{family}-ours.safetensors", "--heads", "2")
        found[family] = load_weights(tmp_path / f"{family}-ours.safetensors")[0]
        assert main(["convert", str(src), str(tmp_path / f"{family}-hf"), "--variant", name, "--heads", "2",
                     "--to", "hf"]) == 2
        err = capsys.readouterr().err
        assert "no Hugging Face class computes this model" in err and f"({field})" in err, err
    aimv2, beit3, prefix = found["aimv2"], found["beit3"], found["prefix-pool-map"]
    assert (aimv2.patch_norm, aimv2.proj_bias, aimv2.norm, aimv2.attn_norm) == (True, False, "rms", False)
    assert (beit3.attn_norm, beit3.mlp_norm, beit3.patch_norm, beit3.proj_bias) == (True, True, False, True)
    assert prefix.pool == "map" and not prefix.pool_include_prefix  # timm's default without a name
    vit_convert(capsys, tmp_path / "prefix-pool-map.safetensors", tmp_path / "named.safetensors", "--variant",
                FAMILIES["prefix-pool-map"][0], "--heads", "2")
    assert load_weights(tmp_path / "named.safetensors")[0].pool_include_prefix


def test_a_packed_glu_needs_a_name_or_activation(tmp_path, capsys):
    name, kwargs, _ = FAMILIES["dinov2-giant-swiglu"]
    src = tmp_path / "timm.safetensors"
    save_as_timm(timm_family(name, kwargs, seed=4), src)
    assert main(["convert", str(src), str(tmp_path / "o.safetensors"), "--heads", "2"]) == 2
    err = capsys.readouterr().err
    assert "packed gated MLP" in err and "SwiGLUPacked" in err and "--activation silu|gelu" in err
    vit_convert(capsys, src, tmp_path / "o.safetensors", "--heads", "2", "--activation", "silu")
    assert load_weights(tmp_path / "o.safetensors")[0].mlp == "swiglu_packed"


def test_a_file_contradicting_its_name_is_refused_naming_both(tmp_path, capsys):
    name, kwargs, _ = FAMILIES["deit3"]
    src = tmp_path / "timm.safetensors"
    save_as_timm(timm_family(name, kwargs, seed=5), src)
    assert main(["convert", str(src), str(tmp_path / "o.safetensors"), "--variant", "vit_small_patch14_reg4_dinov2",
                 "--heads", "2"]) == 2
    err = capsys.readouterr().err
    assert "does not match --variant vit_small_patch14_reg4_dinov2" in err
    assert "reg_tokens=0 (reg_token absent)" in err and "reg_tokens=4" in err


@pytest.mark.parametrize("name, kwargs, words", [
    ("vit_small_r26_s32_224", dict(depth=1, num_classes=3), "HybridEmbed"),
    ("vit_dlittle_patch16_reg1_gap_256", dict(depth=1, embed_dim=64, num_heads=2, img_size=32), "DiffAttention"),
    ("vit_pwee_patch16_reg1_gap_256", dict(depth=1, embed_dim=64, num_heads=2, img_size=32), "ParallelScalingBlock"),
])
def test_timm_models_the_twins_cannot_compute_are_refused_with_the_reason(name, kwargs, words, tmp_path, capsys):
    src = tmp_path / "timm.safetensors"
    save_as_timm(timm.create_model(name, pretrained=False, **kwargs), src)
    assert main(["convert", str(src), str(tmp_path / "o.safetensors"), "--heads", "2"]) == 2
    err = capsys.readouterr().err
    assert words in err and "cannot compute" in err, err
    # The name says it too, without a file.
    assert main(["convert", str(src), str(tmp_path / "o.safetensors"), "--variant", name]) == 2
    assert "cannot compute" in capsys.readouterr().err


@pytest.mark.parametrize("family, size", [("dinov2-reg4", 42), ("deit-distilled", 48), ("siglip-map", 48)])
def test_new_image_size_and_head_for_every_family(family, size, tmp_path, capsys):
    """--image-size resamples as timm's resample_abs_pos_embed with the table's prefix slots (none for DINOv2's
    registers), --num-classes replaces the head (both of a distilled model's; a MAP head's pooling stays), and timm's
    model at the new size loads the result strictly and computes what both twins compute."""
    from timm.layers import resample_abs_pos_embed

    name, kwargs, _ = FAMILIES[family]
    model = timm_family(name, kwargs, seed=6)
    src = tmp_path / "timm.safetensors"
    save_as_timm(model, src)
    back = tmp_path / "big.safetensors"
    out = vit_convert(capsys, src, back, "--variant", name, "--heads", 2, "--image-size", size, "--num-classes", 3,
                      "--head-seed", 0, "--to", "timm")
    sd = load_numpy(str(back))
    grid = size // model.patch_embed.patch_size[0]
    prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    expected = resample_abs_pos_embed(model.pos_embed.detach(), (grid, grid), num_prefix_tokens=prefix)
    assert scaled_diff(sd["pos_embed"], expected.numpy()) < 1e-6
    assert sd["head.weight"].shape == (3, 64) and ("head_dist.weight" in sd) == (family == "deit-distilled")
    assert all(np.array_equal(sd[k], v.detach().numpy()) for k, v in model.state_dict().items() if k.startswith("attn_pool"))
    namespace: dict = {}
    exec(snippet_of(out), namespace)
    rebuilt = unfused(namespace["model"])
    ours = tmp_path / "big-ours.safetensors"
    vit_convert(capsys, back, ours)
    config, weights = load_weights(ours)
    assert config.image_size == size and config.num_classes == 3
    images = np.random.default_rng(2).standard_normal((2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        ref = rebuilt(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    diffs = {twin: scaled_diff(side.forward(config, weights, images)["logits"], ref)
             for twin, side in (("jax", jax_side), ("torch", torch_side))}
    with capsys.disabled():
        report(f"timm family at {size} px, 3 classes [{family}]", **diffs)


def _square_dataset(side: int):
    from train.data import Dataset, Split

    rng = np.random.default_rng(0)
    tint = rng.integers(0, 128, (10, 1, 1, 3))

    def split(n: int) -> Split:
        labels = rng.integers(0, 10, n).astype(np.int32)
        return Split((rng.integers(0, 128, (n, side, side, 3)) + tint[labels]).astype(np.uint8), labels)

    return Dataset("tiny", 10, split(64), split(32))


@pytest.mark.parametrize("name, side, framework", [("vit_small_patch14_reg4_dinov2.lvd142m", 42, "torch"),
                                                   ("deit3_small_patch16_224.fb_in1k", 32, "torch")])
def test_vit_train_init_from_a_timm_file_of_the_family(name, side, framework, monkeypatch, tmp_path, capsys):
    """`vit train --init-from` a timm file as timm saves it (DINOv2 with registers, DeiT III: the real sizes), its
    name as --init-variant: the position table resampled to the data's size, a new head, two steps trained (the
    zero head passes no gradient to the blocks in the first)."""
    model = timm.create_model(name, pretrained=False)
    src = tmp_path / "timm.safetensors"
    save_as_timm(model, src)
    monkeypatch.setattr("train.data.load", lambda dataset, data_dir=None: _square_dataset(side))
    workdir = tmp_path / "run"
    rc = main(["train", "--framework", framework, "--steps", "2", "--batch-size", "8", "--validation", "0",
               "--no-progress", "--workdir", str(workdir), "--init-from", str(src), "--init-variant", name])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"init from {src} (timm)" in err and "a new head of 10 classes" in err, err
    config, weights = load_weights(workdir / "model.safetensors")
    assert (config.image_size, config.num_classes, config.layer_scale_init is not None) == (side, 10, True)
    assert config.reg_tokens == (4 if "reg4" in name else 0) and not config.pos_embed_covers_prefix
    assert weights["head.weight"].any()  # it trained: the head
    start = model.state_dict()["blocks.0.attn.qkv.weight"].numpy()
    assert not np.array_equal(weights["blocks.0.attn.qkv.weight"], start)  # and the blocks
