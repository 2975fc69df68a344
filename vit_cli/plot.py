"""`vit plot WORKDIR... --out FILE`: loss, accuracy and learning rate of training runs on shared axes
(vit_figures.curves).

Reads each workdir's metrics.jsonl (train.metrics.MetricsLog writes it) and draws one colour per run, in
the style of the run's own curves.png: train a solid line, validation dashed with markers, test a marker.
The picture's format is its --out suffix (.png, .jpg, .pdf, .svg, ...); an existing --out is replaced only
with --overwrite.
"""

from __future__ import annotations

import argparse

from vit_cli.flag_types import positive_float
from vit_cli.output_files import add_overwrite_flag, check_output


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plot",
        help="draw the loss, accuracy and learning rate of training runs on shared axes",
        description="Reads WORKDIR/metrics.jsonl of each run and draws loss, accuracy and learning rate side by "
        "side, one colour per run (train solid, validation dashed, test a marker), and prints where each run ended.",
    )
    p.add_argument("workdirs", nargs="+", metavar="WORKDIR", help="workdirs of `vit train` runs")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the picture to write; its suffix picks the format (.png, .jpg, .pdf, .svg, ...); its "
                   "directory is created")
    add_overwrite_flag(p, "--out")
    p.add_argument("--x", choices=("epoch", "step", "hours"), default="epoch",
                   help="x axis (default: epoch, comparable across batch sizes); hours: the training time at each "
                   "run's quiet speed (the 90th percentile of its logged images/s), to compare runs at equal time")
    p.add_argument("--speeds", nargs="+", type=positive_float, metavar="IMAGES_PER_S",
                   help="with --x hours: one training speed per WORKDIR to time the runs at instead of their quiet "
                   "speeds, for runs made on days the machine ran at different speeds (measure them in one session, "
                   "alternating the runs)")
    p.add_argument("--labels", nargs="+", metavar="LABEL", help="one legend label per WORKDIR (default: their names)")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from vit_figures import curves
    from vit_figures.figure_files import figure_format

    if args.labels is not None and len(args.labels) != len(args.workdirs):
        raise ValueError(f"--labels gave {len(args.labels)} labels for {len(args.workdirs)} workdirs: "
                         "give one per WORKDIR, in the same order")
    if args.speeds is not None:
        if args.x != "hours":
            raise ValueError(f"--speeds times the runs for --x hours, but the x axis is {args.x}: add --x hours, "
                             "or leave out --speeds")
        if len(args.speeds) != len(args.workdirs):
            raise ValueError(f"--speeds gave {len(args.speeds)} speeds for {len(args.workdirs)} workdirs: "
                             "give one per WORKDIR, in the same order")
    speeds = args.speeds or [None] * len(args.workdirs)
    check_output(args.out, args.overwrite, "--out")
    figure_format(args.out, "--out")
    labels = args.labels or curves.default_labels(args.workdirs)
    runs = [curves.read_records(w) for w in args.workdirs]  # every run read before anything is written
    batches = [_batch_size(w, needed=args.x == "hours") for w in args.workdirs]
    if args.x == "hours":
        runs = [curves.with_hours(records, batch, speed) for records, batch, speed in zip(runs, batches, speeds)]
    x_label = curves.HOURS_AT_GIVEN_SPEEDS if args.speeds else None
    curves.save(curves.draw(runs, labels, args.x, x_label), args.out)
    width = max(len(label) for label in labels)
    for label, records, batch, speed in zip(labels, runs, batches, speeds):
        print(curves.summary_line(label, records, width, batch, speed))
    print(f"curves in {args.out}")
    return 0


def _batch_size(workdir: str, needed: bool) -> int | None:
    """The run's batch size (for its training time); None where config.json lacks it and --x hours doesn't need it."""
    from vit_figures import curves

    try:
        return curves.batch_size(workdir)
    except ValueError:
        if needed:
            raise
        return None
