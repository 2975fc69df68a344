"""`vit parity FILE` and `vit summary VARIANT|FILE` from the command line."""

import subprocess
import sys

import numpy as np
import pytest

from twins import jax_side
from vit_cli.main import main
from vit_spec import ViTConfig, random_weights, save_weights

CONFIG = ViTConfig(image_size=16, patch_size=4, width=32, depth=2, heads=4, mlp_dim=64, num_classes=5)


@pytest.fixture
def weights_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, CONFIG, random_weights(CONFIG))
    return path


def test_parity_prints_every_layer_and_passes(weights_file, capsys):
    assert main(["parity", str(weights_file)]) == 0
    out = capsys.readouterr().out
    for name in ("patch_embed", "blocks.0.attn_probs", "blocks.1", "logits (fused attention)", "blocks.1.mlp.fc2.weight", "input"):
        assert f"\n{name} " in out
    assert "PASS" in out


def test_parity_exits_1_and_names_the_layer_when_the_twins_differ(weights_file, capsys, monkeypatch):
    real = jax_side.forward

    def off_by_a_bit(*args, **kwargs):
        out = real(*args, **kwargs)
        out["blocks.1"] = out["blocks.1"] + 1e-3
        return out

    monkeypatch.setattr(jax_side, "forward", off_by_a_bit)
    assert main(["parity", str(weights_file), "--no-gradients"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "worst: blocks.1" in out


def test_parity_reads_image_files(weights_file, tmp_path, capsys):
    from PIL import Image

    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(paths[-1])
    assert main(["parity", str(weights_file), "--images", *paths, "--dtype", "float64"]) == 0
    assert "batch 2" in capsys.readouterr().out


def test_parity_on_a_missing_or_foreign_file_is_a_clean_error(tmp_path, capsys):
    assert main(["parity", str(tmp_path / "none.safetensors")]) == 2
    assert "no weights file at" in capsys.readouterr().err
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    assert main(["parity", str(tmp_path / "junk.safetensors")]) == 2
    assert "not a readable .safetensors file" in capsys.readouterr().err


def test_summary_of_a_variant_lists_layers_and_the_published_total(capsys):
    assert main(["summary", "S/16", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "total parameters: 22,050,664 (JAX), 22,050,664 (PyTorch)" in out
    assert "blocks.11" in out and "patch_embed.proj" in out and "1x384x14x14" in out


def test_summary_of_a_weights_file_uses_its_config(weights_file, capsys):
    assert main(["summary", str(weights_file), "--depth", "3"]) == 0
    out = capsys.readouterr().out
    assert "blocks.1.attn.qkv" in out and "3,168" in out  # 32*96 + 96


def test_summary_of_an_unknown_variant_is_a_clean_error(capsys):
    assert main(["summary", "Q/16"]) == 2
    assert "unknown variant 'Q/16'" in capsys.readouterr().err


def test_the_vit_command_is_installed():
    out = subprocess.run([sys.executable, "-m", "vit_cli.main", "--help"], capture_output=True, text=True, check=True).stdout
    assert "parity" in out and "summary" in out
