"""`vit export`: what it prints and writes, and that a failed check, a bad path or bad weights leave nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from torch_vit import export as torch_export
from twins import exports as export
from vit_cli.main import main
from vit_spec import ViTConfig, random_weights, save_weights

pytest.importorskip("onnxruntime", reason="vit export --to onnx is checked in onnxruntime: pip install 'vit-twins[export]'")

TINY = ViTConfig(image_size=16, patch_size=4, num_classes=5, width=32, depth=2, heads=2, mlp_dim=64)


@pytest.fixture
def weights(tmp_path) -> Path:
    path = tmp_path / "model.safetensors"
    save_weights(path, TINY, random_weights(TINY, seed=0))
    return path


def pictures(tmp_path: Path, n: int = 2) -> list[str]:
    paths = []
    for i in range(n):
        path = tmp_path / f"pic{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("to, written", [("onnx", ["m.out"]), ("stablehlo", ["m.out", "m.out.mlirbc"])])
def test_export_prints_each_check_and_the_worst_and_writes_the_files(weights, tmp_path, capsys, to, written):
    out_dir = tmp_path / "out"
    code = main(["export", str(weights), "--to", to, str(out_dir / "m.out"), "--images", *pictures(tmp_path),
                 "--platforms", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    for inputs in ("random (batch 1)", "random (batch 3)", "2 image files"):
        assert f"{inputs}" in printed
    assert printed.count(" vs jax ") == printed.count(" vs torch ") == 3
    assert "worst difference" in printed and "within 1e-05" in printed
    assert ("opset: 18" in printed) == (to == "onnx")
    assert ("calling_convention_version:" in printed) == (to == "stablehlo")
    assert leftovers(out_dir) == written


@pytest.mark.parametrize("to", ["onnx", "stablehlo"])
def test_an_export_that_fails_its_check_writes_nothing(weights, tmp_path, capsys, monkeypatch, to):
    monkeypatch.setattr(export, "TOL", -1.0)  # no difference passes
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["export", str(weights), "--to", to, str(out_dir / "m"), "--platforms", "cpu"]) == 2
    assert f"the {to} export's logits differ from the twins' past tolerance, so it was not written" in capsys.readouterr().err
    assert leftovers(out_dir) == []


def test_the_check_compares_the_export_with_both_twins(weights, tmp_path, monkeypatch):
    # An export that computes something else (here: the logits shifted) must fail the check.
    real = torch_export.run_onnx
    monkeypatch.setattr(torch_export, "run_onnx", lambda out: (lambda x: real(out)(x) + 1e-3))
    with pytest.raises(export.ExportError, match="past tolerance"):
        export.export(weights, "onnx", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_bad_requests_are_refused_naming_the_fix(weights, tmp_path, capsys):
    assert main(["export", str(weights), "--to", "onnx", str(tmp_path)]) == 2
    assert f"OUT {tmp_path} is a directory: give the path of a file" in capsys.readouterr().err
    assert main(["export", str(weights), "--to", "stablehlo", str(tmp_path / "m"), "--platforms", "gpu"]) == 2
    assert "--platforms 'gpu': use a comma-separated subset of cpu, cuda, rocm, tpu" in capsys.readouterr().err
    text = tmp_path / "notes.txt"
    text.write_text("no picture")
    assert main(["export", str(weights), "--to", "onnx", str(tmp_path / "m.onnx"), "--images", str(text)]) == 2
    assert "cannot check the export on --images: " in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m").exists()


def test_weights_holding_nan_are_named_before_exporting(tmp_path, capsys):
    bad = random_weights(TINY, seed=0)
    bad["blocks.1.mlp.fc2.weight"][0, 0] = np.nan
    path = tmp_path / "nan.safetensors"
    save_weights(path, TINY, bad)
    assert main(["export", str(path), "--to", "stablehlo", str(tmp_path / "m"), "--platforms", "cpu"]) == 2
    assert "blocks.1.mlp.fc2.weight" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_model_without_a_head_exports_its_pooled_feature_and_pool_none_is_refused(tmp_path, capsys):
    headless = TINY.replace(num_classes=0, pool="map")
    path = tmp_path / "headless.safetensors"
    save_weights(path, headless, random_weights(headless, seed=0))
    assert main(["export", str(path), "--to", "stablehlo", str(tmp_path / "h.jax"), "--platforms", "cpu"]) == 0
    assert f"out: float32[batch,{headless.width}]" in capsys.readouterr().out
    tokens = TINY.replace(num_classes=0, pool="none")
    path = tmp_path / "tokens.safetensors"
    save_weights(path, tokens, random_weights(tokens, seed=0))
    assert main(["export", str(path), "--to", "onnx", str(tmp_path / "t.onnx")]) == 2
    assert (f"{path} is a pool='none' model: it returns every token, not logits or a pooled feature, so there is no "
            "output to export and check; `vit features` gives its tokens") in capsys.readouterr().err
    assert not (tmp_path / "t.onnx").exists()
