"""`vit train --init-from FILE`: fine-tuning starts from a checkpoint in any supported format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_train_run import options, tiny_dataset
from train.jax_loop.trainer import finetune_start
from train.jax_loop.trainer import train
from vit_cli.main import main
from vit_spec import ViTConfig, load_weights, random_weights, save_weights
from vit_spec.formats import load_checkpoint

pytestmark = pytest.mark.xdist_group("train_finetune")

GOOGLE_GAP = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "google_vit" / "vit_gap.npz"
SOURCE = ViTConfig(image_size=16, patch_size=4, width=32, depth=2, heads=4, mlp_dim=64, num_classes=5,
                   image_mean=(0.4, 0.5, 0.6), image_std=(0.2, 0.25, 0.3), gelu="tanh")


@pytest.fixture
def source_file(tmp_path) -> Path:
    path = tmp_path / "source.safetensors"
    save_weights(path, SOURCE, random_weights(SOURCE, seed=7))
    return path


def test_start_keeps_the_checkpoint_resamples_positions_and_replaces_the_head(source_file):
    config, initial_params = finetune_start(str(source_file), (32, 32, 3), num_classes=10, overrides={"drop_path": 0.1})
    assert (config.width, config.depth, config.heads, config.gelu) == (32, 2, 4, "tanh")
    assert (config.image_size, config.num_classes, config.drop_path) == (32, 10, 0.1)
    assert config.image_mean == SOURCE.image_mean and config.image_std == SOURCE.image_std

    import jax

    import jax_vit

    start = jax_vit.state_dict_from_params(config, initial_params(config, jax.random.key(0)))
    _, resampled = load_checkpoint(source_file, image_size=32, num_classes=10)
    assert start["pos_embed"].shape == (1, 65, 32)
    for name, value in resampled.items():
        assert np.array_equal(start[name], value), name
    assert start["head.weight"].shape == (10, 32) and not start["head.weight"].any()


def test_a_run_fine_tunes_from_the_file_and_normalises_as_it_did(source_file, tmp_path, capsys):
    result = train(options(tmp_path / "run", init_from=str(source_file), steps=3), dataset=tiny_dataset())
    # One line says what was loaded, and how it was adapted.
    assert (f"init from {source_file} (vit): patch 4, width 32, depth 2, heads 4, mlp 64, [CLS] token; position "
            "table resampled from 16 to 32 px (4x4 -> 8x8 patches); a new head of 10 classes (the file's has 5)\n"
            ) in capsys.readouterr().err
    config, weights = load_weights(tmp_path / "run" / "model.safetensors")
    assert (config.width, config.image_size, config.num_classes, config.gelu) == (32, 32, 10, "tanh")
    assert config.image_mean == SOURCE.image_mean
    # It trained: the blocks moved away from the checkpoint's (resampled) weights.
    _, start = load_checkpoint(source_file, image_size=32, num_classes=10)
    assert not np.array_equal(weights["blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])
    assert result.step == 3


@pytest.mark.skipif(not GOOGLE_GAP.is_file(), reason=f"Google's test checkpoint is not at {GOOGLE_GAP}")
def test_google_npz_start_keeps_tanh_gelu_and_minus_one_to_one_inputs():
    config, _ = finetune_start(str(GOOGLE_GAP), (24, 24, 3), num_classes=10)
    assert (config.gelu, config.pool, config.image_mean, config.image_std) == ("tanh", "mean", (0.5,) * 3, (0.5,) * 3)
    assert config.num_classes == 10


def test_a_checkpoint_for_other_channels_is_refused(tmp_path):
    gray = SOURCE.replace(channels=1, image_mean=(0.5,), image_std=(0.5,))
    save_weights(tmp_path / "gray.safetensors", gray, random_weights(gray))
    with pytest.raises(ValueError, match="1-channel images, but the dataset's have 3 channels"):
        finetune_start(str(tmp_path / "gray.safetensors"), (32, 32, 3), num_classes=10)


def _vit_train(monkeypatch, capsys, tmp_path, *argv: str) -> tuple[int, str]:
    """`vit train ARGV` (PyTorch, one step) on tiny data in place of CIFAR-10: (exit status, stderr)."""
    monkeypatch.setattr("train.data.load", lambda name, data_dir=None: tiny_dataset())
    code = main(["train", "--framework", "torch", "--steps", "1", "--batch-size", "32", "--validation", "0",
                 "--no-progress", "--workdir", str(tmp_path / f"run{len(list(tmp_path.iterdir()))}"), *argv])
    return code, capsys.readouterr().err


def test_init_from_messages_name_vit_trains_flags_and_the_run_says_what_it_loaded(monkeypatch, capsys, tmp_path):
    """A timm state dict records no heads, and a timm name's image size may not be the file's: vit train asks for
    --init-variant (it has no --variant, --heads or --source-image-size), and then says what it loaded."""
    timm = pytest.importorskip("timm")
    import torch

    small = tmp_path / "timm_s16_64.safetensors"  # depth 2: no variant describes it
    from safetensors.torch import save_file

    save_file(timm.create_model("vit_small_patch16_224", pretrained=False, img_size=64, depth=2).state_dict(), str(small))
    code, err = _vit_train(monkeypatch, capsys, tmp_path, "--init-from", str(small))
    assert code == 2
    assert "does not record the number of attention heads (width 384): give --init-variant (e.g. S/16" in err, err
    assert (f"convert it first, `vit convert {small} converted.safetensors --heads N` (vit train has no --heads), "
            "then give --init-from converted.safetensors") in err, err
    assert "give --variant" not in err and " or --heads" not in err
    code, err = _vit_train(monkeypatch, capsys, tmp_path, "--init-from", str(small), "--init-variant", "S/16")
    assert code == 2 and "does not match --init-variant S/16: the checkpoint has depth=2" in err, err

    tiny = tmp_path / "timm_ti16_64.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=7).state_dict(), tiny)
    code, err = _vit_train(monkeypatch, capsys, tmp_path, "--init-from", str(tiny), "--init-variant", "vit_tiny_patch16_224")
    assert code == 2
    assert ("17 entries are 1 [CLS] + a 4x4 grid of 16-px patches, so the file was saved at 64 px: pass --init-variant "
            "vit_tiny_patch16_64 (vit_tiny_patch16_224 at 64 px)") in err, err
    code, err = _vit_train(monkeypatch, capsys, tmp_path, "--init-from", str(tiny), "--init-variant", "vit_tiny_patch16_64")
    assert code == 0, err
    assert (f"init from {tiny} (timm): patch 16, width 192, depth 12, heads 3, mlp 768, [CLS] token; position table "
            "resampled from 64 to 32 px (4x4 -> 2x2 patches); a new head of 10 classes (the file's has 7); from "
            "--init-variant vit_tiny_patch16_64: heads 3, image size 64, layer norm eps 1e-06, gelu exact, image mean "
            "(0.5, 0.5, 0.5), image std (0.5, 0.5, 0.5)\n") in err, err


def test_a_resume_with_another_optimizer_layer_decay_or_freeze_is_refused_naming_the_flag(source_file, tmp_path):
    """--optimizer, --weight-decay and --layer-decay change the trajectory, as --lr does, and --freeze what the
    optimizer state covers: config.json records them, and a resume that changes one is refused naming its flag."""
    import re

    from train.run import CheckpointMismatchError
    from train.torch_loop.trainer import train as torch_train

    workdir = tmp_path / "run"
    first = dict(recipe="finetune", init_from=str(source_file), framework="torch", layer_decay=0.75)
    torch_train(options(workdir, steps=2, checkpoint_every=2, **first), dataset=tiny_dataset())
    recorded = json.loads((workdir / "config.json").read_text())
    assert (recorded["recipe"]["optimizer"], recorded["recipe"]["layer_decay"], recorded["freeze"]) == ("sgd", 0.75, None)
    for change, message in (
        ({"layer_decay": 0.65}, "another layer_decay (layer_decay 0.75 there, 0.65 here): resume with --layer-decay 0.75"),
        ({"layer_decay": None}, "layer_decay 0.75 there, None here): resume with --layer-decay 0.75"),
        ({"optimizer": "adamw"}, "another optimizer (optimizer sgd there, adamw here): resume with --optimizer sgd"),
        ({"weight_decay": 0.05}, "resume with --weight-decay 0.0"),
        ({"freeze": "backbone"}, "a run with no --freeze, resumed here with --freeze backbone"),
    ):
        with pytest.raises(CheckpointMismatchError, match=re.escape(message)):
            torch_train(options(workdir, steps=4, **{**first, **change}), dataset=tiny_dataset())
    assert torch_train(options(workdir, steps=4, **first), dataset=tiny_dataset()).step == 4  # the same flags resume


def test_the_adamw_alternative_fine_tunes_with_layer_decay(monkeypatch, capsys, tmp_path, source_file):
    """`vit train --init-from FILE --recipe finetune` + recipes.FINETUNE_ADAMW_FLAGS, end to end (PyTorch, one step)."""
    from train.recipes import FINETUNE_ADAMW_FLAGS

    code, err = _vit_train(monkeypatch, capsys, tmp_path, "--init-from", str(source_file), "--recipe", "finetune",
                           *FINETUNE_ADAMW_FLAGS)
    assert code == 0, err
    assert "recipe finetune: lr 0.0005, adamw (weight decay 0.05, layer decay 0.65), warmup_cosine" in err, err
    [workdir] = [d for d in tmp_path.iterdir() if d.name.startswith("run")]
    recorded = json.loads((workdir / "config.json").read_text())
    assert (recorded["recipe"]["optimizer"], recorded["recipe"]["layer_decay"]) == ("adamw", 0.65)
    assert recorded["model_config"]["drop_path"] == 0.1
