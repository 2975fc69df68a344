"""`vit predict WEIGHTS IMAGE...`: the top-k classes of image files under either twin, their names (built-in
lists, a labels file, the names a trainer records in the weights file), and bad files that are named while
the others are still classified."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_train_run import cifar_dir, tiny_dataset
from vit_cli.main import main
from vit_spec import ViTConfig, random_weights, read_class_names, save_weights
from vit_spec.class_names import CIFAR10, CIFAR100, imagenet
from vit_spec.image_files import normalise, read_image

TINY = dict(image_size=32, patch_size=4, num_classes=10, width=32, depth=2, heads=4, mlp_dim=64)
WINNER = 3
HEAD_BIAS = np.array([0.5, 1.0, 0.0, 8.0, 2.0, -1.0, 0.25, 1.5, 0.0, -2.0], np.float32)


def weights_file(tmp_path: Path, config: ViTConfig, *, known: bool = False, class_names=None, name="model.safetensors") -> Path:
    """Random weights; `known`: the head ignores the image (weight 0), so its bias alone decides: class 3 by far."""
    weights = random_weights(config, seed=0)
    if known:
        weights["head.weight"] = np.zeros_like(weights["head.weight"])
        weights["head.bias"] = HEAD_BIAS.copy()
    path = tmp_path / name
    save_weights(path, config, weights, class_names=class_names)
    return path


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(np.asarray(z, np.float64) - np.max(z))
    return z / z.sum()


def image_files(tmp_path: Path) -> list[str]:
    """A colour PNG, a JPEG, a grey PNG and a large non-square PNG."""
    rng = np.random.default_rng(0)
    colour = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    files = {
        "colour.png": Image.fromarray(colour(48, 40)),
        "photo.jpg": Image.fromarray(colour(64, 64)),
        "grey.png": Image.fromarray(rng.integers(0, 256, (30, 50), dtype=np.uint8), mode="L"),
        "large.png": Image.fromarray(colour(360, 640)),
    }
    for name, image in files.items():
        image.save(tmp_path / name)
    return [str(tmp_path / name) for name in files]


def predict_json(capsys, *argv: str) -> tuple[int, list[dict]]:
    code = main(["predict", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_the_winning_class_comes_first_with_its_softmax_probability(tmp_path, capsys):
    weights = weights_file(tmp_path, ViTConfig(**TINY), known=True)
    files = image_files(tmp_path)
    assert main(["predict", str(weights), *files]) == 0
    out = capsys.readouterr().out
    expected = softmax(HEAD_BIAS)
    blocks = out.strip().splitlines()
    assert len(blocks) == len(files) * 6  # a name line and five class lines per file
    for i, file in enumerate(files):
        name, *lines = blocks[6 * i: 6 * i + 6]
        assert name == file
        assert lines[0].split()[:3] == ["1.", "class", str(WINNER)]
        assert lines[0].split()[3] == f"{100 * expected[WINNER]:.2f}%"
        ranked = [int(line.split()[2]) for line in lines]
        assert ranked == list(np.argsort(-expected, kind="stable")[:5])


def test_json_gives_per_file_the_top_k_sorted_and_equal_to_the_softmax_of_the_models_logits(tmp_path, capsys):
    # Its own normalisation and a non-square image size: the file's preprocessing is the checkpoint's.
    import torch

    from torch_vit import load

    config = ViTConfig(**{**TINY, "image_size": (24, 32)}, image_mean=(0.2, 0.4, 0.6), image_std=(0.3, 0.2, 0.25))
    weights = weights_file(tmp_path, config)
    files = image_files(tmp_path)
    code, results = predict_json(capsys, str(weights), *files, "--top-k", "3", "--framework", "torch")
    assert code == 0 and [r["file"] for r in results] == files

    model = load(weights).float().eval()
    x = normalise(np.stack([read_image(f, config) for f in files]), config)
    with torch.no_grad():
        logits = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    for result, row in zip(results, logits):
        p = softmax(row)
        got = result["predictions"]
        assert len(got) == 3
        assert [g["class"] for g in got] == list(np.argsort(-p)[:3])
        probs = [g["probability"] for g in got]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1
        np.testing.assert_allclose(probs, p[[g["class"] for g in got]], rtol=1e-5)
        assert all(g["label"] is None for g in got)  # no names anywhere: none invented


def test_jax_and_torch_give_the_same_probabilities(tmp_path, capsys):
    weights = str(weights_file(tmp_path, ViTConfig(**TINY)))
    files = image_files(tmp_path)
    runs = {}
    for framework in ("jax", "torch"):
        code, results = predict_json(capsys, weights, *files, "--top-k", "10", "--framework", framework)
        assert code == 0
        runs[framework] = [{p["class"]: p["probability"] for p in r["predictions"]} for r in results]
    for jax_probs, torch_probs in zip(runs["jax"], runs["torch"]):
        assert sorted(jax_probs) == list(range(10))
        assert sum(jax_probs.values()) == pytest.approx(1.0)
        for c in range(10):
            assert jax_probs[c] == pytest.approx(torch_probs[c], abs=1e-5)


def test_a_one_channel_model_reads_colour_files(tmp_path, capsys):
    weights = weights_file(tmp_path, ViTConfig(**TINY, channels=1), known=True)
    code, results = predict_json(capsys, str(weights), *image_files(tmp_path)[:2])
    assert code == 0 and all(r["predictions"][0]["class"] == WINNER for r in results)


def test_top_k_is_capped_at_the_number_of_classes_and_must_be_positive(tmp_path, capsys):
    weights = str(weights_file(tmp_path, ViTConfig(**TINY), known=True))
    file = image_files(tmp_path)[0]
    code, results = predict_json(capsys, weights, file, "--top-k", "50")
    assert code == 0 and len(results[0]["predictions"]) == 10
    assert sum(p["probability"] for p in results[0]["predictions"]) == pytest.approx(1.0)
    with pytest.raises(SystemExit) as exit_:  # refused by argparse (vit_cli.flag_types), as a usage error
        main(["predict", weights, file, "--top-k", "0"])
    assert exit_.value.code == 2
    assert "argument --top-k: must be at least 1, got 0" in capsys.readouterr().err


def test_ranks_names_and_probabilities_stay_in_aligned_columns_for_ten_or_more_classes(tmp_path, capsys):
    weights = str(weights_file(tmp_path, ViTConfig(**{**TINY, "num_classes": 12})))
    assert main(["predict", weights, image_files(tmp_path)[0], "--top-k", "12"]) == 0
    file, *lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 12
    assert lines[0].startswith("   1. class ") and lines[9].startswith("  10. class ")
    # Every row's name starts in the same column, and so does every probability.
    assert len({line.index("class") for line in lines}) == 1
    assert len({len(line) for line in lines}) == 1 and all(line.endswith("%") for line in lines)


def test_labels_come_from_the_option_else_the_weights_file_else_class_numbers(tmp_path, capsys):
    config = ViTConfig(**TINY)
    file = image_files(tmp_path)[0]
    plain = str(weights_file(tmp_path, config, known=True))
    named = str(weights_file(tmp_path, config, known=True, name="named.safetensors",
                             class_names=[f"thing {i}" for i in range(10)]))
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("".join(f"label {i}\n" for i in range(10)) + "\n")  # a trailing blank line is ignored

    first_label = lambda *argv: predict_json(capsys, *argv)[1][0]["predictions"][0]["label"]
    assert first_label(plain, file) is None
    assert first_label(plain, file, "--labels", "cifar10") == CIFAR10[WINNER] == "cat"
    assert first_label(plain, file, "--labels", str(labels_file)) == f"label {WINNER}"
    assert first_label(named, file) == f"thing {WINNER}"
    assert first_label(named, file, "--labels", "cifar10") == "cat"  # the option wins over the file's names

    assert main(["predict", plain, file]) == 0
    assert f"1. class {WINNER}" in capsys.readouterr().out
    assert main(["predict", named, file, "--top-k", "1"]) == 0
    assert f"1. thing {WINNER}" in capsys.readouterr().out


@pytest.mark.parametrize("labels, count", [("cifar100", 100), ("imagenet", 1000), ("three.txt", 3)])
def test_a_label_list_of_the_wrong_length_is_refused_naming_both_counts(tmp_path, capsys, labels, count):
    weights = str(weights_file(tmp_path, ViTConfig(**TINY)))
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    spec = str(tmp_path / labels) if labels.endswith(".txt") else labels
    assert main(["predict", weights, image_files(tmp_path)[0], "--labels", spec]) == 2
    err = capsys.readouterr().err
    assert f"has {count} class names but the model has 10 classes" in err and spec in err


def test_a_missing_labels_file_is_a_usage_error(tmp_path, capsys):
    weights = str(weights_file(tmp_path, ViTConfig(**TINY)))
    assert main(["predict", weights, image_files(tmp_path)[0], "--labels", str(tmp_path / "nope.txt")]) == 2
    assert "no labels file at" in capsys.readouterr().err


def bad_files(tmp_path: Path) -> list[str]:
    """A text file, a truncated PNG and a missing file."""
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    whole = tmp_path / "whole.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(whole)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return [str(text), str(truncated), str(tmp_path / "missing.jpg")]


def test_bad_files_are_each_named_while_the_good_ones_are_still_predicted(tmp_path, capsys):
    weights = str(weights_file(tmp_path, ViTConfig(**TINY), known=True))
    good = image_files(tmp_path)[:2]
    bad = bad_files(tmp_path)
    files = [good[0], *bad, good[1]]
    assert main(["predict", weights, *files]) == 1
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 3
    for file, line in zip(bad, err_lines):
        assert line.startswith(f"vit predict: {file}: ")
    assert "not an image file" in err_lines[0] and "no such file" in err_lines[2]
    assert [line for line in captured.out.splitlines() if not line.startswith(" ")] == good

    code, results = predict_json(capsys, weights, *files)
    assert code == 1
    assert [r["file"] for r in results] == files
    assert [("error" in r) for r in results] == [False, True, True, True, False]
    assert all(r["error"].startswith(f"{r['file']}: ") for r in results if "error" in r)
    assert all(r["predictions"][0]["class"] == WINNER for r in results if "predictions" in r)


def test_a_folder_given_as_an_image_is_named_as_a_folder(tmp_path, capsys):
    weights = str(weights_file(tmp_path, ViTConfig(**TINY)))
    folder = tmp_path / "photos"
    folder.mkdir()
    assert main(["predict", weights, str(folder), image_files(tmp_path)[0]]) == 1
    assert capsys.readouterr().err == f"vit predict: {folder}: a folder, not an image file\n"


def test_a_finished_runs_workdir_stands_for_its_weights_file(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    weights_file(run, ViTConfig(**TINY), known=True)
    code, results = predict_json(capsys, str(run), image_files(tmp_path)[0])
    assert code == 0 and results[0]["predictions"][0]["class"] == WINNER
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "metrics.jsonl").write_text("")
    assert main(["predict", str(unfinished), image_files(tmp_path)[0]]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vit predict: error: {unfinished} is a folder with no model.safetensors yet: a `vit train` "
                          "workdir gets it when its run finishes")
    assert main(["predict", str(tmp_path / "nowhere"), image_files(tmp_path)[0]]) == 2
    assert f"no weights file at {tmp_path / 'nowhere'}" in capsys.readouterr().err


def test_no_readable_file_still_names_each_and_exits_1(tmp_path, capsys):
    weights = str(weights_file(tmp_path, ViTConfig(**TINY)))
    bad = bad_files(tmp_path)
    assert main(["predict", weights, *bad]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and all(file in captured.err for file in bad)


def test_a_model_without_a_head_is_refused(tmp_path, capsys):
    weights = str(weights_file(tmp_path, ViTConfig(**{**TINY, "num_classes": 0})))
    assert main(["predict", weights, image_files(tmp_path)[0]]) == 2
    assert "has no classification head (num_classes 0)" in capsys.readouterr().err


def test_the_weights_file_records_class_names_only_when_given_and_one_per_class(tmp_path):
    config = ViTConfig(**TINY)
    assert read_class_names(weights_file(tmp_path, config)) is None
    assert read_class_names(weights_file(tmp_path, config, class_names=CIFAR10)) == list(CIFAR10)
    with pytest.raises(ValueError, match="has 3 class names but the model has 10 classes"):
        weights_file(tmp_path, config, class_names=["a", "b", "c"], name="bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_the_built_in_lists():
    assert len(CIFAR10) == 10 and CIFAR10[3] == "cat"
    assert len(CIFAR100) == 100 and list(CIFAR100) == sorted(CIFAR100)  # tfds's fine labels are alphabetical
    names = imagenet()
    assert len(names) == 1000 and all(names)
    assert (names[0], names[281], names[999]) == ("tench", "tabby", "toilet tissue")


def test_the_imagenet_list_is_timms_first_lemma_of_each_synset():
    timm = pytest.importorskip("timm")
    info = Path(timm.__file__).parent / "data" / "_info"
    synsets = (info / "imagenet_synsets.txt").read_text().split()
    lemmas = dict(line.split("\t", 1) for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines() if line)
    assert list(imagenet()) == [lemmas[s].split(",")[0].strip() for s in synsets]


def test_tfds_cifar10_names_are_the_built_in_list():
    from train import data as data_lib

    source = data_lib.open_sources("cifar10", cifar_dir())["train"]
    assert tuple(data_lib.label_names(source)) == CIFAR10


def test_loading_a_dataset_keeps_its_class_names(monkeypatch):
    from train import data as data_lib

    class Info:
        name = "fake"
        supervised_keys = ("image", "label")
        features = {"image": type("F", (), {"shape": (8, 8, 3)})(),
                    "label": type("L", (), {"num_classes": 3, "names": ["x", "y", "z"]})()}

    source = type("Source", (), {"dataset_info": Info()})()
    monkeypatch.setattr(data_lib, "open_sources", lambda name, data_dir: {"train": source, "test": source})
    monkeypatch.setattr(data_lib, "load_split", lambda source, split: data_lib.Split(
        np.zeros((2, 8, 8, 3), np.uint8), np.zeros(2, np.int32)))
    assert data_lib.load("fake", None).class_names == ("x", "y", "z")


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_the_trainers_record_the_datasets_class_names(tmp_path, framework):
    from tests import test_torch_trainer, test_train_run
    from train.torch_loop import trainer as torch_trainer
    from train.jax_loop import trainer

    named = dataclasses.replace(tiny_dataset(), class_names=CIFAR10)
    if framework == "jax":
        trainer.train(test_train_run.options(tmp_path / "run"), dataset=named)
    else:
        torch_trainer.train(test_torch_trainer.options(tmp_path / "run"), dataset=named)
    assert read_class_names(tmp_path / "run" / "model.safetensors") == list(CIFAR10)


def test_a_dataset_without_names_writes_none(tmp_path):
    from tests import test_torch_trainer
    from train.torch_loop import trainer as torch_trainer

    assert tiny_dataset().class_names == ()
    torch_trainer.train(test_torch_trainer.options(tmp_path / "run"), dataset=tiny_dataset())
    assert read_class_names(tmp_path / "run" / "model.safetensors") is None
