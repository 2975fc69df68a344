"""`vit bench`: images/s of the twins' training step and inference, JAX against PyTorch, in one run.

    vit bench                                   # the default sweep (roughly 30 minutes on 2 idle CPU cores)
    vit bench --rows tutorial --dtypes float32 --json bench.json
    vit bench --rows smoke --repeats 1 --steps 1 --modes jax torch     # seconds, for CI

The same rules for every framework:
- same model config, batch and images (random float32, NHWC for JAX and NCHW for PyTorch, the same
  values), already on the device; labels random;
- training step = forward + cross-entropy (float32) + backward + AdamW (lr 1e-3, betas (0.9, 0.999),
  eps 1e-8, weight decay 0.05 on weights only: not biases, norms, pos_embed, cls_token). JAX: one
  `jax.jit` of all of it with the state donated. PyTorch: `loss.backward()`, `opt.step()`,
  `opt.zero_grad(set_to_none=True)`; under torch.compile the model is compiled, the optimizer step
  stays eager;
- inference = forward to the logits (JAX: jit; PyTorch: under `torch.inference_mode()`);
- float32 parameters always; bfloat16 rows compute in bfloat16 (JAX: `ViT(config, dtype=bfloat16)`,
  PyTorch: `torch.autocast`), keeping float32 master weights;
- compilation and warm-up are excluded from the timings and reported apart: JAX's
  `jit(f).lower(...).compile()` seconds, then one warm-up step; PyTorch eager: one warm-up step
  (it also creates AdamW's state); torch.compile: its first call (compilation and one step);
- PyTorch uses one intra-op thread per core (as XLA's CPU backend does by default);
- the frameworks alternate: each of the R repeats runs one untimed step and times K steps of JAX,
  then the same for PyTorch eager and torch.compile, so that a noisy neighbour slows all of them alike
  (the untimed step gives each framework its memory back after the other's step);
- one process for all: `vit` runs with large buffers on transparent huge pages where the machine
  allows it (vit_cli/huge_pages.py), which both frameworks get; the header says which. Speeds are the median
  and the range (min-max) over the repeats; every repeat's seconds are in the JSON.

Achieved FLOP/s = analytic FLOPs per image (`vit_bench.flops`) x images/s, and its fraction of this
machine's matmul peak for the dtype: the faster of JAX and PyTorch on large square matmuls.
"""

from __future__ import annotations

import argparse

from vit_bench.sweep import DEFAULT_ROWS, DTYPES, MODES, TASKS
from vit_cli.flag_types import positive_int
from vit_cli.output_files import add_overwrite_flag, check_output

# The flags and the printing; the measurements are vit_bench's (vit_bench.report runs the sweep and the
# sections, vit_bench.inference the --inference report). The docstring above is `vit bench --help`'s text.


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="images/s of the training step and inference: JAX, PyTorch eager and torch.compile, alternated",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rows", nargs="+", metavar="ROW", help=f"rows to run (default: {' '.join(DEFAULT_ROWS)}; also: smoke)")
    p.add_argument("--dtypes", nargs="+", metavar="DTYPE", help="float32 and/or bfloat16 (default: both)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="train and/or inference (default: both)")
    p.add_argument("--modes", nargs="+", metavar="MODE", help="jax, torch, torch-compile (default: all)")
    p.add_argument("--repeats", type=positive_int, help="timed repeats per mode (default: per row, 3-5)")
    p.add_argument("--steps", type=positive_int, help="steps per timed repeat (default: per row and task, 1-6)")
    p.add_argument("--batch-size", type=positive_int, help="override every row's batch")
    p.add_argument("--json", metavar="FILE", help="write machine, versions, peak and every timing here (atomically)")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak (and the %% of peak)")
    p.add_argument("--sections", nargs="+", metavar="SECTION",
                   help="what to measure: sweep (the table above), host (data path and augmentation against "
                   "the step), compile (compile time and memory against depth, with and without nn.scan and "
                   "remat), ablation (each hand-written piece of the JAX model swapped back), profile (per-op time of the JAX "
                   "training step of the first --rows model, grouped by layer part), dispatch (vit train's step fed from the "
                   "host against --steps-per-dispatch K from the device), decode (JPEG decoding + random-resized crop in "
                   "0, 1 and 2 worker processes against the S/16 step) (default: sweep)")
    p.add_argument("--data-dir", help="tfds data directory for the host section (default: $TFDS_DATA_DIR)")
    p.add_argument("--inference", action="store_true",
                   help="measure inference instead (vit_bench/inference.py): batch-1 latency and --batch-size "
                   "(default 256) throughput of JAX jit, PyTorch eager, torch.compile and onnxruntime, alternated, for "
                   "--rows (default: tutorial S/16); --repeats rounds (default 5, 3 for big models), --steps calls "
                   "per throughput timing (default 1)")
    p.add_argument("--calls", type=positive_int, help="--inference: timed batch-1 calls per runtime and round (default 20)")
    add_overwrite_flag(p, "--json's file")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    if args.json:
        check_output(args.json, args.overwrite, "--json")
    if args.inference:
        from vit_bench import inference

        unused = [flag for flag, value in (("--sections", args.sections), ("--dtypes", args.dtypes), ("--tasks", args.tasks),
                                           ("--modes", args.modes), ("--no-peak", args.no_peak), ("--data-dir", args.data_dir))
                  if value]
        if unused:
            raise ValueError(f"--inference is a measurement of its own and does not use {', '.join(unused)}: run "
                             "them without --inference (its runtimes are fixed: JAX jit, PyTorch eager, torch.compile, "
                             "onnxruntime, in float32)")
        lines = inference.run(rows=args.rows, repeats=args.repeats, steps=args.steps, batch_size=args.batch_size,
                              calls=args.calls, json_path=args.json)
    else:
        from vit_bench import report

        if args.calls is not None:
            raise ValueError("--calls is a flag of --inference (timed batch-1 calls): add --inference, or leave --calls out")
        lines = report.run(sections=args.sections or ["sweep"], rows=args.rows, dtypes=args.dtypes or list(DTYPES),
                           tasks=args.tasks or list(TASKS), modes=args.modes or list(MODES), repeats=args.repeats,
                           steps=args.steps, batch_size=args.batch_size, json_path=args.json, peak=not args.no_peak,
                           data_dir=args.data_dir)
    for text in lines:
        print(text, flush=True)
    return 0
