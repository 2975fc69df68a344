"""`vit features WEIGHTS IMAGE... --out FILE.npz`: prefix tokens, patch tokens and the pooled feature per image,
from either twin; the overwrite rule, the numeric flags, workdirs, unreadable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from parity_tests.matrix import CONFIGS
from vit_cli.main import main
from vit_spec import ViTConfig, random_weights, save_weights

TINY = dict(image_size=32, patch_size=4, num_classes=10, width=32, depth=2, heads=4, mlp_dim=64)


def weights_file(tmp_path: Path, config: ViTConfig, name: str = "model.safetensors") -> Path:
    path = tmp_path / name
    save_weights(path, config, random_weights(config, seed=0))
    return path


def image_files(tmp_path: Path, count: int = 2) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_a_dinov2_like_model_gives_its_cls_and_registers_apart_from_the_patches(tmp_path, capsys):
    config = CONFIGS["dinov2_like"][0]
    weights, files, out = weights_file(tmp_path, config), image_files(tmp_path, 3), tmp_path / "f" / "feats.npz"
    assert main(["features", str(weights), *files, "--out", str(out)]) == 0
    data = np.load(out)
    assert set(data.files) == {"prefix_tokens", "patch_tokens", "pooled", "files", "prefix_names"}
    assert data["prefix_tokens"].shape == (3, 3, config.width)
    assert data["patch_tokens"].shape == (3, config.num_patches, config.width)
    assert data["pooled"].shape == (3, config.width) and data["pooled"].dtype == np.float32
    assert list(data["files"]) == files and list(data["prefix_names"]) == ["cls", "reg0", "reg1"]
    # pool="cls" with the final token norm: the pooled feature is the [CLS] token itself.
    np.testing.assert_array_equal(data["pooled"], data["prefix_tokens"][:, 0])
    printed = capsys.readouterr().out
    assert "prefix_tokens (3, 3, 64): cls, reg0, reg1" in printed and f"wrote {out}" in printed


@pytest.mark.parametrize("name", ["tutorial", "siglip_like", "deit_distilled", "fc_norm_mean"])
def test_jax_and_torch_write_the_same_features(tmp_path, name):
    config = CONFIGS[name][0]
    weights, files = weights_file(tmp_path, config), image_files(tmp_path)
    for framework in ("jax", "torch"):
        assert main(["features", str(weights), *files, "--out", str(tmp_path / f"{framework}.npz"),
                     "--framework", framework, "--batch-size", "1"]) == 0
    a, b = np.load(tmp_path / "jax.npz"), np.load(tmp_path / "torch.npz")
    assert a["prefix_tokens"].shape == (2, config.num_prefix_tokens, config.width)
    for key in ("prefix_tokens", "patch_tokens", "pooled"):
        if a[key].size:
            scale = max(float(np.abs(b[key]).max()), 1e-30)
            assert float(np.abs(a[key] - b[key]).max()) / scale <= 1e-5, key


def test_a_model_without_a_head_gives_features_and_pool_none_leaves_pooled_out(tmp_path, capsys):
    headless = ViTConfig(**{**TINY, "num_classes": 0}, pool="map")
    assert main(["features", str(weights_file(tmp_path, headless)), *image_files(tmp_path, 1),
                 "--out", str(tmp_path / "a.npz")]) == 0
    assert np.load(tmp_path / "a.npz")["pooled"].shape == (1, 32)
    tokens = CONFIGS["tokens_out_sincos_registers"][0]
    assert main(["features", str(weights_file(tmp_path, tokens, "t.safetensors")), *image_files(tmp_path, 1),
                 "--out", str(tmp_path / "t.npz")]) == 0
    data = np.load(tmp_path / "t.npz")
    assert "pooled" not in data.files and data["prefix_tokens"].shape == (1, 3, 64)
    assert "pooled: left out, a pool='none' model pools nothing" in capsys.readouterr().out


def test_an_existing_out_is_replaced_only_with_overwrite_before_any_work(tmp_path, capsys):
    weights, files, out = weights_file(tmp_path, ViTConfig(**TINY)), image_files(tmp_path, 1), tmp_path / "f.npz"
    out.write_bytes(b"old")
    assert main(["features", str(weights), *files, "--out", str(out)]) == 2
    assert f"--out {out} exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert out.read_bytes() == b"old"
    assert main(["features", str(weights), *files, "--out", str(out), "--overwrite"]) == 0
    assert np.load(out)["patch_tokens"].shape == (1, 64, 32)


def test_the_batch_size_must_be_positive(tmp_path, capsys):
    weights, files = weights_file(tmp_path, ViTConfig(**TINY)), image_files(tmp_path, 1)
    with pytest.raises(SystemExit) as e:
        main(["features", str(weights), *files, "--out", str(tmp_path / "f.npz"), "--batch-size", "0"])
    assert e.value.code == 2
    assert "argument --batch-size: must be at least 1, got 0" in capsys.readouterr().err


def test_a_finished_runs_workdir_stands_for_its_weights_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    weights_file(run, ViTConfig(**TINY))
    assert main(["features", str(run), *image_files(tmp_path, 1), "--out", str(tmp_path / "f.npz")]) == 0


def test_unreadable_files_are_named_the_others_written_exit_1(tmp_path, capsys):
    weights, good = weights_file(tmp_path, ViTConfig(**TINY)), image_files(tmp_path, 1)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    out = tmp_path / "f.npz"
    assert main(["features", str(weights), str(bad), *good, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "vit features: skipped" in err and "bad.png" in err
    assert list(np.load(out)["files"]) == good
    none = tmp_path / "none.npz"
    assert main(["features", str(weights), str(bad), "--out", str(none)]) == 1
    err = capsys.readouterr().err
    assert "bad.png" in err and "none of the image files could be read: nothing written" in err
    assert not none.exists()
