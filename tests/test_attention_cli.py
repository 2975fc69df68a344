"""`vit attention` and `vit embeddings`: the pictures, their sizes, their errors, and maps that show
what a trained model learned (a model trained for 100 steps on CIFAR-10 against its initialisation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jax_vit import init_params
from jax_vit.inference import attention as jax_attention
from tests.test_train_run import cifar_dir
from vit_cli.main import main
from vit_figures import attention, embeddings
from vit_spec import ViTConfig, random_weights, save_weights
from vit_spec.weights_file import load_weights

TINY = dict(image_size=32, patch_size=4, num_classes=10, width=32, depth=2, heads=4, mlp_dim=64)


def weights_file(tmp_path: Path, config: ViTConfig, name: str = "model.safetensors") -> Path:
    path = tmp_path / name
    save_weights(path, config, random_weights(config, seed=0))
    return path


def image_files(tmp_path: Path, count: int = 2, size: tuple[int, int] = (48, 40)) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_grid_has_a_row_per_image_and_a_column_per_head_plus_mean_and_rollout(tmp_path, capsys):
    config = ViTConfig(**TINY)
    out = tmp_path / "figs" / "attention.png"
    assert main(["attention", str(weights_file(tmp_path, config)), *image_files(tmp_path, 3), "--out", str(out)]) == 0
    assert png_size(out) == attention.figure_size(rows=3, columns=1 + config.heads + 2)
    printed = capsys.readouterr().out
    assert "img0.png: predicted class" in printed and f"wrote {out}" in printed


def test_one_head_of_one_layer(tmp_path):
    config = ViTConfig(**TINY)
    out = tmp_path / "one.png"
    code = main(["attention", str(weights_file(tmp_path, config)), *image_files(tmp_path, 1), "--out", str(out),
                 "--layer", "0", "--head", "3", "--framework", "torch"])
    assert code == 0 and png_size(out) == attention.figure_size(rows=1, columns=4)


def test_a_mean_pooled_model_shows_the_attention_patches_receive_and_says_so(tmp_path):
    config = ViTConfig(**TINY, pool="mean")
    out = tmp_path / "mean.png"
    assert main(["attention", str(weights_file(tmp_path, config)), *image_files(tmp_path, 1), "--out", str(out)]) == 0
    assert out.is_file()
    title = attention.title_of(config, -1, "jax")
    assert "mean attention each patch receives" in title and "no [CLS] token" in title
    assert "[CLS] token's attention" in attention.title_of(ViTConfig(**TINY), -1, "jax")


def test_bad_files_are_named_and_skipped_exit_1_and_none_readable_is_an_error(tmp_path, capsys):
    config = ViTConfig(**TINY)
    weights = str(weights_file(tmp_path, config))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    folder = tmp_path / "photos"
    folder.mkdir()
    out = tmp_path / "a.png"
    # As `vit predict`: the readable files are drawn, each unreadable one is named, and the exit code is 1.
    assert main(["attention", weights, str(bad), str(folder), *image_files(tmp_path, 1), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"vit attention: skipped {bad}: " in captured.err
    assert f"vit attention: skipped {folder}: a folder, not an image file" in captured.err
    assert "img0.png: predicted" in captured.out and f"wrote {out}" in captured.out
    assert png_size(out) == attention.figure_size(rows=1, columns=1 + config.heads + 2)
    out2 = tmp_path / "b.png"
    assert main(["attention", weights, str(bad), "--out", str(out2)]) == 2
    assert "none of the image files could be read" in capsys.readouterr().err
    assert not out2.exists()


@pytest.mark.parametrize("flags, message", [
    (["--layer", "2"], "--layer 2 is out of range: the model has layers 0..1"),
    (["--layer", "-3"], "--layer -3 is out of range"),
    (["--head", "4"], "--head 4 is out of range: the model has heads 0..3 (negative: from the end)"),
    (["--head", "-5"], "--head -5 is out of range: the model has heads 0..3 (negative: from the end)"),
    (["--dataset", "cifar10", "--index", "0"], "not both"),
])
def test_bad_options_are_refused(tmp_path, capsys, flags, message):
    weights = str(weights_file(tmp_path, ViTConfig(**TINY)))
    out = tmp_path / "x.png"
    assert main(["attention", weights, *image_files(tmp_path, 1), "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_negative_head_counts_from_the_end_like_a_negative_layer(tmp_path):
    weights = str(weights_file(tmp_path, ViTConfig(**TINY)))
    files = image_files(tmp_path, 1)
    last, minus_one = tmp_path / "head3.png", tmp_path / "head-1.png"
    assert main(["attention", weights, *files, "--out", str(last), "--layer", "1", "--head", "3"]) == 0
    assert main(["attention", weights, *files, "--out", str(minus_one), "--layer", "-1", "--head", "-1"]) == 0
    assert minus_one.read_bytes() == last.read_bytes()  # the same picture: the same column titles too


def test_predictions_on_image_files_are_named_as_vit_predict_names_them(tmp_path, capsys):
    config = ViTConfig(**TINY)
    named = tmp_path / "named.safetensors"
    save_weights(named, config, random_weights(config, seed=0), class_names=[f"thing {i}" for i in range(10)])
    files = image_files(tmp_path, 1)
    assert main(["attention", str(named), *files, "--out", str(tmp_path / "a.png")]) == 0
    shown = capsys.readouterr().out.splitlines()[0]
    assert shown.startswith("img0.png: predicted thing ") and "class" not in shown
    assert main(["predict", str(named), *files, "--top-k", "1"]) == 0
    predicted = capsys.readouterr().out.splitlines()[1].split()[1:3]
    assert shown.startswith(f"img0.png: predicted {' '.join(predicted)} (")
    # --labels as for `vit predict`: a built-in list wins over the file's names.
    assert main(["attention", str(named), *files, "--labels", "cifar10", "--out", str(tmp_path / "b.png")]) == 0
    assert "thing" not in capsys.readouterr().out


def test_a_finished_runs_workdir_is_its_weights_file_and_an_unfinished_one_is_named(tmp_path, capsys):
    config = ViTConfig(**TINY)
    run = tmp_path / "run"
    run.mkdir()
    weights_file(run, config)
    out = tmp_path / "a.png"
    assert main(["attention", str(run), *image_files(tmp_path, 1), "--out", str(out)]) == 0
    assert out.is_file() and capsys.readouterr().out.startswith("img0.png: predicted")
    assert main(["embeddings", str(run), "--out", str(tmp_path / "e.png")]) == 0
    assert capsys.readouterr().out.startswith(f"{run / 'model.safetensors'}: learned position embedding")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for argv in (["attention", str(unfinished), *image_files(tmp_path, 1), "--out", str(tmp_path / "b.png")],
                 ["embeddings", str(unfinished), "--out", str(tmp_path / "b.png")]):
        assert main(argv) == 2
        assert f"{unfinished} is a folder with no model.safetensors yet" in capsys.readouterr().err
        assert not (tmp_path / "b.png").exists()


def long_grid(rows: int = 3, columns: int = 2):
    """attention.grid of random images with long file names, long class names and three-line row titles."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (rows, 32, 24, 3), dtype=np.uint8)
    maps = attention.Maps(heads=rng.random((rows, columns, 8, 6)), head_mean=rng.random((rows, 8, 6)),
                          rollout=rng.random((rows, 8, 6)))
    titles = [f"holiday_photo_of_the_cat_in_the_garden_number_{i}_$5_$6.png\npredicted American Staffordshire "
              f"terrier (97%)\ntrue Staffordshire bullterrier" for i in range(rows)]
    title = attention.title_of(ViTConfig(**{**TINY, "pool": "mean"}), 0, "torch")
    return attention.grid(images, maps, titles, title, [f"head {h}" for h in range(columns)])


@pytest.mark.parametrize("columns", [1, 4])
def test_every_text_of_the_grid_lies_inside_the_figure(columns):
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    fig = long_grid(columns=columns)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
        assert fig._suptitle in texts and len([t for t in texts if "holiday_photo" in t.get_text()]) == 3
        for text in texts:
            box = text.get_window_extent(renderer)
            assert (box.x0 >= fig.bbox.x0 and box.y0 >= fig.bbox.y0 and box.x1 <= fig.bbox.x1
                    and box.y1 <= fig.bbox.y1), f"{text.get_text()!r} at {box} is clipped by {fig.bbox}"
        # The row titles each stay beside their own row, and the title above the column titles.
        rows = sorted((t.get_window_extent(renderer) for t in texts if "holiday_photo" in t.get_text()),
                      key=lambda b: b.y0)
        assert all(lower.y1 <= upper.y0 for lower, upper in zip(rows, rows[1:]))
        column_top = max(t.get_window_extent(renderer).y1 for t in texts if t.get_text() in ("image", "rollout"))
        assert fig._suptitle.get_window_extent(renderer).y0 >= column_top
    finally:
        plt.close(fig)


def test_a_224_imagenet_checkpoint_from_timm(tmp_path, capsys):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    src = tmp_path / "timm.safetensors"
    save_file(timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict(), str(src))
    ours = tmp_path / "ours.safetensors"
    assert main(["convert", str(src), str(ours), "--variant", "vit_tiny_patch16_224"]) == 0
    out = tmp_path / "in1k.png"
    assert main(["attention", str(ours), *image_files(tmp_path, 1, size=(300, 400)), "--out", str(out)]) == 0
    config, _ = load_weights(ours)
    assert config.image_hw == (224, 224) and config.heads == 3
    assert png_size(out) == attention.figure_size(rows=1, columns=1 + 3 + 2)


def test_embeddings_draws_a_row_per_file(tmp_path, capsys):
    learned = weights_file(tmp_path, ViTConfig(**TINY), "learned.safetensors")
    sincos = weights_file(tmp_path, ViTConfig(**TINY, pos_embed="sincos2d", pool="mean"), "sincos.safetensors")
    out = tmp_path / "emb.png"
    assert main(["embeddings", str(learned), str(sincos), "--labels", "learned", "sincos", "--out", str(out)]) == 0
    assert png_size(out) == embeddings.figure_size(rows=2)
    printed = capsys.readouterr().out
    assert "learned position embedding, mean cosine similarity with the 4 neighbours" in printed
    assert "sincos2d position embedding" in printed
    assert "row + column parts explain 100.0% of the position table's variance" in printed  # the sin-cos one


def test_embeddings_of_a_one_channel_model_and_label_count(tmp_path, capsys):
    grey = weights_file(tmp_path, ViTConfig(**{**TINY, "channels": 1}), "grey.safetensors")
    out = tmp_path / "grey.png"
    assert main(["embeddings", str(grey), "--out", str(out)]) == 0
    assert png_size(out) == embeddings.figure_size(rows=1)
    assert main(["embeddings", str(grey), "--labels", "a", "b", "--out", str(tmp_path / "no.png")]) == 2
    assert "--labels gives 2 names for 1 weights files" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["attention", "embeddings"])
def test_an_existing_out_is_replaced_only_with_overwrite_and_refused_before_any_work(tmp_path, capsys, command):
    weights = str(weights_file(tmp_path, ViTConfig(**TINY)))
    images = image_files(tmp_path, 1) if command == "attention" else []
    out = tmp_path / "fig.png"
    out.write_bytes(b"an older picture")
    # Refused before the weights are read: even a missing weights file is not reached.
    assert main([command, str(tmp_path / "missing.safetensors"), *images, "--out", str(out)]) == 2
    assert f"--out {out} exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert out.read_bytes() == b"an older picture"
    assert main([command, weights, *images, "--out", str(out), "--overwrite"]) == 0
    assert png_size(out) > (0, 0)


@pytest.mark.parametrize("command, suffix, format", [("attention", "jpg", "JPEG"), ("embeddings", "jpeg", "JPEG"),
                                                     ("attention", "pdf", None), ("embeddings", "svg", None)])
def test_the_out_suffix_picks_the_format(tmp_path, command, suffix, format):
    weights = str(weights_file(tmp_path, ViTConfig(**TINY)))
    images = image_files(tmp_path, 1) if command == "attention" else []
    out = tmp_path / f"fig.{suffix}"
    assert main([command, weights, *images, "--out", str(out)]) == 0
    if format:
        with Image.open(out) as image:
            assert image.format == format
    else:
        assert out.read_bytes().startswith(b"%PDF" if suffix == "pdf" else b"<?xml")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [], "a temporary file was left"


@pytest.mark.parametrize("command", ["attention", "embeddings"])
@pytest.mark.parametrize("name, says", [("fig.bmp", "ends in .bmp, which is not a picture format this command writes"),
                                        ("fig", "has no suffix")])
def test_an_out_suffix_matplotlib_cannot_write_is_refused_naming_the_formats(tmp_path, capsys, command, name, says):
    weights = str(weights_file(tmp_path, ViTConfig(**TINY)))
    images = image_files(tmp_path, 1) if command == "attention" else []
    out = tmp_path / name
    assert main([command, weights, *images, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} {says}" in err and ".png, .jpg, .jpeg, .pdf, .svg" in err and len(err.splitlines()) == 1
    assert not out.exists()


# --- On CIFAR-10: a model trained for 100 steps against its initialisation. ---

EXAMPLES = 16


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(the tutorial model after 100 steps of `vit train`, the same model at its initialisation). 100 steps, not
    an epoch: the rollout is already far from uniform, in a fifth of the time."""
    data_dir = cifar_dir()
    workdir = tmp_path_factory.mktemp("attention") / "run"
    code = main(["train", "--steps", "100", "--eval-every", "0", "--validation", "0", "--workdir", str(workdir),
                 "--data-dir", data_dir, "--no-progress"])
    assert code == 0
    config, _ = load_weights(workdir / "model.safetensors")
    start = workdir.parent / "init.safetensors"
    from jax_vit import save

    save(start, config, init_params(config, 0))
    return workdir / "model.safetensors", start


def rollout_maps(path: Path) -> np.ndarray:
    """The rollout maps of the first test images, each as a distribution over the patches."""
    from train import data as data_lib

    source = data_lib.open_sources("cifar10", cifar_dir())["test"]
    images, _ = data_lib.read_records(source, range(EXAMPLES))
    config, _ = load_weights(path)
    maps = attention.maps_of(jax_attention(path, images), config).rollout.reshape(EXAMPLES, -1)
    return maps / maps.sum(axis=1, keepdims=True)


def spread(maps: np.ndarray) -> float:
    """Mean over images of the coefficient of variation over patches: 0 for uniform maps."""
    return float((maps.std(axis=1) / maps.mean(axis=1)).mean())


def between_images(maps: np.ndarray) -> float:
    """Mean total-variation distance between two images' maps: 0 when every image gets the same map."""
    n = len(maps)
    return float(np.mean([0.5 * np.abs(maps[i] - maps[j]).sum() for i in range(n) for j in range(i + 1, n)]))


@pytest.mark.xdist_group("attention_trained")
def test_a_trained_models_rollout_is_not_uniform_and_differs_between_images(trained):
    # Measured: after 100 steps 0.23 and 0.12 (after 60: 0.15 and 0.08; one epoch: 0.27 and 0.13), at initialisation
    # 0.04 and 0.02 (the negative control).
    model, start = trained
    after, before = rollout_maps(model), rollout_maps(start)
    assert spread(before) < 0.1 and between_images(before) < 0.05, "the initialisation already looks trained"
    assert spread(after) > 0.1, f"the trained model's rollout is nearly uniform over the patches (spread {spread(after):.3f})"
    assert between_images(after) > 0.05, (
        f"the trained model's rollout is nearly the same for every image (distance {between_images(after):.3f})")


@pytest.mark.xdist_group("attention_trained")
def test_dataset_examples_are_titled_with_true_and_predicted_class(trained, tmp_path, capsys):
    model, _ = trained
    out = tmp_path / "cifar.png"
    assert main(["attention", str(model), "--dataset", "cifar10", "--index", "0", "7", "--out", str(out),
                 "--data-dir", cifar_dir()]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("cifar10 test #")]
    assert len(lines) == 2 and all("predicted" in line and "true" in line for line in lines)
    assert png_size(out) == attention.figure_size(rows=2, columns=1 + 8 + 2)
    assert main(["attention", str(model), "--dataset", "cifar10", "--index", "10000", "--out", str(out),
                 "--data-dir", cifar_dir(), "--overwrite"]) == 2
    assert "--index [10000] out of range: cifar10 test has examples 0..9999" in capsys.readouterr().err
