"""`vit convert` from the command line: what it writes, and that wrong or unsupported input gets an
error naming what was expected and what was found (exit status 2, no traceback)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from vit_cli.main import main
from vit_spec import ViTConfig, load_weights, random_weights, read_metadata, save_weights



TINY = ViTConfig(image_size=16, patch_size=4, width=32, depth=2, heads=4, mlp_dim=64, num_classes=5, gelu="tanh")


def convert(capsys, *args) -> tuple[int, str, str]:
    rc = main(["convert", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def ours(tmp_path):
    path = tmp_path / "ours.safetensors"
    save_weights(path, TINY, random_weights(TINY))
    return path


@pytest.fixture
def timm_file(tmp_path):
    """A bare timm-named state dict (no config), as timm's save would give."""
    path = tmp_path / "timm.safetensors"
    save_file(random_weights(TINY.replace(gelu="exact")), str(path))
    return path


def test_entry_point_error_is_clean(tmp_path):
    """The installed `vit` prints `vit convert: error: ...` and exits 2, without a traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "vit_cli.main", "convert", str(tmp_path / "missing.npz"), str(tmp_path / "o.safetensors")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("vit convert: error: no checkpoint at") and "Traceback" not in proc.stderr


def test_every_direction_from_ours(ours, tmp_path, capsys):
    rc, out, _ = convert(capsys, ours, tmp_path / "t.safetensors", "--to", "timm")
    assert rc == 0 and "VisionTransformer(" in out and "act_layer='gelu_tanh'" in out
    assert rc == 0 and convert(capsys, ours, tmp_path / "g.npz", "--to", "npz")[0] == 0
    assert convert(capsys, ours, tmp_path / "hf", "--to", "hf")[0] == 0
    assert (tmp_path / "hf" / "config.json").is_file() and (tmp_path / "hf" / "preprocessor_config.json").is_file()
    for src in ("t.safetensors", "g.npz", "hf"):
        rc, _, err = convert(capsys, tmp_path / src, tmp_path / f"{src}.back.safetensors")
        assert rc == 0, err
        config, sd = load_weights(tmp_path / f"{src}.back.safetensors")
        assert config == TINY.replace(image_mean=config.image_mean, image_std=config.image_std)


def test_resolution_and_head_change(ours, tmp_path, capsys):
    dst = tmp_path / "big.safetensors"
    rc, out, err = convert(capsys, ours, dst, "--image-size", "24x32", "--num-classes", "10", "--drop-representation",
                           "--resample", "bilinear", "--head-seed", "3")
    assert rc == 0, err
    assert "pos_embed resampled from a (4, 4) to a (6, 8) grid (bilinear" in out and "normal(0, 0.02), seed 3" in out
    config, sd = load_weights(dst)
    assert config.image_size == (24, 32) and config.num_classes == 10 and sd["head.weight"].std() > 0


def test_timm_state_dict_needs_heads(timm_file, tmp_path, capsys):
    rc, _, err = convert(capsys, timm_file, tmp_path / "o.safetensors")
    assert rc == 2 and "does not record the number of attention heads (width 32)" in err and "--variant" in err
    rc, out, _ = convert(capsys, timm_file, tmp_path / "o.safetensors", "--heads", "4")
    assert rc == 0 and "not recorded in a timm state dict; timm's default" in out


def test_variant_width_mismatch(timm_file, tmp_path, capsys):
    rc, _, err = convert(capsys, timm_file, tmp_path / "o.safetensors", "--variant", "S/16")
    assert rc == 2 and "does not match --variant S/16: the checkpoint has width=32 (patch_embed.proj.weight has shape" in err
    assert "but S/16 has width=384, depth=12, mlp_dim=1536, patch_size=16" in err


def test_resnet_like_state_dict(tmp_path, capsys):
    path = tmp_path / "resnet.safetensors"
    save_file({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "bn1.weight": np.ones(64, np.float32),
               "fc.weight": np.zeros((1000, 512), np.float32)}, str(path))
    rc, _, err = convert(capsys, path, tmp_path / "o.safetensors")
    assert rc == 2 and "not a ViT checkpoint" in err and "patch_embed.proj.weight" in err and "conv1.weight (64, 3, 7, 7)" in err


def test_truncated_files(ours, tmp_path, capsys):
    data = ours.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    rc, _, err = convert(capsys, cut, tmp_path / "o.safetensors")
    assert rc == 2 and "truncated" in err
    npz = tmp_path / "g.npz"
    assert convert(capsys, ours, npz, "--to", "npz")[0] == 0
    cut = tmp_path / "cut.npz"
    cut.write_bytes(npz.read_bytes()[:1000])
    rc, _, err = convert(capsys, cut, tmp_path / "o2.safetensors")
    assert rc == 2 and "not a readable .npz archive" in err


def test_target_refusals(tmp_path, capsys):
    exact = TINY.replace(gelu="exact", representation_size=None)
    src = tmp_path / "exact.safetensors"
    save_weights(src, exact, random_weights(exact))
    rc, _, err = convert(capsys, src, tmp_path / "g.npz", "--to", "npz")
    assert rc == 2 and "GELU 'exact' (Google's code: 'tanh')" in err and "--accept-mismatch" in err
    rc, out, _ = convert(capsys, src, tmp_path / "g.npz", "--to", "npz", "--accept-mismatch")
    assert rc == 0 and "written despite the mismatch" in out
    rep = TINY.replace(representation_size=8)
    src = tmp_path / "rep.safetensors"
    save_weights(src, rep, random_weights(rep))
    rc, _, err = convert(capsys, src, tmp_path / "t.safetensors", "--to", "timm")
    assert rc == 2 and "no pre-logits layer" in err
    rc, _, err = convert(capsys, src, tmp_path / "t.pth", "--to", "timm", "--drop-representation", "--num-classes", "3")
    assert rc == 2 and "writes a .safetensors file" in err
    assert convert(capsys, src, tmp_path / "t.safetensors", "--to", "timm", "--drop-representation", "--num-classes", "3")[0] == 0


def test_recorded_fields_cannot_be_overridden(ours, tmp_path, capsys):
    rc, _, err = convert(capsys, ours, tmp_path / "o.safetensors", "--gelu", "exact")
    assert rc == 2 and "records gelu='tanh'" in err


def test_destination_is_not_overwritten(ours, tmp_path, capsys):
    dst = tmp_path / "o.safetensors"
    dst.write_bytes(b"keep")
    rc, _, err = convert(capsys, ours, dst)
    assert rc == 2 and "exists; pass --overwrite" in err and dst.read_bytes() == b"keep"
    assert convert(capsys, ours, dst, "--overwrite")[0] == 0
    assert "vit_config" in read_metadata(dst)


def test_from_must_fit_the_file(ours, tmp_path, capsys):
    rc, _, err = convert(capsys, ours, tmp_path / "o.safetensors", "--from", "timm")
    assert rc == 2 and "looks like this project's .safetensors" in err


def test_a_timm_name_at_another_image_size_says_what_to_pass_and_source_image_size_replaces_it(tmp_path, capsys):
    """A timm model built at 64 px and saved as a .pth: its name says 224, its 17 position entries say 64."""
    timm = pytest.importorskip("timm")
    import torch

    src = tmp_path / "timm_ti16_64.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=7).state_dict(), src)
    rc, _, err = convert(capsys, src, tmp_path / "o.safetensors", "--variant", "vit_tiny_patch16_224")
    assert rc == 2
    assert (f"{src}: pos_embed has 17 entries, but image size 224 (from --variant vit_tiny_patch16_224) with patch size "
            "16 makes a 14x14 grid plus [CLS], 197 entries; 17 entries are 1 [CLS] + a 4x4 grid of 16-px patches, so "
            "the file was saved at 64 px: pass --source-image-size 64 with --variant vit_tiny_patch16_224") in err, err
    rc, out, err = convert(capsys, src, tmp_path / "o.safetensors", "--variant", "vit_tiny_patch16_224",
                           "--source-image-size", "64")
    assert rc == 0, err
    assert "image size 64 from --source-image-size, in place of vit_tiny_patch16_224's 224" in out
    config, _ = load_weights(tmp_path / "o.safetensors")
    # The name's architecture and normalisation, at the file's image size.
    assert (config.image_size, config.width, config.heads, config.image_mean) == (64, 192, 3, (0.5, 0.5, 0.5))
    # An image size that does not fit either is refused, with the one that does.
    rc, _, err = convert(capsys, src, tmp_path / "o2.safetensors", "--variant", "vit_tiny_patch16_224",
                         "--source-image-size", "32", "--overwrite")
    assert rc == 2 and "(from --source-image-size 32)" in err and "pass --source-image-size 64 with --variant" in err


def test_messages_name_convert_flags(timm_file, tmp_path, capsys):
    """The converter's messages are vit train's too (with its flags); here they keep vit convert's."""
    rc, _, err = convert(capsys, timm_file, tmp_path / "o.safetensors")
    assert rc == 2 and "give --variant (e.g. S/16 or vit_small_patch16_224) or --heads" in err
    assert "init-" not in err and "vit train" not in err
    rc, _, err = convert(capsys, timm_file, tmp_path / "o.safetensors", "--variant", "vit_small_patch16_224.mystery")
    assert rc == 2 and "give --image-mean/--image-std with the tag left off (--variant vit_small_patch16_224)" in err
