"""Recipes as runs resolve them, the validation split, and datasets other than CIFAR-10."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_train_run import cli_options, options, tiny_dataset
from train import data as data_lib
from train.data import Dataset, DatasetError, Split
from train.jax_loop.checkpoint import CheckpointMismatchError
from train.recipes import (
    RECIPES, TUTORIAL_STD, RecipeError, length_scaled_regularisation, regularisation, regularisation_strength, resolve,
)
from train.jax_loop.trainer import train
from vit_cli.main import main
from vit_spec import ViTConfig, load_weights

# One worker runs the module: it trains several tiny runs.
pytestmark = pytest.mark.xdist_group("train_recipes")

DEIT = {"crop_padding": 4, "randaugment_ops": 2, "randaugment_magnitude": 9.0, "mixup_alpha": 0.8, "cutmix_alpha": 1.0,
        "label_smoothing": 0.1, "drop_path": 0.1, "dropout": 0.0}


# The rule: the default recipe's regularisation is a function of the run's length.

def test_a_short_default_run_has_no_strong_regularisation():
    for epochs in (1, 2, 5, 10):
        parts = regularisation(resolve(RECIPES["default"], epochs))
        assert parts == {**DEIT, "crop_padding": 0, "randaugment_ops": 0, "randaugment_magnitude": 0.0, "mixup_alpha": 0.0,
                         "cutmix_alpha": 0.0, "drop_path": 0.0}, epochs


def test_a_long_default_run_gets_deits_regularisation():
    for epochs in (100, 200, 300):
        assert regularisation(resolve(RECIPES["default"], epochs)) == DEIT, epochs


def test_between_short_and_long_the_strength_grows_with_log_epochs():
    assert regularisation_strength(10) == 0.0 and regularisation_strength(100) == 1.0
    assert regularisation_strength(50) == pytest.approx(np.log(5) / np.log(10))
    strengths = [regularisation_strength(e) for e in (11, 20, 32, 50, 70, 99)]
    assert strengths == sorted(strengths) and 0 < strengths[0] and strengths[-1] < 1
    at_50 = regularisation(resolve(RECIPES["default"], 50))
    s = regularisation_strength(50)
    assert at_50["randaugment_ops"] == 2 and at_50["randaugment_magnitude"] == pytest.approx(9 * s, abs=1e-4)
    assert at_50["mixup_alpha"] == pytest.approx(0.8 * s, abs=1e-4) and at_50["drop_path"] == pytest.approx(0.1 * s, abs=1e-4)


def test_an_explicit_flag_overrides_its_part_only():
    got = regularisation(resolve(RECIPES["default"], 2, {"mixup_alpha": 0.2, "drop_path": 0.05}))
    assert got == {**length_scaled_regularisation(2), "mixup_alpha": 0.2, "drop_path": 0.05}
    recipe = resolve(RECIPES["default"], 200, {"randaugment_ops": 0})
    assert recipe.augment.randaugment_ops == 0 and recipe.augment.cutmix_alpha == 1.0


def test_bad_regularisation_is_refused_naming_the_flag():
    for parts, flag in (({"mixup_alpha": -1.0}, "--mixup"), ({"label_smoothing": 1.0}, "--label-smoothing"),
                        ({"randaugment_magnitude": 30.0}, "--randaugment-magnitude"), ({"drop_path": 1.5}, "--drop-path")):
        with pytest.raises(RecipeError, match=flag):
            resolve(RECIPES["default"], 5, parts)


def test_the_tutorial_recipe_is_the_tutorials():
    recipe = RECIPES["tutorial"]
    assert recipe.augment.std == TUTORIAL_STD == (0.2023, 0.1994, 0.2010)
    assert recipe.augment.mean == (0.4914, 0.4822, 0.4465)
    assert dict(recipe.model_overrides) == {"dropout": 0.1}
    assert (recipe.optimizer, recipe.lr, recipe.schedule, recipe.step_epochs) == ("adam_l2", 3e-4, "step", 20)
    # Not scaled with the run: the same at every length.
    assert resolve(recipe, 1) == resolve(recipe, 200)


def test_the_finetune_recipe_is_the_vit_papers_transfer_recipe():
    recipe = RECIPES["finetune"]
    assert (recipe.optimizer, recipe.momentum, recipe.weight_decay, recipe.clip_norm) == ("sgd", 0.9, 0.0, 1.0)
    assert (recipe.lr, recipe.batch_size, recipe.epochs, recipe.schedule) == (0.01, 128, 10, "warmup_cosine")
    assert recipe.layer_decay is None and not recipe.length_scaled
    a = recipe.augment
    assert (a.random_resized_crop, a.crop_padding, a.flip) == (True, 0, True)
    assert (a.randaugment_ops, a.mixup_alpha, a.cutmix_alpha, a.label_smoothing) == (0, 0.0, 0.0, 0.0)
    # Dropout and stochastic depth set to 0 on the checkpoint's config, whatever it trained with.
    assert dict(resolve(recipe, 10).model_overrides) == {"drop_path": 0.0, "dropout": 0.0}
    # Its warmup: half an epoch, at most 5% of the run (500 of 10,000 steps, as the paper's CIFAR fine-tuning).
    from train.schedule import warmup_steps

    assert warmup_steps(recipe, 352, 3520) == 176 and warmup_steps(recipe, 352, 1000) == 50


def test_the_finetune_recipes_adamw_alternative_is_one_flag_set_away(monkeypatch, tmp_path):
    """recipes.FINETUNE_ADAMW_FLAGS on `vit train --recipe finetune`: BEiT's and MAE's AdamW with layer decay."""
    from train import run
    from train.recipes import FINETUNE_ADAMW_FLAGS

    got = cli_options(monkeypatch, ["--recipe", "finetune", "--init-from", "x.safetensors", *FINETUNE_ADAMW_FLAGS,
                                    "--workdir", str(tmp_path), "--no-progress"])
    recipe = resolve(run.recipe_of(got), 10, got.regularisation)
    assert (recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.layer_decay) == ("adamw", 5e-4, 0.05, 0.65)
    assert dict(recipe.model_overrides)["drop_path"] == 0.1
    assert recipe.replace(optimizer="sgd", lr=0.01, weight_decay=0.0, layer_decay=None,
                          model_overrides=RECIPES["finetune"].model_overrides) == resolve(RECIPES["finetune"], 10)


def test_bad_optimizer_flags_are_refused_naming_the_flag(monkeypatch, capsys, tmp_path):
    from train.recipes import get_recipe

    with pytest.raises(RecipeError, match="--optimizer"):
        get_recipe("finetune", optimizer="lamb")
    with pytest.raises(RecipeError, match=r"--layer-decay must be in \(0, 1\]"):
        get_recipe("finetune", layer_decay=1.5)
    with pytest.raises(RecipeError, match="--weight-decay"):
        get_recipe("finetune", weight_decay=-0.1)
    for argv, message in ((["--layer-decay", "0"], "argument --layer-decay: must be in (0, 1], got 0"),
                          (["--optimizer", "lamb"], "argument --optimizer: invalid choice: 'lamb'")):
        with pytest.raises(SystemExit):
            main(["train", *argv, "--workdir", str(tmp_path)])
        assert message in capsys.readouterr().err


def test_finetune_without_init_from_trains_from_scratch_with_a_note(tmp_path, capsys):
    from train.torch_loop.trainer import train as torch_train

    torch_train(options(tmp_path / "run", recipe="finetune", steps=2, framework="torch"), dataset=tiny_dataset())
    err = capsys.readouterr().err
    assert "note: --recipe finetune is meant for fine-tuning a checkpoint (--init-from FILE)" in err, err
    assert "recipe finetune: lr 0.01, sgd (momentum 0.9), warmup_cosine" in err, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["recipe"]["optimizer"], config["recipe"]["momentum"], config["recipe"]["layer_decay"]) == ("sgd", 0.9, None)
    assert config["recipe"]["augment"]["random_resized_crop"] is True


def test_a_run_prints_and_records_its_resolved_recipe(tmp_path, capsys):
    result = train(options(tmp_path / "run", recipe="default", regularisation=None), dataset=tiny_dataset())
    assert "regularisation scaled to" in capsys.readouterr().err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["regularisation"]["mixup_alpha"] == 0.0 and config["regularisation"]["strength"] == 0.0
    assert config["recipe"]["augment"]["randaugment_ops"] == 0
    assert result.config.drop_path == 0.0


# The validation split.

def test_the_validation_split_is_fixed_disjoint_and_complete():
    train_idx, held_out = data_lib.validation_indices(50_000, 5_000)
    assert len(held_out) == 5_000 and len(train_idx) == 45_000
    assert np.array_equal(np.union1d(train_idx, held_out), np.arange(50_000))
    again = data_lib.validation_indices(50_000, 5_000)
    assert np.array_equal(again[1], held_out)  # no seed: every run holds out the same examples
    record = data_lib.validation_record(50_000, 5_000)
    rebuilt = eval(record["rule"], {"np": np})  # the recorded rule rebuilds the examples
    assert np.array_equal(rebuilt, held_out) and record["examples"] == 5_000 and record["of"] == 50_000


def test_bad_validation_sizes_are_refused():
    with pytest.raises(DatasetError, match="leaves nothing to train on"):
        data_lib.validation_indices(100, 100)
    with pytest.raises(DatasetError, match="--validation must be"):
        data_lib.validation_indices(100, -1)


def test_held_out_examples_are_not_trained_on():
    dataset = tiny_dataset()
    # Make every example recognisable by its first pixel.
    images = dataset.train.images.copy()
    images[:, 0, 0, 0] = np.arange(len(images)) % 256
    dataset = Dataset("tiny", 10, Split(images, dataset.train.labels), dataset.test)
    kept, held_out = data_lib.hold_out(dataset, 64)
    train_idx, val_idx = data_lib.validation_indices(256, 64)
    assert len(kept.train) == 192 and len(held_out) == 64
    assert np.array_equal(kept.train.images[:, 0, 0, 0], train_idx % 256)
    assert np.array_equal(held_out.images[:, 0, 0, 0], val_idx % 256)


def test_evaluations_score_the_validation_split_and_the_test_split_once_at_the_end(tmp_path):
    workdir = tmp_path / "run"
    # 192 training examples, batch 32: 6 steps per epoch; 2 epochs.
    result = train(options(workdir, steps=None, epochs=2, validation=64, eval_every=1, checkpoint_every=6),
                   dataset=tiny_dataset())
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["split"], r["step"]) for r in records if r["kind"] == "eval"]
    assert evals == [("validation", 6), ("validation", 12), ("test", 12)]
    assert result.validation_accuracy is not None and 0 <= result.validation_accuracy <= 1
    config = json.loads((workdir / "config.json").read_text())
    assert config["validation"] == data_lib.validation_record(256, 64)
    assert config["steps_per_epoch"] == 6
    # Resuming with another held-out set would train on other examples: refused.
    with pytest.raises(CheckpointMismatchError, match="validation split"):
        train(options(workdir, steps=None, epochs=3, validation=32), dataset=tiny_dataset())


# Other datasets.

def _dataset(name: str, classes: int, shape: tuple[int, int, int], n_train: int = 128, n_test: int = 32) -> Dataset:
    rng = np.random.default_rng(1)

    def split(n: int) -> Split:
        labels = rng.integers(0, classes, n).astype(np.int32)
        images = (rng.integers(0, 128, (n, *shape)) + (labels * 127 // classes)[:, None, None, None]).astype(np.uint8)
        return Split(images, labels)

    return Dataset(name, classes, split(n_train), split(n_test))


def test_a_hundred_class_dataset_trains_end_to_end(tmp_path):
    result = train(options(tmp_path / "run", recipe="default", model="mu/4", batch_size=16, validation=32),
                   dataset=_dataset("cifar100", 100, (32, 32, 3)))
    assert result.config.num_classes == 100
    config, params = load_weights(tmp_path / "run" / "model.safetensors")
    assert params["head.weight"].shape[0] == 100


def test_a_one_channel_dataset_trains_end_to_end_with_every_augmentation(tmp_path):
    result = train(options(tmp_path / "run", recipe="default", model="mu/4", batch_size=16, validation=32),
                   dataset=_dataset("mnist", 10, (28, 28, 1)))
    assert result.config.channels == 1 and result.config.image_mean == (0.5,) and result.config.image_std == (0.5,)
    assert np.isfinite(result.test_loss)


def test_a_one_channel_config_gets_per_channel_normalisation_defaults():
    config = ViTConfig(image_size=28, patch_size=4, channels=1, num_classes=10, width=32, depth=1, heads=2, mlp_dim=64)
    assert config.image_mean == (0.5,) and config.image_std == (0.5,)
    assert ViTConfig.from_json(config.to_json()) == config
    assert ViTConfig(channels=4).image_mean == (0.5,) * 4


# The command line.

def test_the_cli_passes_architecture_validation_and_regularisation(monkeypatch, tmp_path):
    got = cli_options(monkeypatch, ["--pos-embed", "sincos2d", "--pool", "mean", "--validation", "1000", "--mixup", "0.3",
                                    "--drop-path", "0", "--workdir", str(tmp_path), "--no-progress"])
    assert (got.pos_embed, got.pool, got.validation) == ("sincos2d", "mean", 1000)
    assert got.regularisation == {"mixup_alpha": 0.3, "drop_path": 0.0}


def test_pos_embed_and_pool_reach_the_model(tmp_path):
    result = train(options(tmp_path / "run", pos_embed="sincos2d", pool="mean"), dataset=tiny_dataset())
    assert (result.config.pos_embed, result.config.pool) == ("sincos2d", "mean")


def test_vit_recipes_reads_finished_runs_back_and_lists_missing_ones(tmp_path, capsys):
    from train.recipe_grid import run_name

    root = tmp_path / "recipes"
    done = root / run_name("tutorial", "mu/8", "cifar10", 1, "learned", "cls", 0)
    train(options(done, validation=64), dataset=tiny_dataset())
    code = main(["recipes", "--no-train", "--root", str(root), "--model", "mu/8", "--epochs", "1", "2",
                 "--recipes", "tutorial", "--json", str(tmp_path / "rows.json")])
    out = capsys.readouterr().out
    assert code == 1  # the 2-epoch run is missing
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["epochs"] for r in rows] == [1, 2]
    assert 0 <= rows[0]["test"] <= 1 and 0 <= rows[0]["validation"] <= 1 and "test" not in rows[1]
    assert "| `tutorial` | 1 |" in out and "missing" in out
    assert f"--epochs 2 --seed 0 --workdir {root}/cifar10-tutorial-mu_8-2ep-learned-cls-seed0" in out


def test_vit_recipes_names_each_recipes_own_architecture(capsys, tmp_path):
    code = main(["recipes", "--no-train", "--root", str(tmp_path), "--epochs", "5", "--recipes", "default", "tutorial"])
    out = capsys.readouterr().out
    assert code == 1  # nothing trained
    # default builds the sin-cos model, tutorial the learned one; neither command needs --pos-embed.
    assert f"--epochs 5 --seed 0 --workdir {tmp_path}/cifar10-default-tutorial-5ep-sincos2d-cls-seed0" in out
    assert f"--epochs 5 --seed 0 --workdir {tmp_path}/cifar10-tutorial-tutorial-5ep-learned-cls-seed0" in out
    code = main(["recipes", "--no-train", "--root", str(tmp_path), "--epochs", "5", "--recipes", "default",
                 "--pos-embed", "learned"])
    assert "--epochs 5 --pos-embed learned --seed 0" in capsys.readouterr().out


def test_the_default_recipe_builds_the_sincos_model_unless_told_otherwise(tmp_path):
    result = train(options(tmp_path / "a", recipe="default", steps=1), dataset=tiny_dataset())
    assert result.config.pos_embed == "sincos2d"
    result = train(options(tmp_path / "b", recipe="default", steps=1, pos_embed="learned"), dataset=tiny_dataset())
    assert result.config.pos_embed == "learned"
