"""`vit compare` on real CIFAR-10 (a few steps), and `vit eval --framework both` on what the PyTorch trainer wrote."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_train_run import cifar_dir
from twins.differences import largest_difference
from vit_cli.main import main
from vit_spec import load_weights

pytestmark = pytest.mark.xdist_group("compare_cli")


def test_compare_trains_both_from_the_same_weights_and_prints_one_table(tmp_path, capsys):
    data_dir = cifar_dir()
    out_png = tmp_path / "curves.png"
    code = main(["compare", "--model", "mu/8", "--recipe", "tutorial", "--steps", "4", "--batch-size", "32",
                 "--validation", "0", "--data-dir", data_dir, "--workdir", str(tmp_path / "cmp"), "--out", str(out_png),
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    for row in ("images/s", "final train loss", "test accuracy", "largest final parameter difference"):
        assert row in out, out
    assert out_png.stat().st_size > 10_000
    from PIL import Image

    with Image.open(out_png) as img:
        assert img.size == (1100, 400)
    # The PyTorch run wrote a weights file that both twins score alike.
    torch_file = tmp_path / "cmp" / "torch" / "model.safetensors"
    assert load_weights(torch_file)[0].width == 32
    code = main(["eval", str(torch_file), "--framework", "both", "--data-dir", data_dir])
    out = capsys.readouterr().out
    assert code == 0 and "0 of them not near-ties" in out, out


def test_steps_and_epochs_together_are_refused(tmp_path, capsys):
    code = main(["compare", "--steps", "4", "--epochs", "1", "--data-dir", str(tmp_path / "nowhere"),
                 "--workdir", str(tmp_path / "cmp"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--steps 4 and --epochs 1 both set the run's length: give one of them" in err, err
    assert not (tmp_path / "cmp").exists()


def test_largest_difference_names_the_tensor():
    a = {"x": np.array([1.0, 2.0]), "y": np.array([10.0, 0.0])}
    b = {"x": np.array([1.0, 2.5]), "y": np.array([10.0, 1.0])}
    assert largest_difference(a, b) == ("x", 0.5, 0.25)
