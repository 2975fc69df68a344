"""Prints how closely each export computes the twins' logits: `python -m parity_tests.export_report [--images FILE ...]`.

For each config of test_export_roundtrip.py and each format: the worst scaled difference of `vit export`'s own
check (random images at batches 1 and 3, and the given image files, against both twins), and where it was.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from parity_tests.matrix import CONFIGS
from parity_tests.test_export_roundtrip import NAMES
from twins import exports as export
from vit_spec import random_weights, save_weights
from vit_spec.image_files import read_images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", nargs="*", default=[], help="image files to check on too")
    args = parser.parse_args()
    # Unreadable images are the caller's mistake, not an export's: say so once, before any export runs.
    _, _, errors = read_images(args.images, CONFIGS[NAMES[0]][0]) if args.images else (None, None, [])
    if errors:
        parser.error("cannot read --images: " + "; ".join(errors))
    print(f"{'config':<32} {'format':<10} {'worst scaled':>13} {'on':<18} {'vs':<6} {'tol':>6}")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name in NAMES:
            config, _ = CONFIGS[name]
            weights = Path(tmp) / "model.safetensors"
            save_weights(weights, config, random_weights(config, seed=0))
            for to in ("onnx", "stablehlo"):
                try:
                    _, checks = export.export(weights, to, Path(tmp) / f"m.{to}", args.images, platforms=("cpu",))
                except export.ExportError as e:
                    print(f"{name:<32} {to:<10} FAILED: {e}", flush=True)
                    ok = False
                    continue
                worst = max(checks, key=lambda c: c.scaled)
                print(f"{name:<32} {to:<10} {worst.scaled:>13.2e} {worst.inputs:<18} {worst.twin:<6} {export.TOL:>6.0e}", flush=True)
    print("all within tolerance" if ok else "SOME EXPORTS FAILED (see above): past tolerance or not exported")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
