"""Prints the worst twin difference of every config of the parity suite: `python -m parity_tests.report`.

Options: config names to run (default: all), e.g. `python -m parity_tests.report tutorial B/16`.
"""

from __future__ import annotations

import sys
import time

from parity_tests.matrix import CONFIGS, DTYPES, parity_run


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        print(f"unknown configs {unknown}; known: {list(CONFIGS)}", file=sys.stderr)
        return 2
    print(f"{'config':<32} {'dtype':<8} {'worst forward tensor':<26} {'scaled':>9}  {'worst gradient':<26} {'scaled':>9}  {'s':>5}")
    ok = True
    for name in names or list(CONFIGS):
        for dtype in DTYPES:
            start = time.perf_counter()
            report = parity_run(name, dtype)
            fwd = max(report.forward, key=lambda d: d.scaled)
            grad = max(report.gradients, key=lambda d: d.scaled)
            ok &= report.ok
            print(
                f"{name:<32} {dtype:<8} {fwd.name:<26} {fwd.scaled:>9.2e}  {grad.name:<26} {grad.scaled:>9.2e}  "
                f"{time.perf_counter() - start:>5.1f}",
                flush=True,
            )
    print("all within tolerance" if ok else "SOME DIFFERENCES PAST TOLERANCE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
