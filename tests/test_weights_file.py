"""The weight file: one .safetensors, timm names, config in the metadata; atomic writes; clear errors."""

import json
import os

import numpy as np
import pytest

from vit_spec import ViTConfig, WeightsError, load_weights, param_shapes, random_weights, read_metadata, save_weights

CONFIG = ViTConfig(image_size=16, patch_size=4, width=32, depth=2, heads=4, mlp_dim=64, num_classes=5)


def test_save_then_load_is_exact(tmp_path):
    weights = random_weights(CONFIG, seed=3)
    save_weights(tmp_path / "w.safetensors", CONFIG, weights)
    config, loaded = load_weights(tmp_path / "w.safetensors")
    assert config == CONFIG
    assert list(loaded) == list(weights) or set(loaded) == set(weights)
    for name in weights:
        assert loaded[name].dtype == weights[name].dtype
        assert np.array_equal(loaded[name], weights[name]), name


def test_the_file_holds_timm_names_and_the_config_as_json(tmp_path):
    save_weights(tmp_path / "w.safetensors", CONFIG, random_weights(CONFIG))
    meta = read_metadata(tmp_path / "w.safetensors")
    assert ViTConfig.from_dict(json.loads(meta["vit_config"])) == CONFIG
    from safetensors import safe_open

    with safe_open(str(tmp_path / "w.safetensors"), framework="np") as f:
        assert set(f.keys()) == set(param_shapes(CONFIG))
        assert "blocks.1.attn.qkv.weight" in f.keys()


def test_a_file_from_another_config_names_the_parameter_and_both_shapes(tmp_path):
    other = CONFIG.replace(mlp_dim=48)
    save_weights(tmp_path / "w.safetensors", other, random_weights(other))
    # Rewrite the metadata to claim CONFIG: the shapes no longer fit it.
    from safetensors.numpy import load_file, save_file

    arrays = load_file(str(tmp_path / "w.safetensors"))
    save_file(arrays, str(tmp_path / "lying.safetensors"), metadata={"vit_config": CONFIG.to_json()})
    with pytest.raises(WeightsError, match=r"'blocks.0.mlp.fc1.weight' has shape \(48, 32\), but the config expects \(64, 32\)"):
        load_weights(tmp_path / "lying.safetensors")


def test_missing_and_unexpected_names_are_listed(tmp_path):
    weights = random_weights(CONFIG)
    weights["head.extra"] = weights.pop("head.bias")
    with pytest.raises(WeightsError, match=r"missing 'head.bias'; unexpected 'head.extra'"):
        save_weights(tmp_path / "w.safetensors", CONFIG, weights)
    assert not (tmp_path / "w.safetensors").exists()


def test_a_truncated_file_is_reported_as_such(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, CONFIG, random_weights(CONFIG))
    data = path.read_bytes()
    for cut in (len(data) // 2, 7, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(WeightsError, match="truncated"):
            load_weights(path)


def test_a_file_without_our_config_points_to_vit_convert(tmp_path):
    from safetensors.numpy import save_file

    save_file({"conv1.weight": np.zeros((8, 3, 7, 7), np.float32)}, str(tmp_path / "resnet.safetensors"))
    with pytest.raises(WeightsError, match="no ViT config.*vit convert"):
        load_weights(tmp_path / "resnet.safetensors")


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights file at .*nothing.safetensors"):
        load_weights(tmp_path / "nothing.safetensors")


def test_an_interrupted_save_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_weights(path, CONFIG, random_weights(CONFIG, seed=1))
    before = path.read_bytes()

    import safetensors.numpy

    real_save = safetensors.numpy.save_file

    def save_then_die(arrays, filename, metadata=None):
        real_save(arrays, filename, metadata=metadata)
        with open(filename, "r+b") as f:  # half-written, then the process "dies"
            f.truncate(os.path.getsize(filename) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_weights(path, CONFIG, random_weights(CONFIG, seed=2))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.safetensors"]


def test_integer_weights_are_refused(tmp_path):
    weights = random_weights(CONFIG)
    weights["head.bias"] = weights["head.bias"].astype(np.int32)
    with pytest.raises(WeightsError, match="'head.bias' has dtype int32"):
        save_weights(tmp_path / "w.safetensors", CONFIG, weights)


def test_saved_files_get_the_ordinary_mode_not_owner_only(tmp_path):
    umask = os.umask(0o022)
    try:
        save_weights(tmp_path / "w.safetensors", CONFIG, random_weights(CONFIG))
    finally:
        os.umask(umask)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644
