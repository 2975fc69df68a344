"""`vit plot WORKDIR... --out PNG`: training runs' loss, accuracy and learning rate on shared axes, on synthetic
metrics.jsonl files."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from vit_cli.main import main
from vit_figures.curves import HOURS_AT_GIVEN_SPEEDS, default_labels, draw, quiet_speed, read_records, with_hours

STEPS_PER_EPOCH = 10


def train_record(step: int, loss: float = 2.0, lr: float = 1e-3) -> dict:
    return {"kind": "train", "step": step, "epoch": step / STEPS_PER_EPOCH, "loss": loss, "accuracy": 0.3, "lr": lr,
            "grad_norm": 1.0, "images_per_s": 100.0}


def eval_record(step: int, split: str | None, accuracy: float, loss: float = 1.5) -> dict:
    record = {"kind": "eval", "step": step, "epoch": step / STEPS_PER_EPOCH, "accuracy": accuracy, "loss": loss}
    return record if split is None else {**record, "split": split}


def write_run(workdir: Path, epochs: int = 3, lr: float = 1e-3, test: bool = True) -> Path:
    """A finished run's metrics.jsonl: train records every 5 steps, validation every epoch, test at the end."""
    records = []
    for epoch in range(1, epochs + 1):
        for step in range((epoch - 1) * STEPS_PER_EPOCH + 5, epoch * STEPS_PER_EPOCH + 1, 5):
            records.append(train_record(step, loss=2.3 / (1 + step / 10), lr=lr * (1 - step / (epochs * STEPS_PER_EPOCH))))
        records.append(eval_record(epoch * STEPS_PER_EPOCH, "validation", accuracy=0.1 * epoch))
    if test:
        records.append(eval_record(epochs * STEPS_PER_EPOCH, "test", accuracy=0.25))
    return write_lines(workdir, [json.dumps(r) for r in records])


def write_lines(workdir: Path, lines: list[str], end: str = "\n") -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "metrics.jsonl").write_text("\n".join(lines) + end)
    return workdir


def run_colour(i: int) -> np.ndarray:
    return np.asarray(matplotlib.colors.to_rgb(f"C{i}"))


def test_two_runs_give_one_png_with_a_colour_and_a_summary_line_each(tmp_path, capsys):
    a, b = write_run(tmp_path / "runs" / "default"), write_run(tmp_path / "runs" / "tutorial", epochs=2, test=False)
    out = tmp_path / "plots" / "new" / "cmp.png"  # its directory does not exist yet
    assert main(["plot", str(a), str(b), "--out", str(out)]) == 0
    image = matplotlib.image.imread(out)
    assert image.shape == (400, 1600, 4)  # three panels of 16 x 4 inches at 100 dpi
    assert len(np.unique(image.reshape(-1, 4), axis=0)) > 100, "a blank or near-blank image"
    for i in (0, 1):
        assert np.any(np.all(np.abs(image[..., :3] - run_colour(i)) < 0.02, axis=-1)), f"no line of run {i}'s colour"
    assert not np.any(np.all(np.abs(image[..., :3] - run_colour(2)) < 0.02, axis=-1)), "a third run's colour"
    assert [p.name for p in out.parent.iterdir()] == ["cmp.png"], "a temporary file was left beside the PNG"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["default", "step", "30", "(epoch", "3.00)", "final", "train", "loss", "0.5750",
                                "validation", "accuracy", "30.00%", "test", "accuracy", "25.00%"]
    assert lines[1].split()[:5] == ["tutorial", "step", "20", "(epoch", "2.00)"]
    assert lines[1].endswith("validation accuracy 20.00%  test accuracy -")
    assert lines[2] == f"curves in {out}"


def test_each_run_is_one_colour_labelled_by_run_on_three_panels_with_a_shared_x(tmp_path):
    runs = [read_records(write_run(tmp_path / name)) for name in ("a", "b")]
    fig = draw(runs, ["recipe A", "recipe B"])
    try:
        assert isinstance(fig, Figure)
        ax_loss, ax_acc, ax_lr = fig.axes
        assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "learning rate"]
        assert [t.get_text() for t in ax_loss.get_legend().get_texts()] == ["recipe A", "recipe B"]
        assert [t.get_text() for t in ax_acc.get_legend().get_texts()] == ["train (augmented batches)", "validation", "test"]
        assert ax_acc.get_ylim() == (0, 1)
        assert ax_loss.get_shared_x_axes().joined(ax_loss, ax_lr)
        for ax in fig.axes:
            assert ax.get_xlabel() == "epoch"
        # Per run: the loss panel draws train (solid), validation (dashed, markers) and test (a marker), all in its colour.
        for i in (0, 1):
            lines = [line for line in ax_loss.get_lines() if np.allclose(matplotlib.colors.to_rgb(line.get_color()), run_colour(i))]
            styles = sorted((line.get_linestyle(), line.get_marker(), len(line.get_xdata())) for line in lines)
            assert styles == [("-", "None", 6), ("--", "o", 3), ("None", "s", 1)]
        lr_lines = ax_lr.get_lines()
        assert len(lr_lines) == 2 and lr_lines[0].get_ydata()[0] == pytest.approx(1e-3 * (1 - 5 / 30))
    finally:
        plt.close(fig)


def test_x_steps_puts_steps_on_every_panel(tmp_path):
    fig = draw([read_records(write_run(tmp_path / "a"))], ["a"], x="step")
    try:
        assert [ax.get_xlabel() for ax in fig.axes] == ["step"] * 3
        assert list(fig.axes[2].get_lines()[0].get_xdata()) == list(range(5, 31, 5))
    finally:
        plt.close(fig)


def write_config(workdir: Path, batch_size: int) -> Path:
    """config.json as `vit train` and `vit baseline` write it, reduced to what `vit plot` reads."""
    (workdir / "config.json").write_text(json.dumps({"recipe": {"batch_size": batch_size}}))
    return workdir


def test_x_hours_puts_runs_at_equal_training_time_at_their_quiet_speeds(tmp_path, capsys):
    """Each run's time is its steps x batch at its quiet speed (the 90th percentile of its logged images/s): the
    stretches slowed by other work on a shared machine do not count, so a fast and a slow model compare fairly."""
    fast, slow = write_run(tmp_path / "fast"), write_run(tmp_path / "slow")
    for workdir, speeds in ((fast, [400.0] * 9 + [100.0]), (slow, [50.0] * 8 + [10.0, 10.0])):
        records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in records if r["kind"] == "train"]
        for record, speed in zip(train, speeds * 2):
            record["images_per_s"] = speed
        write_lines(workdir, [json.dumps(r) for r in records])
    write_config(fast, 40), write_config(slow, 10)
    runs = [read_records(w) for w in (fast, slow)]
    assert [quiet_speed(r) for r in runs] == [400.0, 50.0]
    timed = [with_hours(r, b) for r, b in zip(runs, (40, 10))]
    fig = draw(timed, ["fast", "slow"], x="hours")
    try:
        assert [ax.get_xlabel() for ax in fig.axes] == ["hours at the run's quiet speed"] * 3
        lr_lines = fig.axes[2].get_lines()
        assert lr_lines[0].get_xdata()[-1] == pytest.approx(30 * 40 / 400 / 3600)  # 30 steps of 40 images at 400/s
        assert lr_lines[1].get_xdata()[-1] == pytest.approx(30 * 10 / 50 / 3600)
    finally:
        plt.close(fig)
    out = tmp_path / "hours.png"
    assert main(["plot", str(fast), str(slow), "--x", "hours", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("test accuracy 25.00%  0 min of training at 400 images/s"), lines[0]
    assert lines[1].endswith("test accuracy 25.00%  0 min of training at 50 images/s"), lines[1]
    assert out.is_file()


def test_speeds_time_runs_made_on_days_of_different_machine_speed(tmp_path, capsys):
    """--speeds replaces each run's own quiet speed: two runs logged on days the machine ran at different speeds
    compare at the speeds one session measured for both."""
    a, b = write_config(write_run(tmp_path / "a"), 40), write_config(write_run(tmp_path / "b"), 10)
    out = tmp_path / "hours.png"
    assert main(["plot", str(a), str(b), "--x", "hours", "--speeds", "200", "25", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()  # 30 steps of 40 images at 200/s; of 10 at 25/s: 6 and 12 s
    assert lines[0].endswith("test accuracy 25.00%  0 min of training at 200 images/s"), lines[0]
    assert lines[1].endswith("test accuracy 25.00%  0 min of training at 25 images/s"), lines[1]
    timed = [with_hours(read_records(w), batch, speed) for w, batch, speed in ((a, 40, 200.0), (b, 10, 25.0))]
    assert timed[0]["train"][-1]["hours"] == pytest.approx(6 / 3600)
    assert timed[1]["train"][-1]["hours"] == pytest.approx(12 / 3600)
    fig = draw(timed, ["a", "b"], x="hours", x_label=HOURS_AT_GIVEN_SPEEDS)
    try:
        assert [ax.get_xlabel() for ax in fig.axes] == ["hours at the speeds given (--speeds)"] * 3
    finally:
        plt.close(fig)
    assert out.is_file()


def test_the_summary_line_gives_the_training_minutes_where_the_batch_size_is_known(tmp_path, capsys):
    run = write_config(write_run(tmp_path / "run", epochs=60), batch_size=200)  # 600 steps of 200 images at 100/s
    assert main(["plot", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("  20 min of training at 100 images/s")


def test_labels_replace_the_workdir_names(tmp_path, capsys):
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b")
    assert main(["plot", str(a), str(b), "--labels", "jax", "torch", "--out", str(tmp_path / "c.png"), "--x", "step"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[:2]] == ["jax", "torch"]


def test_default_labels_are_workdir_names_with_parents_where_names_repeat(tmp_path):
    assert default_labels([tmp_path / "runs" / "a", tmp_path / "runs" / "b"]) == ["a", "b"]
    assert default_labels([tmp_path / "cmp1" / "jax", tmp_path / "cmp2" / "jax", tmp_path / "cmp1" / "torch"]) == [
        "cmp1/jax", "cmp2/jax", "cmp1/torch"]


def test_a_resumed_run_keeps_the_last_record_of_each_repeated_step(tmp_path):
    # Killed after step 15; the restart from step 10 (logging more often) re-logs step 15, killed again after
    # step 20's validation, the next restart re-logs that validation.
    lines = [train_record(5), train_record(10), eval_record(10, "validation", 0.1), train_record(15, loss=9.0),
             train_record(12), train_record(15, loss=1.0), train_record(20), eval_record(20, "validation", 0.2),
             eval_record(20, "validation", 0.3), eval_record(20, "test", 0.4)]
    records = read_records(write_lines(tmp_path / "run", [json.dumps(r) for r in lines]))
    assert [r["step"] for r in records["train"]] == [5, 10, 12, 15, 20]
    assert records["train"][3]["loss"] == 1.0
    assert [(r["step"], r["accuracy"]) for r in records["validation"]] == [(10, 0.1), (20, 0.3)]
    assert [(r["step"], r["accuracy"]) for r in records["test"]] == [(20, 0.4)]


def test_eval_records_without_a_split_are_the_test_split_of_old_runs(tmp_path):
    lines = [train_record(5), eval_record(10, None, 0.2), eval_record(20, None, 0.3)]
    records = read_records(write_lines(tmp_path / "old", [json.dumps(r) for r in lines]))
    assert [r["accuracy"] for r in records["test"]] == [0.2, 0.3] and records["validation"] == []


def test_the_half_written_last_line_of_a_running_run_is_left_out(tmp_path):
    lines = [json.dumps(train_record(5)), json.dumps(train_record(10))[:30]]
    assert [r["step"] for r in read_records(write_lines(tmp_path / "run", lines, end=""))["train"]] == [5]


def bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    good = write_run(tmp_path / "good")
    write_lines(tmp_path / "empty", [], end="")
    write_lines(tmp_path / "blank", ["", "  "])
    write_lines(tmp_path / "text", [json.dumps(train_record(5)), "Epoch 1: loss 2.3", json.dumps(train_record(10))])
    write_lines(tmp_path / "log", [json.dumps(train_record(5)), "not json"])  # ends with a newline: not half-written
    write_lines(tmp_path / "list", ["[1, 2]"])
    write_lines(tmp_path / "noloss", [json.dumps(train_record(5)),
                                      json.dumps({k: v for k, v in train_record(10).items() if k != "loss"})])
    (tmp_path / "nodir").mkdir()
    cases = {
        "no workdir": ([str(tmp_path / "missing")], "no " + str(tmp_path / "missing" / "metrics.jsonl")),
        "no metrics.jsonl": ([str(tmp_path / "nodir")], "give the workdir of a training run"),
        "empty": ([str(good), str(tmp_path / "empty")], "metrics.jsonl is empty"),
        "blank lines only": ([str(tmp_path / "blank")], "metrics.jsonl is empty"),
        "not JSON": ([str(tmp_path / "text")], "metrics.jsonl line 2 is not JSON"),
        "a bad complete last line": ([str(tmp_path / "log")], "metrics.jsonl line 2 is not JSON"),
        "not an object": ([str(tmp_path / "list")], "line 1 is not a train or eval record"),
        "a record without loss": ([str(tmp_path / "noloss")], "line 2: a train record without loss"),
        "too few labels": ([str(good), str(good), "--labels", "one"], "--labels gave 1 labels for 2 workdirs"),
        "too many labels": ([str(good), "--labels", "a", "b"], "--labels gave 2 labels for 1 workdirs"),
        "hours without config.json": ([str(good), "--x", "hours"], "config.json holds no recipe batch size"),
        "speeds without --x hours": ([str(good), "--speeds", "300"], "--speeds times the runs for --x hours"),
        "too few speeds": ([str(good), str(good), "--x", "hours", "--speeds", "300"],
                           "--speeds gave 1 speeds for 2 workdirs"),
    }
    assert tuple(cases) == BAD_INPUTS
    return cases


BAD_INPUTS = ("no workdir", "no metrics.jsonl", "empty", "blank lines only", "not JSON", "a bad complete last line",
              "not an object", "a record without loss", "too few labels", "too many labels", "hours without config.json",
              "speeds without --x hours", "too few speeds")


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, case):
    args, message = bad_inputs(tmp_path)[case]
    out = tmp_path / "plots" / "cmp.png"
    assert main(["plot", *args, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("vit plot: error: ") and message in captured.err, captured.err
    assert captured.out == ""
    assert not out.parent.exists(), "a failed plot created its directory"


def test_a_failed_write_keeps_the_previous_png_and_leaves_no_partial_file(tmp_path, monkeypatch):
    run, out = write_run(tmp_path / "run"), tmp_path / "cmp.png"
    assert main(["plot", str(run), "--out", str(out)]) == 0
    before = out.read_bytes()

    def savefig_then_fail(self, path, **kwargs):
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", savefig_then_fail)
    with pytest.raises(OSError, match="disk full"):
        main(["plot", str(run), "--out", str(out), "--overwrite"])
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.png", "run"]


def test_out_as_a_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", str(write_run(tmp_path / "run")), "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a directory: give the path of a file" in capsys.readouterr().err


def test_an_existing_out_is_replaced_only_with_overwrite_and_refused_before_reading_the_runs(tmp_path, capsys):
    run, out = write_run(tmp_path / "run"), tmp_path / "cmp.png"
    out.write_bytes(b"an older picture")
    assert main(["plot", str(tmp_path / "missing"), "--out", str(out)]) == 2  # refused before the runs are read
    assert f"--out {out} exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert out.read_bytes() == b"an older picture"
    assert main(["plot", str(run), "--out", str(out), "--overwrite"]) == 0
    assert matplotlib.image.imread(out).shape == (400, 1600, 4)


@pytest.mark.parametrize("suffix, start", [("jpg", b"\xff\xd8\xff"), ("JPEG", b"\xff\xd8\xff"), ("pdf", b"%PDF"),
                                           ("svg", b"<?xml"), ("png", b"\x89PNG")])
def test_the_out_suffix_picks_the_format(tmp_path, suffix, start):
    out = tmp_path / f"cmp.{suffix}"
    assert main(["plot", str(write_run(tmp_path / "run")), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(start)


@pytest.mark.parametrize("name, says", [("cmp.bmp", "ends in .bmp, which is not a picture format this command writes"),
                                        ("cmp", "has no suffix")])
def test_an_out_suffix_matplotlib_cannot_write_is_refused_naming_the_formats(tmp_path, capsys, name, says):
    out = tmp_path / "plots" / name
    assert main(["plot", str(write_run(tmp_path / "run")), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vit plot: error: --out {out} {says}: end the name in one of .png, .jpg, .jpeg, .pdf, .svg")
    assert len(err.splitlines()) == 1 and not out.parent.exists()


def test_a_single_point_is_drawn_as_a_marker_and_a_panel_without_data_says_so(tmp_path):
    # A 20-step run logging every 50 steps: no train record, one validation and one test record.
    short = write_lines(tmp_path / "short", [json.dumps(eval_record(20, "validation", 0.2)),
                                             json.dumps(eval_record(20, "test", 0.25))])
    fig = draw([read_records(short)], ["short"])
    try:
        ax_loss, ax_acc, ax_lr = fig.axes
        assert [t.get_text() for t in ax_lr.texts] == [
            "no learning-rate records\n(a run logs train records every --log-every steps)"]
        assert not ax_loss.texts and not ax_acc.texts
        assert all(line.get_marker() not in ("None", "", None) for line in ax_loss.get_lines() if len(line.get_xdata()))
    finally:
        plt.close(fig)
    # One train record: its line of one point gets a marker, so that it shows; longer lines keep none.
    one = write_lines(tmp_path / "one", [json.dumps(train_record(20))])
    fig = draw([read_records(one), read_records(write_run(tmp_path / "long"))], ["one", "long"])
    try:
        for ax in fig.axes:
            assert not ax.texts
            drawn = [line for line in ax.get_lines() if len(line.get_xdata())]
            single = [line for line in drawn if len(line.get_xdata()) == 1 and line.get_linestyle() == "-"]
            assert len(single) == 1 and single[0].get_marker() == "o"
            assert all(line.get_marker() == "None" for line in drawn
                       if len(line.get_xdata()) > 1 and line.get_linestyle() == "-")
    finally:
        plt.close(fig)
    out = tmp_path / "short.png"
    assert main(["plot", str(short), "--out", str(out)]) == 0
    assert matplotlib.image.imread(out).shape == (400, 1600, 4)
