"""The decoding pipeline of image folders: worker processes change nothing but the speed, a stream resumes
mid-run exactly, a file that goes bad mid-run is replaced, not fatal; and a folder's plan (size, hold-out,
streaming) as `vit train --dataset folder:PATH` makes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train import folder_dataset, image_folder, image_pipeline
from train.data import BatchOrder

CLASSES = ("cat", "dog", "fox")


def write_folder(root: Path, per_class: int = 10, size: tuple[int, int] = (20, 24), splits=("train",),
                 fmt: str = "png", seed: int = 0) -> Path:
    """A folder dataset of random images: root/SPLIT/CLASS/NNN.fmt, (h, w) = size."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.{fmt}")
    return root


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIT_DATA_CACHE", str(tmp_path / "cache"))


def test_decode_files_is_the_same_in_worker_processes(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", per_class=25)  # 75 files: two chunks of CHUNK (64)
    layout = image_folder.scan(root)
    paths = [f.path for f in layout.splits["train"]]
    transform = image_pipeline.Transform((16, 16), crop_pct=0.875)
    here, bad_here = image_pipeline.decode_files(root, paths, transform, workers=0)
    there, bad_there = image_pipeline.decode_files(root, paths, transform, workers=2)
    assert here.shape == (75, 16, 16, 3) and here.dtype == np.uint8
    assert bad_here == bad_there == []
    assert np.array_equal(here, there), "decoding in 2 worker processes changed the pixels"
    assert np.array_equal(here[0], image_folder.resize_center_crop(
        image_folder.read_image(root / paths[0]), (16, 16), 0.875))


def test_decode_files_names_and_skips_an_unreadable_file(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", per_class=3)
    (root / "train" / "dog" / "001.png").write_bytes(b"")
    paths = [f.path for f in image_folder.scan(root).splits["train"]]
    images, bad = image_pipeline.decode_files(root, paths, image_pipeline.Transform((8, 8)))
    assert [p for p, _ in bad] == ["train/dog/001.png"]
    assert "empty" in bad[0][1]
    assert not images[paths.index("train/dog/001.png")].any()  # left zero: the caller drops it


def _stream(root: Path, paths: list[str], start: int, stop: int, workers: int) -> list[tuple[np.ndarray, np.ndarray]]:
    order = BatchOrder(len(paths), 8, seed=3)
    stream = image_pipeline.FolderStream(root, paths, np.arange(len(paths)) % 3, order,
                                         image_pipeline.Transform((12, 12), random_crop=True), 3, start, stop, workers)
    return [(np.array(x), np.array(y)) for x, y in stream]


def test_stream_is_the_same_with_workers_and_resumes_mid_epoch_exactly(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", per_class=10)
    paths = [f.path for f in image_folder.scan(root).splits["train"]]  # 30 files: 3 steps per epoch of 8
    whole = _stream(root, paths, 0, 7, workers=0)
    with_workers = _stream(root, paths, 0, 7, workers=2)
    resumed = _stream(root, paths, 4, 7, workers=2)  # mid-epoch (epoch 1, its second batch)
    for step, ((x, y), (xw, yw)) in enumerate(zip(whole, with_workers)):
        assert np.array_equal(x, xw) and np.array_equal(y, yw), f"step {step} differs with 2 workers"
    for step, ((x, y), (xr, yr)) in enumerate(zip(whole[4:], resumed), start=4):
        assert np.array_equal(x, xr) and np.array_equal(y, yr), f"step {step} differs after resuming at step 4"
    assert whole[0][0].shape == (8, 12, 12, 3)
    assert not np.array_equal(whole[0][0], whole[3][0]), "two epochs gave the same batch: no new order or crops"


def test_stream_replaces_a_file_that_goes_bad_mid_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_folder(tmp_path / "data", per_class=4)
    paths = [f.path for f in image_folder.scan(root).splits["train"]]
    (root / paths[5]).unlink()  # gone after the scan
    (root / paths[6]).write_bytes((root / paths[7]).read_bytes()[:40])  # truncated after the scan
    batches = _stream(root, paths, 0, 6, workers=0)  # 12 files, batches of 8: every file is met
    assert all(x.shape == (8, 12, 12, 3) for x, _ in batches)
    err = capsys.readouterr().err
    assert err.count(paths[5]) == 1 and err.count(paths[6]) == 1, f"each bad file is named once:\n{err}"


def test_plan_takes_the_images_size_and_holds_out_a_tenth(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", per_class=10, size=(20, 24))
    p = folder_dataset.plan(f"folder:{root}", None, None, None)
    assert p.size == (20, 24) and p.class_names == CLASSES
    assert (len(p.train), len(p.held_out)) == (27, 3) and not set(p.train) & set(p.held_out)
    assert not p.streamed and not p.validation_folder


def test_plan_refuses_mixed_sizes_without_image_size(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", per_class=2, size=(20, 24))
    Image.new("RGB", (50, 40)).save(root / "train" / "cat" / "big.png")
    with pytest.raises(ValueError, match="--image-size"):
        folder_dataset.plan(f"folder:{root}", None, None, None)
    assert folder_dataset.plan(f"folder:{root}", 16, None, None).size == (16, 16)
    # Fine-tuning: the checkpoint's own size (asked for only now), unless --image-size says otherwise.
    assert folder_dataset.plan(f"folder:{root}", None, None, None, fallback_size=lambda: (28, 28)).size == (28, 28)
    assert folder_dataset.plan(f"folder:{root}", 16, None, None, fallback_size=lambda: (28, 28)).size == (16, 16)


def test_a_validation_folder_is_the_validation_split(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", per_class=4, splits=("train", "validation"))
    p = folder_dataset.plan(f"folder:{root}", None, None, None)
    assert p.validation_folder and p.held_out == () and len(p.train) == 12
    with pytest.raises(ValueError, match="drop --validation 5"):
        folder_dataset.plan(f"folder:{root}", None, None, 5)
    assert not folder_dataset.plan(f"folder:{root}", None, None, 0).validation_folder


def test_load_decodes_caches_and_reports_unreadable_files(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", per_class=6, splits=("train", "test"))
    (root / "train" / "fox" / "002.png").write_text("not an image")
    (root / "train" / "notes.txt").write_text("ignored")
    data = folder_dataset.load(f"folder:{root}", image_size=16, validation=3)
    assert len(data.train) == 14 and len(data.validation) == 3 and len(data.test) == 18
    assert data.train.images.shape[1:] == (16, 16, 3)
    assert list(data.unreadable) == ["train/fox/002.png"]
    assert data.record()["unreadable"] == 1
    lines = data.lines()
    assert any("train/fox/002.png" in line for line in lines) and "1 unreadable left out" in lines[-1]
    again = folder_dataset.load(f"folder:{root}", image_size=16, validation=3)  # from the cache
    assert np.array_equal(again.train.images, data.train.images)
    assert np.array_equal(again.validation.labels, data.validation.labels)


def test_a_class_without_a_readable_image_is_an_error_before_training(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", per_class=2)
    for f in (root / "train" / "dog").iterdir():
        f.write_bytes(b"")
    with pytest.raises(image_folder.FolderError, match="dog"):
        folder_dataset.plan(f"folder:{root}", None, None, None)


def test_a_folder_too_large_for_memory_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_folder(tmp_path / "data", per_class=4)
    monkeypatch.setenv("VIT_FOLDER_MEMORY_LIMIT", str(10 * 20 * 24 * 3))  # room for 10 of the 12 images
    data = folder_dataset.load(f"folder:{root}", validation=0)
    assert data.plan.streamed and data.train is None
    order = BatchOrder(len(data.plan.train), 4, seed=0)
    x, y = next(iter(folder_dataset.stream(data, order, 0, 0, 1, 0, True, (0.5, 1.0), (1.0, 1.0))))
    assert x.shape == (4, 20, 24, 3) and y.dtype == np.int32


def test_a_process_without_jax_decodes_in_a_pool_and_never_loads_jax(tmp_path: Path) -> None:
    """The PyTorch trainer never loads JAX; grain would (it imports JAX), so its workers are a plain pool."""
    import subprocess
    import sys

    root = write_folder(tmp_path / "data", per_class=25)
    paths = [f.path for f in image_folder.scan(root).splits["train"]]
    expected, _ = image_pipeline.decode_files(root, paths, image_pipeline.Transform((16, 16)), workers=0)
    script = (
        "import sys, numpy as np\n"
        "from train import image_folder, image_pipeline\n"
        f"root = {str(root)!r}\n"
        "paths = [f.path for f in image_folder.scan(root).splits['train']]\n"
        "images, bad = image_pipeline.decode_files(root, paths, image_pipeline.Transform((16, 16)), workers=2)\n"
        f"np.save({str(tmp_path / 'pool.npy')!r}, images)\n"
        "assert 'jax' not in sys.modules and 'grain' not in sys.modules, 'decoding loaded jax'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(np.load(tmp_path / "pool.npy"), expected), "the pool's pixels differ"
