"""`--dataset folder:PATH` end to end, through the `vit` command: train on a folder of images of any size, resume a
run stopped mid-epoch bit for bit (in memory and streamed), fine-tune a checkpoint on it and predict with its
class names; `vit eval` and `vit attention` read the same folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_image_pipeline import CLASSES, write_folder
from train.finetune import finetune_checkpoint
from vit_cli.main import main
from vit_spec import load_weights, read_class_names

TINY = ["--model", "mu/4", "--no-progress", "--batch-size", "8", "--log-every", "1"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIT_DATA_CACHE", str(tmp_path / "cache"))


def tinted_folder(root: Path, per_class: int, size: tuple[int, int], splits=("train", "test"), fmt="jpg") -> Path:
    """A learnable folder: each class tints its noise with its own colour."""
    rng = np.random.default_rng(1)
    tint = {name: rng.integers(0, 128, 3) for name in CLASSES}
    for split in splits:
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = (rng.integers(0, 128, (*size, 3)) + tint[name]).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.{fmt}")
    return root


def train(workdir: Path, folder: Path, *flags: str) -> int:
    return main(["train", "--dataset", f"folder:{folder}", "--workdir", str(workdir), *TINY, *flags])


def final_weights(workdir: Path) -> dict[str, np.ndarray]:
    return load_weights(workdir / "model.safetensors")[1]


def stop_after_checkpoint(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """The run dies right after writing the checkpoint of `step` (as if killed then)."""
    from train.jax_loop import checkpoint

    save = checkpoint.Checkpoints.save

    def save_then_die(self, at, *args, **kwargs):
        save(self, at, *args, **kwargs)
        if at == step:
            raise KeyboardInterrupt(f"killed after step {at}")

    monkeypatch.setattr(checkpoint.Checkpoints, "save", save_then_die)


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_a_folder_run_stopped_mid_epoch_resumes_bit_exactly(tmp_path, monkeypatch, capsys, streamed):
    folder = tinted_folder(tmp_path / "data", per_class=8, size=(36, 40))  # 24 images: 3 steps of 8 an epoch
    flags = ["--steps", "6", "--image-size", "32", "--checkpoint-every", "2", "--validation", "0", "--workers", "0"]
    if streamed:
        flags.append("--streaming")
    assert train(tmp_path / "whole", folder, *flags) == 0
    with monkeypatch.context() as m:
        stop_after_checkpoint(m, 4)  # step 4: the middle of the second epoch
        assert train(tmp_path / "stopped", folder, *flags) == 130  # `vit` says "interrupted"
    assert train(tmp_path / "stopped", folder, *flags) == 0
    assert "resuming from step 4" in capsys.readouterr().err
    whole, resumed = final_weights(tmp_path / "whole"), final_weights(tmp_path / "stopped")
    for name in whole:
        assert np.array_equal(whole[name], resumed[name]), f"{name} differs after resuming mid-epoch"
    losses = lambda w: [(r["step"], r["loss"]) for r in map(json.loads, (w / "metrics.jsonl").read_text().splitlines())
                        if r["kind"] == "train"]
    assert losses(tmp_path / "stopped") == losses(tmp_path / "whole"), "the train records differ after the resume"


def test_a_folder_run_reports_its_data_and_records_class_names(tmp_path, capsys):
    folder = tinted_folder(tmp_path / "data", per_class=6, size=(32, 32), splits=("train", "validation", "test"))
    (folder / "train" / "fox" / "bad.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "train" / "notes.txt").write_text("a note")
    assert train(tmp_path / "run", folder, "--steps", "2", "--workers", "0") == 0
    err = capsys.readouterr().err
    assert "train/fox/bad.jpg" in err and "1 unreadable left out" in err and "1 files that are not images" in err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["unreadable"] == 1 and config["data"]["classes"] == 3
    assert config["validation"] == {"examples": 18, "folder": "validation"}
    assert tuple(read_class_names(tmp_path / "run" / "model.safetensors")) == CLASSES


def test_fine_tune_on_a_folder_then_eval_attention_and_predict_by_name(tmp_path, capsys):
    small = tinted_folder(tmp_path / "small", per_class=6, size=(16, 16), splits=("train",), fmt="png")
    assert train(tmp_path / "pre", small, "--steps", "2", "--workers", "0", "--validation", "0") == 0
    folder = tinted_folder(tmp_path / "data", per_class=6, size=(32, 32), splits=("train", "test"))
    code = main(["train", "--dataset", f"folder:{folder}", "--workdir", str(tmp_path / "ft"), "--recipe", "finetune",
                 "--init-from", str(tmp_path / "pre" / "model.safetensors"), "--steps", "2", "--batch-size", "8",
                 "--no-progress", "--workers", "0"])
    assert code == 0
    config, _ = load_weights(tmp_path / "ft" / "model.safetensors")
    assert config.image_hw == (32, 32), "fine-tuning at the folder's size resamples the position embedding"
    assert "its head of 3 classes kept" in capsys.readouterr().err, "the same classes keep their head"

    assert main(["eval", str(tmp_path / "ft" / "model.safetensors"), "--dataset", f"folder:{folder}"]) == 0
    assert f"folder:{folder} test accuracy" in capsys.readouterr().out

    out = tmp_path / "maps.png"
    assert main(["attention", str(tmp_path / "ft" / "model.safetensors"), "--dataset", f"folder:{folder}",
                 "--index", "0", "7", "--out", str(out)]) == 0
    assert out.is_file()

    image = folder / "test" / "dog" / "000.jpg"
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "ft" / "model.safetensors"), str(image), "--top-k", "3", "--json"]) == 0
    names = {p["label"] for p in json.loads(capsys.readouterr().out)[0]["predictions"]}
    assert names == set(CLASSES), f"predict names the folder's classes: {names}"


def test_eval_refuses_a_folder_of_other_classes(tmp_path, capsys):
    folder = tinted_folder(tmp_path / "data", per_class=4, size=(16, 16), splits=("train",), fmt="png")
    assert train(tmp_path / "run", folder, "--steps", "1", "--workers", "0", "--validation", "0") == 0
    other = write_folder(tmp_path / "other", per_class=2, size=(16, 16), splits=("train",))
    (other / "train" / "cat").rename(other / "train" / "cow")
    code = main(["eval", str(tmp_path / "run" / "model.safetensors"), "--dataset", f"folder:{other}", "--split", "train"])
    assert code == 2
    assert "are not the folder's" in capsys.readouterr().err


def test_the_pytorch_twin_trains_on_a_folder_too(tmp_path, capsys):
    folder = tinted_folder(tmp_path / "data", per_class=6, size=(20, 20), splits=("train", "test"))
    assert train(tmp_path / "run", folder, "--framework", "torch", "--steps", "2", "--workers", "0",
                 "--recipe", "finetune", "--validation", "3") == 0
    out = capsys.readouterr()
    assert "training on 15 examples, 3 held out" in out.err and "test accuracy" in out.out
    assert tuple(read_class_names(tmp_path / "run" / "model.safetensors")) == CLASSES


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "cifar10", "--image-size", "64"], "--image-size size the images of an image folder"),
    (["--dataset", "folder:"], "needs a path"),
    (["--dataset", "folder:{tmp}/nowhere"], "does not exist"),
    (["--dataset", "folder:{tmp}/flat"], "move them into"),
])
def test_folder_flags_and_layouts_are_checked_before_training(tmp_path, capsys, argv, message):
    flat = tmp_path / "flat" / "cat"
    flat.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["train", *argv, "--workdir", str(tmp_path / "run"), "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "run").exists(), "nothing is written before the data is known to be usable"


def test_a_checkpoint_of_other_classes_gets_a_new_head_even_for_the_same_count(tmp_path, capsys):
    small = tinted_folder(tmp_path / "small", per_class=4, size=(16, 16), splits=("train",), fmt="png")
    assert train(tmp_path / "pre", small, "--steps", "1", "--workers", "0", "--validation", "0") == 0
    other = tinted_folder(tmp_path / "other", per_class=4, size=(16, 16), splits=("train",), fmt="png")
    (other / "train" / "cat").rename(other / "train" / "cow")  # three classes, one of them another
    capsys.readouterr()
    assert main(["train", "--dataset", f"folder:{other}", "--workdir", str(tmp_path / "ft"), "--recipe", "finetune",
                 "--init-from", str(tmp_path / "pre" / "model.safetensors"), "--steps", "1", "--batch-size", "8",
                 "--no-progress", "--workers", "0", "--validation", "0"]) == 0
    assert "a new head of 3 classes (the file's are other classes)" in capsys.readouterr().err
    pre = str(tmp_path / "pre" / "model.safetensors")
    assert finetune_checkpoint(pre, (16, 16, 3), 3, class_names=CLASSES).missing == []
    assert finetune_checkpoint(pre, (16, 16, 3), 3, class_names=("cow", "dog", "fox")).missing == ["head.weight", "head.bias"]
