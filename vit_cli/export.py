"""`vit export`: a weights file as a model that runs without this project: ONNX (through the PyTorch twin)
or StableHLO (through jax.export), each checked against both twins before it is written (twins.exports)."""

from __future__ import annotations

import argparse

from twins.exports import FORMATS, TOL, export, parse_platforms
from twins.frameworks import FRAMEWORKS, install_hint
from vit_cli.output_files import add_overwrite_flag, check_output


def _run(args: argparse.Namespace) -> int:
    check_output(args.out, args.overwrite, "OUT")
    if args.to == "stablehlo":
        check_output(args.out + ".mlirbc", args.overwrite)
    platforms = parse_platforms(args.platforms) if args.to == "stablehlo" else []
    meta, checks = export(args.weights, args.to, args.out, args.images, platforms)
    for key in ("opset", "calling_convention_version", "platforms", "in", "out", "input", "output"):
        if key in meta:
            print(f"{key}: {meta[key]}")
    for check in checks:
        print(check)
    for framework in sorted(set(FRAMEWORKS) - {check.twin for check in checks}):
        print(f"not checked against the {framework} twin: it is not installed ({install_hint(framework)} adds the check)")
    worst = max(checks, key=lambda c: c.scaled)
    print(f"worst difference {worst.scaled:.2e} (scaled) on {worst.inputs} vs {worst.twin}: within {TOL:.0e}")
    wrote = [args.out] + ([args.out + ".mlirbc"] if args.to == "stablehlo" else [])
    print("wrote " + " and ".join(wrote))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a weights file to ONNX (through PyTorch) or StableHLO (through jax.export), checked against both twins",
        description="Exports the model with a dynamic batch axis and its weights inside, runs the export (onnxruntime, or "
        "the reloaded jax.export artifact) on random images at two batch sizes and on --images, and compares its "
        f"logits with both twins'; a difference above {TOL:g} (scaled by the largest logit) fails the command and "
        "writes nothing. ONNX takes NCHW, StableHLO NHWC, both float32 normalised with the weights' image_mean / "
        "image_std. --to stablehlo writes OUT (jax.export's serialization, with its calling convention: "
        "jax.export.deserialize) and OUT.mlirbc (the StableHLO bytecode alone, for runtimes without JAX).",
    )
    p.add_argument("weights", help="a .safetensors weights file of this project")
    p.add_argument("--to", required=True, choices=FORMATS, help="the format")
    p.add_argument("out", help="the file to write (e.g. model.onnx, model.jax)")
    p.add_argument("--images", nargs="+", default=[], metavar="FILE", help="real images (PNG/JPEG) to check the export on too")
    p.add_argument("--platforms", default="cpu,cuda,tpu",
                   help="StableHLO: the platforms to lower for, comma-separated; the check runs on this machine's (default: cpu,cuda,tpu)")
    add_overwrite_flag(p, "OUT (and OUT.mlirbc)")
    p.set_defaults(run=_run)
