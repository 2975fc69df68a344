"""Every command's bad input ends in one line that names the problem and the fix, before any work: numbers
out of range, a missing optional framework, a file that disagrees with itself, an output that exists, flags a
mode does not use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vit_cli.main import main
from vit_spec import ViTConfig, num_params, random_weights, save_weights

TINY = ViTConfig(image_size=16, patch_size=4, num_classes=5, width=32, depth=2, heads=2, mlp_dim=64)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def weights(tmp_path) -> Path:
    path = tmp_path / "model.safetensors"
    save_weights(path, TINY, random_weights(TINY, seed=0))
    return path


# (argv, the message argparse prints): each refused at parse time, so the files named need not exist.
OUT_OF_RANGE = [
    (["eval", "w.safetensors", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["eval", "w.safetensors", "--batch-size", "-5"], "argument --batch-size: must be at least 1, got -5"),
    (["train", "--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["train", "--lr", "-0.001"], "argument --lr: must be above 0, got -0.001"),
    (["plot", "run", "--x", "hours", "--speeds", "0", "--out", "c.png"], "argument --speeds: must be above 0, got 0"),
    (["train", "--lr", "nan"], "argument --lr: must be a finite number, got nan"),
    (["train", "--dropout", "1"], "argument --dropout: must be in [0, 1), got 1"),
    (["train", "--randaugment-magnitude", "11"], "argument --randaugment-magnitude: must be in [0, 10], got 11"),
    (["train", "--validation", "-1"], "argument --validation: must be at least 0, got -1"),
    (["train", "--keep-checkpoints", "0"], "argument --keep-checkpoints: must be at least 1, got 0"),
    (["train", "--steps", "ten"], "argument --steps: 'ten' is not an integer"),
    (["compare", "--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (["recipes", "--epochs", "1", "0"], "argument --epochs: must be at least 1, got 0"),
    (["parity", "w.safetensors", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["predict", "w.safetensors", "x.png", "--top-k", "0"], "argument --top-k: must be at least 1, got 0"),
    (["summary", "tutorial", "--depth", "-1"], "argument --depth: must be at least 1, got -1"),
    (["summary", "tutorial", "--image-size", "0"], "argument --image-size: must be at least 1, got 0"),
    (["convert", "a", "b", "--heads", "0"], "argument --heads: must be at least 1, got 0"),
    (["attention", "w.safetensors", "--dataset", "cifar10", "--index", "-2", "--out", "a.png"],
     "argument --index: must be at least 0, got -2"),
    (["bench", "--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
]


@pytest.mark.parametrize("argv, message", OUT_OF_RANGE, ids=[" ".join(a) for a, _ in OUT_OF_RANGE])
def test_numeric_flags_out_of_range_are_refused_at_parse_time(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert f"vit {argv[0]}: error: {message}" in capsys.readouterr().err


def _vit_without(modules: list[str], argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`vit ARGV` in a process where `modules` cannot be imported, as on a machine without them."""
    code = (f"import sys\nfor m in {modules!r}: sys.modules[m] = None\n"
            "from vit_cli.main import main\nsys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}, timeout=300)


def test_commands_name_the_extra_a_missing_framework_comes_from(weights, tmp_path):
    run = _vit_without(["torch"], ["parity", str(weights)], tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip() == "vit parity: error: this needs torch, which is not installed: pip install 'vit-twins[torch]'"
    run = _vit_without(["onnx", "onnxscript"], ["export", str(weights), "--to", "onnx", str(tmp_path / "m.onnx")], tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "this needs onnx" in run.stderr and "pip install 'vit-twins[export]'" in run.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_jax_only_commands_work_without_torch(weights, tmp_path):
    run = _vit_without(["torch"], ["summary", str(weights)], tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"total parameters: {num_params(TINY):,} (JAX); the PyTorch twin is not installed" in run.stdout
    assert "pip install 'vit-twins[torch]' adds it" in run.stdout
    rows = [line.split()[0] for line in run.stdout.splitlines()[2:-1]]
    assert rows[:4] == ["cls_token", "pos_embed", "patch_embed", "patch_embed.proj"] and "Dropout_0" not in " ".join(rows)

    out = tmp_path / "m.jax"
    run = _vit_without(["torch"], ["export", str(weights), "--to", "stablehlo", str(out), "--platforms", "cpu"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert "not checked against the torch twin: it is not installed (pip install 'vit-twins[torch]' adds the check)" in run.stdout
    assert "vs jax" in run.stdout and out.exists() and Path(str(out) + ".mlirbc").exists()


def test_summary_checks_a_file_as_every_other_command_does(tmp_path, capsys):
    from safetensors.numpy import save_file

    from vit_spec.weights_file import FORMAT_NAME, FORMAT_VERSION

    # The file's recorded config says 10 classes; its head has 5: the tensors and the config disagree.
    path = tmp_path / "bad.safetensors"
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "vit_config": TINY.replace(num_classes=10).to_json()}
    save_file(random_weights(TINY, seed=0), str(path), metadata=metadata)
    assert main(["summary", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vit summary: error: {path}: parameter 'head.weight' has shape (5, 32), but the config expects (10, 32)")


def test_an_existing_output_is_replaced_only_with_overwrite(weights, tmp_path, capsys):
    out = tmp_path / "m.jax"
    out.write_bytes(b"keep me")
    assert main(["export", str(weights), "--to", "stablehlo", str(out), "--platforms", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == f"vit export: error: OUT {out} exists; pass --overwrite to replace it"
    assert out.read_bytes() == b"keep me" and not Path(str(out) + ".mlirbc").exists()
    assert main(["export", str(weights), "--to", "stablehlo", str(out), "--platforms", "cpu", "--overwrite"]) == 0
    assert out.read_bytes() != b"keep me"

    report = tmp_path / "bench.json"
    report.write_text("{}")
    assert main(["bench", "--rows", "smoke", "--json", str(report)]) == 2
    assert f"--json {report} exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert main(["compare", "--out", str(report)]) == 2  # refused before two training runs start
    assert f"--out {report} exists; pass --overwrite to replace it" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--modes", "jax"], ["--dtypes", "bfloat16"], ["--tasks", "train"], ["--no-peak"],
                                   ["--sections", "host"], ["--modes", "jax", "--no-peak"]])
def test_bench_inference_refuses_the_flags_it_does_not_use(flags, capsys):
    assert main(["bench", "--inference", *flags]) == 2
    err = capsys.readouterr().err
    named = ", ".join(f for f in flags if f.startswith("--"))
    assert f"vit bench: error: --inference is a measurement of its own and does not use {named}: run them without" in err


def test_bench_refuses_calls_without_inference(capsys):
    assert main(["bench", "--rows", "smoke", "--calls", "5"]) == 2
    assert "--calls is a flag of --inference" in capsys.readouterr().err


def test_export_report_names_an_unreadable_image_instead_of_failing_every_config(tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("not a picture")
    run = subprocess.run([sys.executable, "-m", "parity_tests.export_report", "--images", str(fake)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "FAILED" not in run.stdout
    assert f"error: cannot read --images: {fake}: not an image file that Pillow can read" in run.stderr


def test_a_broken_pipe_ends_quietly(monkeypatch, capsys):
    # `vit summary tutorial | head -1`: the reader leaves early, and the next write raises BrokenPipeError.
    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["summary", "tutorial"]) == 0
    assert capsys.readouterr().err == ""
