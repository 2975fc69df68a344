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
    assert "all zeros" not in out  # random_weights leaves no zero tensor, so nothing is replaced


def test_parity_of_a_fresh_file_replaces_its_zero_tensors_so_the_gradients_mean_something(tmp_path, capsys):
    import jax_vit
    from twins.parity import perturb_zeros, random_images, run_parity, zero_tensors
    from vit_spec import load_weights

    path = tmp_path / "fresh.safetensors"
    jax_vit.save(path, CONFIG, jax_vit.init_params(CONFIG, rng=0))  # the standard init: a zero head
    config, state_dict = load_weights(path)
    assert {"head.weight", "head.bias", "cls_token"} <= set(zero_tensors(state_dict))
    images = random_images(config, 2, seed=0)

    # As the file is, every gradient but the head's is exactly zero in both twins: a comparison of zeros.
    as_is = run_parity(config, state_dict, images, perturb=False)
    assert as_is.perturbed == () and all(d.ref_max == 0 for d in as_is.gradients if not d.name.startswith("head."))
    report = run_parity(config, state_dict, images)
    assert set(report.perturbed) == set(zero_tensors(state_dict))
    blocks = [d for d in report.gradients if d.name.startswith("blocks.")]
    assert blocks and all(d.ref_max > 0 for d in blocks) and report.ok
    assert next(d for d in report.gradients if d.name == "input").ref_max > 0
    # The forward pass runs the file as it is; the replacement values are deterministic in the seed.
    assert report.forward == as_is.forward
    a, b, c = (perturb_zeros(config, state_dict, seed)[0]["head.weight"] for seed in (0, 0, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c) and a.any()

    assert main(["parity", str(path), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    n = len(report.perturbed)
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: {n} of {len(state_dict)} tensors are all zeros in this file (head.weight, head.bias, cls_token, "
        f"{next(t for t in report.perturbed if t.startswith('blocks.'))} and {n - 4} more); a zero head (as initialised) "
        "makes every gradient but the head's zero, so the gradients are compared with them replaced by random values "
        "(seed 3)"
    ]
    assert f"gradients of the cross-entropy, float32, {n} all-zero tensor(s) replaced by random values (seed 3)" in out
    assert main(["parity", str(path), "--no-gradients"]) == 0
    assert "all zeros" not in capsys.readouterr().out  # no gradients compared, nothing replaced


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
