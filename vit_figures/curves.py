"""Loss, accuracy and learning rate of training runs on shared axes (`vit plot`), and the two runs of `vit compare`.

Reads each workdir's metrics.jsonl (train.metrics.MetricsLog writes it) and draws one colour per run, in
the style of the run's own curves.png: train a solid line, validation dashed with markers, test a marker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from vit_figures import figure_files

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Records = dict[str, list[dict[str, Any]]]  # "train", "validation", "test": records by step

_SERIES = ("train", "validation", "test")
# A shared machine slows stretches of a long run (other jobs, a run paused and resumed): the run's speed on quiet
# cores is its faster records. Not the fastest one (a lucky stretch), not the median (which counts the slow ones).
QUIET_QUANTILE = 0.9
X_LABELS = {"epoch": "epoch", "step": "step", "hours": "hours at the run's quiet speed"}
HOURS_AT_GIVEN_SPEEDS = "hours at the speeds given (--speeds)"
# The figures' one writer (the format of the suffix, atomically): curves.save for `vit plot` and `vit compare`.
save = figure_files.save
_NEEDED = {"train": ("step", "epoch", "loss", "accuracy", "lr"), "eval": ("step", "epoch", "loss", "accuracy")}


def read_records(workdir: str | Path) -> Records:
    """The records of WORKDIR/metrics.jsonl by series ("train", "validation", "test"), each sorted by step.

    A resumed run re-logs the steps after its checkpoint: the last record of a (series, step) wins.
    """
    path = Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: give the workdir of a training run (what `vit train --workdir` wrote)")
    text = path.read_text()
    lines = text.splitlines()
    latest: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines) and not text.endswith("\n"):
                continue  # a run being written (or killed) has half a last line
            raise ValueError(f"{path} line {number} is not JSON ({e.msg}): metrics.jsonl holds one JSON object "
                             "per line; give a workdir `vit train` wrote") from None
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind not in _NEEDED:
            raise ValueError(f"{path} line {number} is not a train or eval record (an object with \"kind\": "
                             "\"train\" or \"eval\"): give a workdir `vit train` wrote")
        missing = [key for key in _NEEDED[kind] if key not in record]
        if missing:
            raise ValueError(f"{path} line {number}: a {kind} record without {', '.join(missing)}")
        latest.append(record)
    if not latest:
        raise ValueError(f"{path} is empty: the run has logged nothing yet (it logs every --log-every steps)")
    return group(latest)


def group(records: Sequence[dict[str, Any]]) -> Records:
    """Metrics records (train.metrics.MetricsLog's) by series, each sorted by step; of a (series, step) logged
    twice (a resumed run re-logs the steps after its checkpoint) the last wins."""
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for record in records:
        # Eval records of runs before the validation split have no "split": they scored the test split.
        series = "train" if record.get("kind") == "train" else record.get("split", "test")
        if series in _SERIES:  # a split this module doesn't know (a later trainer's) is not drawn
            latest[(series, record["step"])] = record
    grouped: Records = {series: [] for series in _SERIES}
    for (series, _), record in sorted(latest.items(), key=lambda item: item[0][1]):
        grouped[series].append(record)
    return grouped


def quiet_speed(records: Records) -> float | None:
    """The run's training speed on quiet cores, images/s: the QUIET_QUANTILE of its train records' images_per_s
    (None where no record has one)."""
    speeds = sorted(r["images_per_s"] for r in records["train"] if r.get("images_per_s"))
    if not speeds:
        return None
    return speeds[min(len(speeds) - 1, int(QUIET_QUANTILE * len(speeds)))]


def batch_size(workdir: str | Path) -> int:
    """The run's training batch size, from the recipe in WORKDIR/config.json (`vit train` and `vit baseline` write it)."""
    path = Path(workdir) / "config.json"
    try:
        size = json.loads(path.read_text())["recipe"]["batch_size"]
    except (OSError, ValueError, KeyError, TypeError):
        size = None
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"{path} holds no recipe batch size: the training time needs the config.json "
                         "`vit train` or `vit baseline` wrote beside metrics.jsonl (or plot with --x epoch)")
    return size


def with_hours(records: Records, batch: int, speed: float | None = None) -> Records:
    """RECORDS with "hours" added: the training time each step took at the run's quiet speed (quiet_speed), so that
    runs of different models and lengths compare at equal time on this machine, whatever else ran beside them.

    Args:
        speed: images/s to time the run at instead, e.g. measured in one session alternating with the other runs
            (where the runs ran on days of different machine speed, their own quiet speeds do not compare).
    """
    speed = speed or quiet_speed(records)
    if speed is None:
        raise ValueError("the run's train records hold no images_per_s: its speed is unknown (plot with --x epoch, "
                         "or give it with --speeds)")
    return {series: [{**r, "hours": r["step"] * batch / speed / 3600} for r in rs] for series, rs in records.items()}


def default_labels(workdirs: Sequence[str | Path]) -> list[str]:
    """Each workdir's name, or as many of its last path parts as tell the runs apart (a/jax and b/jax)."""
    parts = [Path(w).resolve().parts for w in workdirs]
    for depth in range(1, max(map(len, parts)) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [p[-1] for p in parts]  # the same workdir twice: nothing tells them apart


def draw(runs: Sequence[Records], labels: Sequence[str], x: str = "epoch", x_label: str | None = None) -> Figure:
    """Three panels with a shared x ("epoch", "step", or "hours" of with_hours's records): loss, accuracy,
    learning rate; one colour per run. X_LABEL replaces the axis label X_LABELS gives X."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(16, 4), sharex=True)
    for i, (records, label) in enumerate(zip(runs, labels)):
        color = f"C{i % 10}"
        train = records["train"]
        xs = [r[x] for r in train]
        _plot(ax_loss, xs, [r["loss"] for r in train], "-", color=color, label=label)
        _plot(ax_acc, xs, [r["accuracy"] for r in train], "-", color=color, alpha=0.6)
        _plot(ax_lr, xs, [r["lr"] for r in train], "-", color=color)
        for split, style in (("validation", "o--"), ("test", "s")):
            evals = records[split]
            if evals:
                ex = [r[x] for r in evals]
                _plot(ax_loss, ex, [r["loss"] for r in evals], style, color=color)
                _plot(ax_acc, ex, [r["accuracy"] for r in evals], style, color=color)
    # Colour tells the runs apart (loss panel's legend); the line style tells the splits apart (accuracy panel).
    for style, name in (("-", "train (augmented batches)"), ("o--", "validation"), ("s", "test")):
        ax_acc.plot([], [], style, color="grey", label=name)
    x_label = x_label or X_LABELS[x]
    ax_loss.set(xlabel=x_label, ylabel="loss", title="loss")
    ax_acc.set(xlabel=x_label, ylabel="accuracy", title="accuracy", ylim=(0, 1))
    ax_lr.set(xlabel=x_label, ylabel="learning rate", title="learning rate")
    for ax, what in ((ax_loss, "loss"), (ax_acc, "accuracy"), (ax_lr, "learning-rate")):
        ax.grid(alpha=0.3)
        _say_if_empty(ax, what)
    ax_loss.legend(fontsize=8)
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _plot(ax: Axes, xs: Sequence[float], ys: Sequence[float], style: str, **kwargs: Any) -> None:
    """ax.plot, except that a line of one point gets a marker: a line alone would draw nothing."""
    if len(xs) == 1 and "marker" not in kwargs and not any(c in style for c in "o.sxd^v+*"):
        kwargs["marker"] = "o"
    ax.plot(xs, ys, style, **kwargs)


def _say_if_empty(ax: Axes, what: str) -> None:
    """A panel with no point says so inside it ("no learning-rate records") instead of staying blank."""
    if not any(len(line.get_xdata()) for line in ax.get_lines()):
        ax.text(0.5, 0.5, f"no {what} records\n(a run logs train records every --log-every steps)",
                transform=ax.transAxes, ha="center", va="center", color="grey", fontsize=10)


def summary_line(label: str, records: Records, width: int = 0, batch: int | None = None,
                 speed: float | None = None) -> str:
    """Where a run ended: its last step, final train loss, last validation accuracy, test accuracy; given the run's
    BATCH, also its training minutes at SPEED images/s (default: its quiet speed, quiet_speed)."""
    pct = lambda series: f"{100 * records[series][-1]['accuracy']:.2f}%" if records[series] else "-"
    train = records["train"]
    end = max((r for rs in records.values() for r in rs), key=lambda r: r["step"])
    loss = f"{train[-1]['loss']:.4f}" if train else "-"
    line = (f"{label:<{width}}  step {end['step']} (epoch {end['epoch']:.2f})  final train loss {loss}  "
            f"validation accuracy {pct('validation')}  test accuracy {pct('test')}")
    speed = speed or quiet_speed(records)
    if batch is not None and speed is not None:
        line += f"  {end['step'] * batch / speed / 60:.0f} min of training at {speed:.0f} images/s"
    return line


def draw_sides(sides: Sequence[Any]) -> Figure:
    """`vit compare`'s picture: the train loss and accuracy of both twins' runs (twins.training_runs.Side), with
    their validation and test accuracies (write it with save)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for side, color in zip(sides, ("tab:blue", "tab:orange")):
        train = [r for r in side.records if r.get("kind") == "train"]
        _plot(ax_loss, [r["step"] for r in train], [r["loss"] for r in train], "-", color=color,
              label=f"{side.framework} train")
        _plot(ax_acc, [r["step"] for r in train], [r["accuracy"] for r in train], "-", color=color, alpha=0.6,
              label=f"{side.framework} train (augmented)")
        for split, marker in (("validation", "o"), ("test", "s")):
            evals = [r for r in side.records if r.get("kind") == "eval" and r.get("split") == split]
            if evals:
                _plot(ax_acc, [r["step"] for r in evals], [r["accuracy"] for r in evals], marker, color=color,
                      label=f"{side.framework} {split}")
    ax_loss.set(xlabel="step", ylabel="loss", title="train loss")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax, what in ((ax_loss, "train-loss"), (ax_acc, "accuracy")):
        ax.grid(alpha=0.3)
        _say_if_empty(ax, what)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
