"""The models of timm's architecture features (parity_tests.matrix.FEATURE_CONFIGS) downstream of the model: `vit
predict`, `vit eval`'s refusal, `vit attention`, `vit embeddings`, `vit summary` and `vit train --init-from` on
weights files written by vit_spec.save_weights, and the clear refusals where a model has no logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from parity_tests.matrix import CONFIGS, FEATURE_CONFIGS
from vit_cli.main import main
from vit_figures import attention
from vit_spec import load_weights, random_weights, save_weights

pytestmark = pytest.mark.xdist_group("feature_models_downstream")

WITH_HEAD = [n for n in FEATURE_CONFIGS if CONFIGS[n][0].num_classes]
NO_POOL = "tokens_out_sincos_registers"


def weights_file(tmp_path: Path, name: str, **changes) -> Path:
    config = CONFIGS[name][0].replace(**changes)
    path = tmp_path / f"{name}.safetensors"
    save_weights(path, config, random_weights(config, seed=0))
    return path


def image_file(tmp_path: Path) -> str:
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.mark.parametrize("name", WITH_HEAD)
def test_predict_attention_embeddings_and_summary_work_for_every_feature_model_with_a_head(name, tmp_path, capsys):
    config = CONFIGS[name][0]
    weights, image = str(weights_file(tmp_path, name)), image_file(tmp_path)
    assert main(["predict", weights, image, "--top-k", "3"]) == 0
    assert main(["attention", weights, image, "--out", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").is_file() and (tmp_path / "e.png").exists() is False
    assert main(["embeddings", weights, "--out", str(tmp_path / "e.png")]) == 0 and (tmp_path / "e.png").is_file()
    assert main(["summary", weights]) == 0
    out = capsys.readouterr().out
    assert "img.png" in out and f"wrote {tmp_path / 'a.png'}" in out
    title = attention.title_of(config, -1, "jax")
    if config.reg_tokens:
        assert f"{config.reg_tokens} register{'s' * (config.reg_tokens > 1)} left out of the maps" in title
    if config.distilled:
        assert "the distillation token left out of the maps" in title
    if config.pool == "map":
        assert "MAP head's attention" in title


def test_jax_and_torch_draw_the_same_maps_of_a_map_model_and_its_maps_are_its_pooling_attention(tmp_path):
    from jax_vit.inference import attention as jax_attention
    from torch_vit.inference import attention as torch_attention

    config = CONFIGS["siglip_like"][0]
    path = weights_file(tmp_path, "siglip_like")
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    a, b = jax_attention(path, images), torch_attention(path, images)
    assert a.pool.shape == (2, config.heads, 1, config.num_patches)
    ma, mb = attention.maps_of(a, config), attention.maps_of(b, config)
    np.testing.assert_allclose(ma.heads, a.pool[:, :, 0].reshape(2, config.heads, *config.grid))
    for what in ("heads", "head_mean", "rollout"):
        np.testing.assert_allclose(getattr(ma, what), getattr(mb, what), atol=1e-5)


def test_a_map_model_refuses_layer_naming_why(tmp_path, capsys):
    weights = str(weights_file(tmp_path, "siglip_like"))
    assert main(["attention", weights, image_file(tmp_path), "--out", str(tmp_path / "a.png"), "--layer", "0"]) == 2
    assert ("--layer 0: a MAP-pooled model's maps are its pooling attention (the MAP head's, after the last layer), "
            "not one layer's: leave --layer out") in capsys.readouterr().err


def test_predict_refuses_a_model_without_logits_naming_why(tmp_path, capsys):
    image = image_file(tmp_path)
    tokens = weights_file(tmp_path, NO_POOL)
    assert main(["predict", str(tokens), image]) == 2
    assert (f"{tokens} is a pool='none' model: it returns every token, not logits, so there are no classes to "
            "predict; `vit features` gives its tokens") in capsys.readouterr().err
    headless = weights_file(tmp_path, "siglip_like", num_classes=0)
    assert main(["predict", str(headless), image]) == 2
    assert f"{headless} has no classification head (num_classes 0): there are no classes to predict" in capsys.readouterr().err


def test_eval_refuses_a_model_without_logits_before_opening_the_dataset(tmp_path, capsys, monkeypatch):
    def no_dataset(*args, **kwargs):
        raise AssertionError("the dataset was opened")

    monkeypatch.setattr("train.data.open_sources", no_dataset)
    tokens = weights_file(tmp_path, NO_POOL)
    assert main(["eval", str(tokens)]) == 2
    assert f"{tokens} is a pool='none' model: it returns every token, not logits, so there are no classes to score" in capsys.readouterr().err
    headless = weights_file(tmp_path, "dinov2_like", num_classes=0)
    assert main(["eval", str(headless)]) == 2
    assert "has no classification head (num_classes 0): there are no classes to score" in capsys.readouterr().err


def test_export_refuses_a_model_that_returns_every_token(tmp_path, capsys):
    tokens = weights_file(tmp_path, NO_POOL)
    assert main(["export", str(tokens), "--to", "stablehlo", str(tmp_path / "m.jax")]) == 2
    assert "is a pool='none' model: it returns every token, not logits or a pooled feature" in capsys.readouterr().err
    assert not (tmp_path / "m.jax").exists()


# `vit train --init-from` on a feature model's file: a new head, its layer scale and registers trained, undecayed.
# (DeiT III's layout is fine-tuned from a timm file in parity_tests/test_peers_timm_families.py.)
FINETUNE = ["dinov2_like", "siglip_like", "deit_distilled"]


@pytest.mark.parametrize("name", FINETUNE)
def test_fine_tuning_a_feature_model_trains_its_layer_scale_registers_and_a_new_head(name, tmp_path, capsys):
    from tests.test_train_run import options, tiny_dataset
    from train.jax_loop.trainer import train

    source = weights_file(tmp_path, name, num_classes=5)
    result = train(options(tmp_path / "run", init_from=str(source), steps=2), dataset=tiny_dataset())
    assert result.step == 2
    assert "a new head of 10 classes (the file's has 5)" in capsys.readouterr().err
    config, weights = load_weights(tmp_path / "run" / "model.safetensors")
    _, start = load_weights(source)
    expected = CONFIGS[name][0]
    assert config.replace(num_classes=expected.num_classes) == expected.replace(dropout=config.dropout,
                                                                                drop_path=config.drop_path)
    assert weights["head.weight"].shape == (10, config.width)
    moved = [k for k in ("blocks.0.ls1.gamma", "blocks.1.ls2.gamma", "reg_token", "attn_pool.latent", "dist_token")
             if k in start]
    for key in moved:
        assert not np.array_equal(weights[key], start[key]), f"{key} did not train"


def test_layer_scale_and_registers_are_not_decayed_in_either_trainer():
    import torch

    from jax_vit import init_params
    from train.jax_loop.optim import weight_decay_mask
    from train.torch_loop.optim import decays
    from torch_vit import ViT

    config = CONFIGS["dinov2_like"][0]
    mask = weight_decay_mask(init_params(config))
    assert mask["reg_token"] is False and mask["blocks_0"]["ls1"]["gamma"] is False
    assert mask["blocks_0"]["attn"]["qkv"]["kernel"] is True
    named = dict(ViT(config).named_parameters())
    assert not decays("reg_token", named["reg_token"]) and not decays("blocks.0.ls1.gamma", named["blocks.0.ls1.gamma"])
    assert decays("blocks.0.attn.qkv.weight", named["blocks.0.attn.qkv.weight"])
    assert isinstance(named["reg_token"], torch.nn.Parameter)


def test_torch_fine_tunes_a_dinov2_like_file_through_vit_train(tmp_path, capsys, monkeypatch):
    from tests.test_train_run import tiny_dataset

    monkeypatch.setattr("train.data.load", lambda name, data_dir=None: tiny_dataset())
    source = weights_file(tmp_path, "dinov2_like", num_classes=5)
    code = main(["train", "--framework", "torch", "--steps", "1", "--batch-size", "32", "--validation", "0",
                 "--no-progress", "--workdir", str(tmp_path / "run"), "--init-from", str(source)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "[CLS] token, 2 registers, layer scale" in err and "a new head of 10 classes (the file's has 5)" in err
    config, weights = load_weights(tmp_path / "run" / "model.safetensors")
    assert config.reg_tokens == 2 and config.layer_scale_init == 1e-5 and weights["head.weight"].shape == (10, 64)


@pytest.mark.parametrize("name", ["siglip_like", "deit_distilled", "dinov2_like"])
def test_parity_compares_the_map_heads_attention_and_passes(name, tmp_path, capsys):
    weights = weights_file(tmp_path, name)
    assert main(["parity", str(weights)]) == 0
    out = capsys.readouterr().out
    assert ("attn_pool" in out) == (name == "siglip_like")


@pytest.mark.parametrize("name", ["siglip_like", "deit_distilled", "dinov2_like"])
def test_eval_scores_feature_models_alike_in_both_twins(name, tmp_path):
    from tests.test_train_run import tiny_dataset
    from train import evaluation

    weights = weights_file(tmp_path, name)
    split = tiny_dataset(n_train=1, n_test=16).test
    jax_logits, torch_logits = (evaluation.logits(f, weights, split, batch_size=8) for f in ("jax", "torch"))
    assert jax_logits.shape == torch_logits.shape == (16, 10)
    np.testing.assert_allclose(jax_logits, torch_logits, atol=1e-4)
