"""`vit export`: a weights file as a model that runs without this project: ONNX (through the PyTorch twin)
or StableHLO (through jax.export), each checked against both twins before it is written."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from vit_spec import ViTConfig
from vit_spec.image_files import normalise, read_images

ONNX_OPSET = 18
TOL = 1e-5  # the largest |export - twin|, scaled by the twin's largest |logit|
# The model's input, as both formats take it: the twins' own layout, already normalised.
INPUT_DOC = "float32 images, {layout} (batch, {dims}), normalised as (pixels / 255 - image_mean) / image_std"


class ExportError(ValueError):
    """An export that failed its check, or that cannot be made."""


@dataclasses.dataclass
class Check:
    """How far an exported model's logits are from a twin's, on one batch."""

    inputs: str  # "random (batch 3)", "2 image files", ...
    twin: str
    max_abs: float
    scaled: float

    def __str__(self) -> str:
        return (f"{self.inputs:<22} vs {self.twin:<8} max |export - twin| {self.max_abs:.2e}, "
                f"scaled {self.scaled:.2e} (tolerance {TOL:.0e})")


def scaled_difference(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max |out - ref|, that divided by max |ref|), as the parity suite scales."""
    max_abs = float(np.abs(out.astype(np.float64) - ref).max()) if out.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return max_abs, (max_abs / scale if scale > 0 else max_abs)




def check_batches(config: ViTConfig, image_files: Sequence[str], seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """The batches an export is checked on: random images at two batch sizes (the dynamic batch), and the
    given image files (real pictures)."""
    h, w = config.image_hw
    rng = np.random.default_rng(seed)
    batches = [(f"random (batch {n})", rng.integers(0, 256, (n, h, w, config.channels), dtype=np.uint8)) for n in (1, 3)]
    if image_files:
        images, read, errors = read_images(list(image_files), config)
        if errors:
            raise ExportError("cannot check the export on --images: " + "; ".join(errors))
        batches.append((f"{len(read)} image file{'s' * (len(read) != 1)}", images))
    return batches


def run_checks(
    config: ViTConfig, weights: Mapping[str, np.ndarray], run_export: Callable[[np.ndarray], np.ndarray],
    image_files: Sequence[str],
) -> list[Check]:
    """Compares `run_export` (normalised NHWC float32 -> logits) with both twins on every check batch."""
    from vit_cli.predict import jax_logits, torch_logits

    checks = []
    for name, images in check_batches(config, image_files):
        x = normalise(images, config)
        out = np.asarray(run_export(x))
        for twin, ref in (("jax", jax_logits(config, weights, x)), ("torch", torch_logits(config, weights, x))):
            if out.shape != ref.shape:
                raise ExportError(f"the export gives logits of shape {out.shape} on {name}, the {twin} twin {ref.shape}")
            checks.append(Check(name, twin, *scaled_difference(out, ref)))
    return checks


def export_onnx(path: str | Path, out: Path) -> dict[str, str]:
    """Writes the PyTorch twin as ONNX (opset ONNX_OPSET, dynamic batch) to `out`; returns what the file records."""
    import onnx
    import torch

    from torch_vit import load

    model = load(path).float().eval()
    config = model.config
    h, w = config.image_hw
    example = torch.zeros(2, config.channels, h, w)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        model, (example,), input_names=["images"], output_names=["logits"], dynamic_shapes={"images": {0: batch}},
        opset_version=ONNX_OPSET, dynamo=True, verbose=False,
    )
    if program is None:
        raise ExportError("torch.onnx.export returned no program (torch too old for the dynamo exporter: use torch >= 2.6)")
    program.save(str(out))
    proto = onnx.load(str(out))
    meta = {
        "vit_config": config.to_json(),
        "input": INPUT_DOC.format(layout="NCHW", dims=f"{config.channels}, {h}, {w}"),
        "output": f"logits (batch, {config.num_classes or config.features_dim})",
    }
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(out))
    return {"opset": str(ONNX_OPSET), **meta}


def run_onnx(out: Path) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return lambda x: session.run(["logits"], {"images": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]


def export_stablehlo(path: str | Path, out: Path, platforms: Sequence[str]) -> tuple[dict[str, str], bytes]:
    """The JAX twin through jax.export (weights as constants, symbolic batch): (what it records, StableHLO bytecode).

    `out` gets `Exported.serialize()` (StableHLO with jax's calling convention: reload with
    jax.export.deserialize); the bytecode alone is returned for runtimes without JAX.
    """
    import jax
    import jax.numpy as jnp

    from jax_vit import ViT, load
    from vit_cli.parity import jax_precision

    config, params = load(path)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    model = ViT(config)
    h, w = config.image_hw
    (batch,) = jax.export.symbolic_shape("batch")
    # Exact float32 matmuls are part of the program (no TF32 on GPUs), so the file computes what the check saw.
    with jax_precision("float32"):
        exported = jax.export.export(jax.jit(lambda x: model.apply({"params": params}, x)), platforms=list(platforms))(
            jax.ShapeDtypeStruct((batch, h, w, config.channels), jnp.float32)
        )
    out.write_bytes(exported.serialize())
    meta = {
        "calling_convention_version": str(exported.calling_convention_version),
        "platforms": ", ".join(exported.platforms),
        "in": str(exported.in_avals[0]),
        "out": str(exported.out_avals[0]),
        "input": INPUT_DOC.format(layout="NHWC", dims=f"{h}, {w}, {config.channels}"),
        "vit_config": config.to_json(),
    }
    return meta, exported.mlir_module_serialized


def run_stablehlo(out: Path) -> Callable[[np.ndarray], np.ndarray]:
    import jax

    exported = jax.export.deserialize(bytearray(out.read_bytes()))
    return lambda x: np.asarray(exported.call(x))


def export(path: str | Path, to: str, out: str | Path, image_files: Sequence[str] = (),
           platforms: Sequence[str] = ("cpu", "cuda", "tpu")) -> tuple[dict[str, str], list[Check]]:
    """Exports, checks, and only then writes `out` (and for StableHLO `out`.mlirbc); nothing is left on failure."""
    from vit_spec import load_weights
    from vit_spec.weights_file import atomic_path

    config, weights = load_weights(path)  # names bad tensors before any framework loads them
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"{out} is a directory: give the file to write, e.g. {out / 'model'}.{'onnx' if to == 'onnx' else 'jax'}")
    with atomic_path(out) as tmp:
        if to == "onnx":
            meta = export_onnx(path, tmp)
            checks = run_checks(config, weights, run_onnx(tmp), image_files)
            bytecode = None
        else:
            meta, bytecode = export_stablehlo(path, tmp, platforms)
            checks = run_checks(config, weights, run_stablehlo(tmp), image_files)
        worst = max(checks, key=lambda c: c.scaled)
        if not worst.scaled <= TOL:
            raise ExportError(f"the {to} export's logits differ from the twins' past tolerance, so it was not written: "
                              f"worst {worst}")
        if bytecode is not None:
            with atomic_path(out.with_name(out.name + ".mlirbc")) as side:
                side.write_bytes(bytecode)
    return meta, checks


def _run(args: argparse.Namespace) -> int:
    if args.to == "stablehlo":
        platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
        unknown = sorted(set(platforms) - {"cpu", "cuda", "rocm", "tpu"})
        if unknown or not platforms:
            raise ExportError(f"--platforms {args.platforms!r}: use a comma-separated subset of cpu, cuda, rocm, tpu")
    else:
        platforms = []
    meta, checks = export(args.weights, args.to, args.out, args.images, platforms)
    for key in ("opset", "calling_convention_version", "platforms", "in", "out", "input", "output"):
        if key in meta:
            print(f"{key}: {meta[key]}")
    for check in checks:
        print(check)
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
    p.add_argument("--to", required=True, choices=("onnx", "stablehlo"), help="the format")
    p.add_argument("out", help="the file to write (e.g. model.onnx, model.jax)")
    p.add_argument("--images", nargs="+", default=[], metavar="FILE", help="real images (PNG/JPEG) to check the export on too")
    p.add_argument("--platforms", default="cpu,cuda,tpu",
                   help="StableHLO: the platforms to lower for, comma-separated; the check runs on this machine's (default: cpu,cuda,tpu)")
    p.set_defaults(run=_run)
