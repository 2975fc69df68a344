"""`vit train --init-from FILE` with --dropout / --drop-path: an explicit flag, zero included, sets the rate the
model trains with, and what a run reports (the start-up line, config.json) is what trains (issue 18, item 3).

Without a flag a fine-tune trains as before: a rate the recipe sets (the tutorial's dropout 0.1, the default
recipe's length-scaled drop_path) replaces the checkpoint's; a rate it does not set stays the checkpoint's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.test_train_run import options, tiny_dataset
from train import recipes
from train.finetune import finetune_weights
from train.recipes import RECIPES, regularisation, resolve
from vit_spec import ViTConfig, load_weights, random_weights, save_weights

pytestmark = pytest.mark.xdist_group("finetune_overrides")

IMAGES = (32, 32, 3)
# A checkpoint trained with its own dropout and stochastic depth (as a `--recipe tutorial --dropout 0.3
# --drop-path 0.2` run saves it): rates no recipe has, so that the tests see whose rate the model gets.
SOURCE = ViTConfig.from_variant("mu/8", num_classes=10, image_size=32, dropout=0.3, drop_path=0.2)
ZEROS = {"dropout": 0.0, "drop_path": 0.0}


@pytest.fixture(scope="module")
def source_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("source") / "source.safetensors"
    save_weights(path, SOURCE, random_weights(SOURCE, seed=3))
    return path


def _fine_tune(path, recipe: str, epochs: float, flags: dict | None) -> tuple[ViTConfig, recipes.Recipe]:
    """(the config that trains, the recipe resolved for the run), as both trainers build them."""
    resolved = resolve(RECIPES[recipe], epochs, flags)
    config, _, _ = finetune_weights(str(path), IMAGES, 10, resolved.model_overrides)
    return config, resolved


def _shown(line: str) -> dict[str, float]:
    """The rates a start-up line (recipes.describe) shows."""
    shown = dict(part.rsplit(" ", 1) for part in line.rsplit(": ", 1)[1].split(", "))
    return {"dropout": float(shown["dropout"]), "drop_path": float(shown["drop_path"])}


def _reported(recipe: recipes.Recipe, config: ViTConfig | None, epochs: float) -> dict:
    """The rates a run of `config` reports: config.json's "regularisation" (recipes.regularisation) and its start-up
    line (recipes.describe), of the recipe as the trainers hand it on (recipes.as_trained)."""
    if config is not None:
        recipe = recipes.as_trained(recipe, config)
    parts = regularisation(recipe)
    reported = {"dropout": parts["dropout"], "drop_path": parts["drop_path"]}
    assert _shown(recipes.describe(recipe, epochs)) == reported
    return reported


# Explicit flags win, zero included.

@pytest.mark.parametrize("recipe, epochs", [("tutorial", 50), ("default", 5), ("default", 200)])
def test_explicit_zero_flags_switch_off_the_checkpoints_dropout_and_drop_path(source_file, recipe, epochs):
    resolved = resolve(RECIPES[recipe], epochs, ZEROS)
    assert dict(resolved.model_overrides) == ZEROS  # the zeros reach the checkpoint's config
    config, _, _ = finetune_weights(str(source_file), IMAGES, 10, resolved.model_overrides)
    assert (config.dropout, config.drop_path) == (0.0, 0.0)
    assert _reported(resolved, config, epochs) == ZEROS


@pytest.mark.parametrize("recipe, epochs", [("tutorial", 50), ("default", 5), ("default", 200)])
def test_explicit_nonzero_flags_replace_the_checkpoints_rates_as_before(source_file, recipe, epochs):
    config, resolved = _fine_tune(source_file, recipe, epochs, {"dropout": 0.05, "drop_path": 0.15})
    assert (config.dropout, config.drop_path) == (0.05, 0.15)
    assert _reported(resolved, config, epochs) == {"dropout": 0.05, "drop_path": 0.15}


def test_an_explicit_zero_from_scratch_is_zero_too():
    resolved = resolve(RECIPES["default"], 200, ZEROS)
    assert dict(resolved.model_overrides) == ZEROS
    assert _reported(resolved, None, 200) == ZEROS


# Without flags: the model trains as before; the report now says what it trains with.

def test_without_flags_the_recipes_rates_replace_the_checkpoints_and_the_rest_stay_the_checkpoints(source_file):
    # tutorial: its dropout 0.1 replaces the checkpoint's 0.3; it sets no drop_path, so the checkpoint's 0.2 stays.
    config, resolved = _fine_tune(source_file, "tutorial", 50, None)
    assert (config.dropout, config.drop_path) == (0.1, 0.2)
    assert _reported(resolved, config, 50) == {"dropout": 0.1, "drop_path": 0.2}  # was reported as drop_path 0
    # default: its length-scaled drop_path (0 up to 10 epochs, 0.1 from 100) replaces the checkpoint's; it sets no
    # dropout, so the checkpoint's 0.3 stays.
    for epochs, drop_path in ((5, 0.0), (200, 0.1)):
        config, resolved = _fine_tune(source_file, "default", epochs, None)
        assert (config.dropout, config.drop_path) == (0.3, drop_path), epochs
        assert _reported(resolved, config, epochs) == {"dropout": 0.3, "drop_path": drop_path}  # was reported as dropout 0


def test_without_flags_a_run_from_scratch_reports_what_it_reported_before():
    for recipe, epochs in (("tutorial", 50), ("default", 5), ("default", 200)):
        resolved = resolve(RECIPES[recipe], epochs)
        config = ViTConfig.from_variant("mu/8", num_classes=10, image_size=32, **dict(resolved.model_overrides))
        after = recipes.as_trained(resolved, config)
        assert regularisation(after) == regularisation(resolved), recipe
        assert recipes.describe(after, epochs) == recipes.describe(resolved, epochs), recipe
        assert after.augment.mean == config.image_mean and after.augment.std == config.image_std


# A Hugging Face checkpoint: hidden_dropout_prob is `dropout`, attention_probs_dropout_prob `attention_dropout`.

@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.ViTConfig(
        image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        num_labels=5, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    )
    path = tmp_path_factory.mktemp("hf") / "vit"
    transformers.ViTForImageClassification(hf_config).save_pretrained(path)
    return path


def test_an_explicit_zero_switches_off_a_hugging_face_configs_hidden_dropout(hf_dir):
    for recipe, epochs in (("default", 5), ("tutorial", 50)):
        config, resolved = _fine_tune(hf_dir, recipe, epochs, ZEROS)
        assert (config.dropout, config.drop_path) == (0.0, 0.0), recipe
        # No flag sets attention dropout: the checkpoint's stays, and the start-up line says so.
        assert config.attention_dropout == 0.1
        assert _reported(resolved, config, epochs) == ZEROS
        assert "attention_dropout 0.1" in recipes.describe(recipes.as_trained(resolved, config), epochs)


def test_without_flags_a_hugging_face_configs_hidden_dropout_stays_under_default_and_is_reported(hf_dir):
    config, resolved = _fine_tune(hf_dir, "default", 5, None)
    assert (config.dropout, config.attention_dropout, config.drop_path) == (0.1, 0.1, 0.0)
    assert _reported(resolved, config, 5) == {"dropout": 0.1, "drop_path": 0.0}


# Through the trainers.

def _run_reports(workdir: Path, result, err: str) -> dict:
    meta = json.loads((workdir / "config.json").read_text())
    saved, _ = load_weights(workdir / "model.safetensors")
    shown = _shown(next(line for line in err.splitlines() if line.startswith("recipe ")))
    return {
        "trained": (result.config.dropout, result.config.drop_path),
        "saved": (saved.dropout, saved.drop_path),
        "model_config": (meta["model_config"]["dropout"], meta["model_config"]["drop_path"]),
        "regularisation": (meta["regularisation"]["dropout"], meta["regularisation"]["drop_path"]),
        "line": (shown["dropout"], shown["drop_path"]),
    }


ALL_ZERO = {"trained": (0.0, 0.0), "saved": (0.0, 0.0), "model_config": (0.0, 0.0), "regularisation": (0.0, 0.0),
            "line": (0.0, 0.0)}


def _train(framework: str, workdir: Path, init_from: Path, flags: dict | None):
    """A 1-step `vit train --recipe default --init-from FILE` run (with `flags`) of either trainer."""
    if framework == "jax":
        from train.jax_loop.trainer import train
    else:
        from train.torch_loop.trainer import train
    run = options(workdir, recipe="default", init_from=str(init_from), steps=1, checkpoint_every=1, framework=framework)
    return train(dataclasses.replace(run, regularisation=flags), dataset=tiny_dataset())


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_a_trainer_fine_tunes_with_explicit_zero_rates_and_reports_them(framework, source_file, tmp_path, capsys):
    result = _train(framework, tmp_path / "run", source_file, ZEROS)
    assert _run_reports(tmp_path / "run", result, capsys.readouterr().err) == ALL_ZERO


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_without_flags_a_trainer_keeps_the_checkpoints_dropout_and_reports_it(framework, source_file, tmp_path, capsys):
    result = _train(framework, tmp_path / "run", source_file, None)
    # A 1-step run: the default recipe's drop_path is 0 (and replaces the checkpoint's 0.2); it sets no dropout.
    assert _run_reports(tmp_path / "run", result, capsys.readouterr().err) == {
        "trained": (0.3, 0.0), "saved": (0.3, 0.0), "model_config": (0.3, 0.0), "regularisation": (0.3, 0.0),
        "line": (0.3, 0.0),
    }
