"""The PyTorch twin as ONNX, through torch.onnx's dynamo exporter: opset ONNX_OPSET, a dynamic batch. `vit export
--to onnx` writes it once twins.exports has checked it against both twins; jax_vit.export is the StableHLO twin."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from torch_vit.weights import load
from vit_spec.inputs import EXPORT_INPUT_DOC, ExportError

ONNX_OPSET = 18


def export_onnx(path: str | Path, out: Path) -> dict[str, str]:
    """Writes the PyTorch twin as ONNX (opset ONNX_OPSET, dynamic batch) to `out`; returns what the file records."""
    import onnx

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
        "input": EXPORT_INPUT_DOC.format(layout="NCHW", dims=f"{config.channels}, {h}, {w}"),
        "output": f"logits (batch, {config.num_classes or config.features_dim})",
    }
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(out))
    return {"opset": str(ONNX_OPSET), **meta}


def run_onnx(out: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The ONNX file in onnxruntime (CPU) as normalised NHWC float32 -> logits."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return lambda x: session.run(["logits"], {"images": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
