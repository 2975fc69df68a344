"""Data: the step -> examples order, the tfds reading, the streaming path, and the missing-dataset error."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from train import data


def test_batch_order_is_a_pure_function_of_seed_and_step():
    order = data.BatchOrder(100, 16, seed=3)
    assert order.steps_per_epoch == 6
    epoch0 = np.concatenate([order.indices(s) for s in range(6)])
    assert len(set(epoch0)) == 96  # no example twice within an epoch
    again = data.BatchOrder(100, 16, seed=3)
    np.testing.assert_array_equal(again.indices(7), order.indices(7))  # fresh object, out of order
    assert not np.array_equal(order.indices(0), order.indices(6))  # a new permutation each epoch
    assert not np.array_equal(order.indices(0), data.BatchOrder(100, 16, seed=4).indices(0))


def test_processes_take_consecutive_slices_of_the_global_batch():
    order = data.BatchOrder(100, 16, seed=0)
    parts = [order.indices(5, p, 4) for p in range(4)]
    assert all(len(p) == 4 for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), order.indices(5))


def test_batch_larger_than_the_dataset_is_refused():
    with pytest.raises(data.DatasetError, match="exceeds"):
        data.BatchOrder(10, 16, seed=0)


def test_missing_dataset_error(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.open_sources("cifar10", str(tmp_path))
    message = str(info.value)
    assert str(tmp_path.resolve()) in message
    assert "pip install 'vit-twins[data]'" in message and "--data-dir" in message


def test_unknown_dataset_error(tmp_path):
    with pytest.raises(data.DatasetError, match="unknown dataset 'cifar11'"):
        data.open_sources("cifar11", str(tmp_path))


def _cifar_dir() -> str:
    data_dir = os.environ.get("TFDS_DATA_DIR")
    if not data_dir or not (Path(data_dir) / "cifar10").is_dir():
        pytest.skip(f"CIFAR-10 is not prepared under TFDS_DATA_DIR={data_dir!r} (CI sets it to ../shared/tensorflow_datasets)")
    return data_dir


def test_cifar10_loads_as_uint8_and_streams_the_same_batches():
    sources = data.open_sources("cifar10", _cifar_dir())
    test = data.load_split(sources["test"], "test")
    assert test.images.shape == (10000, 32, 32, 3) and test.images.dtype == np.uint8
    assert test.labels.dtype == np.int32 and set(np.unique(test.labels)) == set(range(10))
    order = data.BatchOrder(len(test), 64, seed=0)
    streamed = list(data.StreamingBatches(sources["test"], order, 3, 5, process_index=1, process_count=2))
    in_memory = list(data.memory_batches(test, order, 3, 5, process_index=1, process_count=2))
    assert len(streamed) == len(in_memory) == 2
    for (a, la), (b, lb) in zip(streamed, in_memory):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)


def test_a_data_dir_that_does_not_exist_is_named_as_such(tmp_path, monkeypatch):
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    with pytest.raises(data.DatasetNotFoundError, match=r"^--data-dir \S+ does not exist: give the folder"):
        data.resolve_data_dir(str(tmp_path / "nowhere"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(data.DatasetNotFoundError, match=r"^TFDS_DATA_DIR \S+ does not exist: .* or unset TFDS_DATA_DIR"):
        data.resolve_data_dir(None)
    (tmp_path / "file").write_text("")
    with pytest.raises(data.DatasetNotFoundError, match="is a file, not a folder"):
        data.resolve_data_dir(str(tmp_path / "file"))


def test_a_data_dir_without_the_dataset_says_so(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match=r"there is no prepared cifar10/ folder in it\)"):
        data.open_sources("cifar10", str(tmp_path))
