"""Weights holding NaN or infinity are refused by every loader, naming the tensor, before any work is done
(issue 11, item 4): `vit eval` used to score them at chance and `vit parity` to call the twins different."""

from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import pytest

from vit_cli.main import main
from vit_spec import ViTConfig, WeightsError, check_finite, load_weights, random_weights, save_weights
from vit_spec.formats import Checkpoint, write_checkpoint

# gelu="tanh": Google's, so `--to npz` writes without --accept-mismatch.
TINY = ViTConfig(image_size=16, patch_size=4, width=32, depth=4, heads=4, mlp_dim=64, num_classes=5, gelu="tanh")
DEEP = "blocks.2.attn.qkv.weight"  # a tensor deep in the model, not the first or last one read
FIX = "the weights cannot be right (a diverged run?); retrain, or use an earlier checkpoint"


def poisoned(value: float, name: str = DEEP, count: int = 3, dtype: str = "float32") -> dict[str, np.ndarray]:
    weights = random_weights(TINY, dtype=dtype)
    weights[name].reshape(-1)[5 : 5 + count] = value
    return weights


@pytest.fixture(params=[("NaN", np.nan), ("+inf", np.inf)], ids=["nan", "inf"])
def bad_file(request, tmp_path):
    """(path, what it holds): the project's file with three NaN or +inf values in blocks.2.attn.qkv.weight."""
    kind, value = request.param
    path = tmp_path / "bad.safetensors"
    save_weights(path, TINY, poisoned(value))  # save_weights writes what it is given; the loaders judge it
    return path, f"3 {kind} of its {3 * 32 * 32} values"


@pytest.fixture
def clean_file(tmp_path):
    path = tmp_path / "clean.safetensors"
    save_weights(path, TINY, random_weights(TINY))
    return path


def run(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_message_names_tensor_counts_and_kinds():
    weights = poisoned(np.nan, count=2)
    weights["head.bias"][:] = [np.inf, -np.inf, -np.inf, 0.0, 1.0]
    with pytest.raises(WeightsError) as e:
        check_finite(weights, "x.safetensors")
    assert str(e.value) == (
        f"x.safetensors: 2 tensors hold NaN or infinite values: '{DEEP}' (2 NaN of 3072 values), "
        f"'head.bias' (1 +inf, 2 -inf of 5 values): {FIX}"
    )


def test_many_bad_tensors_are_counted_not_all_listed():
    weights = {f"t{i}": np.array([np.nan], np.float32) for i in range(8)}
    with pytest.raises(WeightsError, match=r"8 tensors hold .*'t4' \(1 NaN of 1 values\) and 3 more: "):
        check_finite(weights)


def test_half_precision_and_integer_tensors():
    check_finite({"steps": np.array([2**31 - 1], np.int32), "mask": np.array([True]), "w": np.ones(3, np.float16)})
    for dtype in (np.float16, ml_dtypes.bfloat16, np.float64):
        with pytest.raises(WeightsError, match=r"tensor 'w' holds 1 -inf of its 3 values"):
            check_finite({"w": np.array([1.0, -np.inf, 2.0], dtype)})


def test_bfloat16_file(tmp_path):
    """safetensors returns BF16 tensors as ml_dtypes.bfloat16: checked like any float."""
    path = tmp_path / "bf16.safetensors"
    save_weights(path, TINY, poisoned(np.nan, dtype="bfloat16"))
    with pytest.raises(WeightsError, match=rf"{path}: tensor '{DEEP}' holds 3 NaN of its 3072 values: "):
        load_weights(path)


def test_load_weights_and_both_twins_name_the_tensor(bad_file):
    path, holds = bad_file
    expected = f"{path}: tensor '{DEEP}' holds {holds}: {FIX}"
    with pytest.raises(WeightsError) as e:
        load_weights(path)
    assert str(e.value) == expected
    torch_vit = pytest.importorskip("torch_vit")
    with pytest.raises(WeightsError, match=DEEP):
        torch_vit.load(path)
    jax_vit = pytest.importorskip("jax_vit")
    with pytest.raises(WeightsError, match=DEEP):
        jax_vit.load(path)


def test_eval_refuses_before_reading_the_dataset(bad_file, clean_file, capsys, monkeypatch):
    from train import data as data_lib

    def no_dataset(*_):
        raise data_lib.DatasetError("the dataset was reached")

    monkeypatch.setattr(data_lib, "open_sources", no_dataset)
    path, holds = bad_file
    rc, _, err = run(capsys, "eval", path, "--framework", "both")
    assert rc == 2 and err == f"vit eval: error: {path}: tensor '{DEEP}' holds {holds}: {FIX}\n"
    # A clean file passes the check and goes on to the dataset.
    rc, _, err = run(capsys, "eval", clean_file)
    assert rc == 2 and err == "vit eval: error: the dataset was reached\n"


def test_parity_refuses_and_passes_a_clean_file(bad_file, clean_file, capsys):
    path, holds = bad_file
    rc, out, err = run(capsys, "parity", path, "--no-gradients")
    assert rc == 2 and out == "" and err == f"vit parity: error: {path}: tensor '{DEEP}' holds {holds}: {FIX}\n"
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    rc, out, err = run(capsys, "parity", clean_file, "--no-gradients")
    assert rc == 0 and "PASS: the twins agree" in out, out + err


@pytest.mark.parametrize("to", ["vit", "timm", "npz", "hf"])
def test_convert_writes_nothing(bad_file, clean_file, to, tmp_path, capsys):
    path, holds = bad_file
    dst = tmp_path / "out" / ("model" if to == "hf" else "model.npz" if to == "npz" else "model.safetensors")
    rc, out, err = run(capsys, "convert", path, dst, "--to", to)
    assert rc == 2 and err == f"vit convert: error: {path}: tensor '{DEEP}' holds {holds}: {FIX}\n"
    assert not (tmp_path / "out").exists()  # not even a temporary file
    rc, _, err = run(capsys, "convert", clean_file, dst, "--to", to)
    assert rc == 0 and dst.exists(), err


@pytest.mark.parametrize("fmt", ["timm", "npz", "hf"])
def test_other_formats_are_checked_in_the_shared_names(fmt, tmp_path, capsys):
    """`vit convert` and `vit train --init-from` read peer formats through the same check."""
    from train.finetune import finetune_weights

    src = tmp_path / {"timm": "t.safetensors", "npz": "g.npz", "hf": "hf"}[fmt]
    write_checkpoint(Checkpoint(TINY, poisoned(np.nan, "blocks.3.mlp.fc2.weight", 1), "vit"), src, fmt)
    renamed = "" if fmt == "timm" else " (tensors named as in timm)"  # HF and Google name them otherwise
    expected = f"{src}{renamed}: tensor 'blocks.3.mlp.fc2.weight' holds 1 NaN of its 2048 values"
    heads = ["--heads", "4"] if fmt == "timm" else []
    rc, _, err = run(capsys, "convert", src, tmp_path / "o.safetensors", *heads)
    assert rc == 2 and err.startswith(f"vit convert: error: {expected}: "), err
    assert not (tmp_path / "o.safetensors").exists()
    if fmt != "timm":  # a timm state dict needs --init-variant for its heads, and TINY is no named variant
        with pytest.raises(WeightsError, match=re.escape(expected)):
            finetune_weights(str(src), (16, 16, 3), 10)


def test_init_from_refuses(bad_file):
    from train.finetune import finetune_weights

    path, holds = bad_file
    with pytest.raises(WeightsError) as e:
        finetune_weights(str(path), (16, 16, 3), 10)
    assert str(e.value) == f"{path}: tensor '{DEEP}' holds {holds}: {FIX}"
