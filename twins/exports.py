"""`vit export`: an ONNX (jax_vit's twin, torch_vit.export) or StableHLO (jax_vit.export) file, checked against
both twins before it is written: random images at two batch sizes (the dynamic batch) and real pictures."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from twins.differences import scaled_difference
from twins.frameworks import FRAMEWORKS, installed, twin_module
from vit_spec import ViTConfig
from vit_spec.image_files import normalise, read_images
from vit_spec.inputs import ExportError

TOL = 1e-5  # the largest |export - twin|, scaled by the twin's largest |logit|
FORMATS = ("onnx", "stablehlo")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export lowers for


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
    # A twin that is not installed is left out (a StableHLO export needs no torch); the caller says so.
    twins = {framework: twin_module(framework, "inference") for framework in FRAMEWORKS if installed(framework)}
    checks = []
    for name, images in check_batches(config, image_files):
        x = normalise(images, config)
        out = np.asarray(run_export(x))
        for twin, inference in twins.items():
            ref = inference.logits(config, weights, x)
            if out.shape != ref.shape:
                raise ExportError(f"the export gives logits of shape {out.shape} on {name}, the {twin} twin {ref.shape}")
            checks.append(Check(name, twin, *scaled_difference(out, ref)))
    return checks


def parse_platforms(text: str) -> list[str]:
    """`--platforms cpu,cuda` as a list, each one jax.export lowers for."""
    platforms = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(platforms) - set(PLATFORMS))
    if unknown or not platforms:
        raise ExportError(f"--platforms {text!r}: use a comma-separated subset of {', '.join(PLATFORMS)}")
    return platforms


def export(path: str | Path, to: str, out: str | Path, image_files: Sequence[str] = (),
           platforms: Sequence[str] = ("cpu", "cuda", "tpu")) -> tuple[dict[str, str], list[Check]]:
    """Exports, checks, and only then writes `out` (and for StableHLO `out`.mlirbc); nothing is left on failure."""
    from vit_spec import load_weights
    from vit_spec.weights_file import atomic_path

    config, weights = load_weights(path)  # names bad tensors before any framework loads them
    if config.pool == "none":
        raise ExportError(f"{path} is a pool='none' model: it returns every token, not logits or a pooled feature, so "
                          "there is no output to export and check; `vit features` gives its tokens")
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"{out} is a directory: give the file to write, e.g. {out / 'model'}.{'onnx' if to == 'onnx' else 'jax'}")
    with atomic_path(out) as tmp:
        if to == "onnx":
            exporter = twin_module("torch", "export")
            meta = exporter.export_onnx(path, tmp)
            checks = run_checks(config, weights, exporter.run_onnx(tmp), image_files)
            bytecode = None
        else:
            exporter = twin_module("jax", "export")
            meta, bytecode = exporter.export_stablehlo(path, tmp, platforms)
            checks = run_checks(config, weights, exporter.run_stablehlo(tmp), image_files)
        worst = max(checks, key=lambda c: c.scaled)
        if not worst.scaled <= TOL:
            raise ExportError(f"the {to} export's logits differ from the twins' past tolerance, so it was not written: "
                              f"worst {worst}")
        if bytecode is not None:
            with atomic_path(out.with_name(out.name + ".mlirbc")) as side:
                side.write_bytes(bytecode)
    return meta, checks
