"""Prints how closely the twins' training runs agree: `python -m parity_tests.training_report`.

For each recipe and dtype of test_twins_training_run.py: the worst relative loss difference and its step,
and the worst final parameter (key bias set apart, as there), against the suite's tolerances.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from parity_tests.test_twins_training_run import BATCH, LOSS_TOL, PARAM_TOL, STEPS, _cifar_batches, _runs
from parity_tests.test_twins_training_step import _without_key_bias
from twins.differences import compare


def main() -> int:
    try:
        batches = _cifar_batches(STEPS // 2, BATCH)
    except pytest.skip.Exception as e:  # the suite's skip ("CIFAR-10 is not prepared under ..."), said plainly
        print(f"training_report: {e.msg}", file=sys.stderr)
        return 2
    print(f"{STEPS} steps, batch {BATCH}, real CIFAR-10, tutorial model")
    print(f"{'recipe':<9} {'dtype':<8} {'worst loss (rel)':>17} {'at step':>8} {'tol':>7}  {'worst parameter':<26} {'scaled':>9} {'tol':>7}")
    ok = True
    for recipe in ("tutorial", "default"):
        for dtype in ("float32", "float64"):
            config, _, (tm, tp), (jm, jp) = _runs(recipe, dtype, batches)
            t, j = np.array([m["loss"] for m in tm]), np.array([m["loss"] for m in jm])
            rel = np.abs(j - t) / np.abs(t)
            diffs = compare(_without_key_bias(tp, config.width), _without_key_bias(jp, config.width), PARAM_TOL[dtype])
            worst = max(diffs, key=lambda d: d.scaled)
            ok &= rel.max() <= LOSS_TOL[dtype] and all(d.ok for d in diffs)
            print(f"{recipe:<9} {dtype:<8} {rel.max():>17.2e} {int(rel.argmax()):>8} {LOSS_TOL[dtype]:>7.0e}  "
                  f"{worst.name:<26} {worst.scaled:>9.2e} {PARAM_TOL[dtype]:>7.0e}", flush=True)
    print("all within tolerance" if ok else "SOME DIFFERENCES PAST TOLERANCE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
