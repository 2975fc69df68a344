"""The JAX twin as StableHLO, through jax.export: the weights as constants, a symbolic batch. `vit export --to
stablehlo` writes it once twins.exports has checked it against both twins; torch_vit.export is the ONNX twin."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_vit.inference import matmul_precision
from jax_vit.model import ViT
from jax_vit.weights import load
from vit_spec.inputs import EXPORT_INPUT_DOC


def export_stablehlo(path: str | Path, out: Path, platforms: Sequence[str]) -> tuple[dict[str, str], bytes]:
    """The JAX twin through jax.export (weights as constants, symbolic batch): (what it records, StableHLO bytecode).

    `out` gets `Exported.serialize()` (StableHLO with jax's calling convention: reload with
    jax.export.deserialize); the bytecode alone is returned for runtimes without JAX.
    """
    config, params = load(path)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    model = ViT(config)
    h, w = config.image_hw
    (batch,) = jax.export.symbolic_shape("batch")
    # Exact float32 matmuls are part of the program (no TF32 on GPUs), so the file computes what the check saw.
    with matmul_precision("float32"):
        exported = jax.export.export(jax.jit(lambda x: model.apply({"params": params}, x)), platforms=list(platforms))(
            jax.ShapeDtypeStruct((batch, h, w, config.channels), jnp.float32)
        )
    out.write_bytes(exported.serialize())
    meta = {
        "calling_convention_version": str(exported.calling_convention_version),
        "platforms": ", ".join(exported.platforms),
        "in": str(exported.in_avals[0]),
        "out": str(exported.out_avals[0]),
        "input": EXPORT_INPUT_DOC.format(layout="NHWC", dims=f"{h}, {w}, {config.channels}"),
        "vit_config": config.to_json(),
    }
    return meta, exported.mlir_module_serialized


def run_stablehlo(out: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The exported file reloaded (jax.export.deserialize) as normalised NHWC float32 -> logits."""
    exported = jax.export.deserialize(bytearray(out.read_bytes()))
    return lambda x: np.asarray(exported.call(x))
