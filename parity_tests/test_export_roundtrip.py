"""Round trips through both exports: the ONNX file in onnxruntime and the StableHLO artifact reloaded by
jax.export compute the twins' logits, to 1e-5 scaled, for every config of the parity matrix (mean pooling,
sin-cos, pre-logits, non-square, one channel without a head) and at batch sizes the export never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jax_vit.export import run_stablehlo
from parity_tests.matrix import CONFIGS, FEATURE_CONFIGS, config_params
from torch_vit.export import run_onnx
from twins import exports as export
from twins.differences import scaled_difference
from vit_spec import random_weights, save_weights

pytest.importorskip("onnxruntime", reason="vit export --to onnx is checked in onnxruntime: pip install 'vit-twins[export]'")

# B/16 exports like Ti/16 at six times the cost; batch 1 is covered by the check batches. Of timm's architecture
# features: MAP pooling, the distilled model's two heads, registers with layer scale (and a patch-only position table,
# a packed SwiGLU); the others are the same ops in other places. A pool="none" model has no output to export.
FEATURE_NAMES = ["siglip_like", "deit_distilled", "dinov2_like"]
NAMES = [n for n in CONFIGS if n not in ("B/16", "tutorial_batch1") and n not in FEATURE_CONFIGS] + FEATURE_NAMES


def fresh_inputs(config, batch: int = 5) -> np.ndarray:
    """Normalised-looking NHWC float32 inputs, not the uint8 pictures the command checked on."""
    h, w = config.image_hw
    return np.random.default_rng(7).standard_normal((batch, h, w, config.channels)).astype(np.float32)


@pytest.mark.parametrize("to", ["onnx", "stablehlo"])
@pytest.mark.parametrize("name", config_params(NAMES))
def test_export_round_trip(name, to, tmp_path):
    config, _ = CONFIGS[name]
    weights = tmp_path / "model.safetensors"
    save_weights(weights, config, random_weights(config, seed=0))
    out = tmp_path / ("model.onnx" if to == "onnx" else "model.jax")
    meta, checks = export.export(weights, to, out, platforms=("cpu",))
    worst = max(checks, key=lambda c: c.scaled)
    assert worst.scaled <= export.TOL, f"{name} -> {to}: {worst}"
    assert {c.twin for c in checks} == {"jax", "torch"} and {c.inputs for c in checks} == {"random (batch 1)", "random (batch 3)"}

    # Independently of the command's own check: reload the file and compare at batch 5.
    x = fresh_inputs(config)
    run = run_onnx(out) if to == "onnx" else run_stablehlo(out)
    got = np.asarray(run(x))
    import torch

    from torch_vit import load

    with torch.no_grad():
        ref = load(weights).eval()(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    _, scaled = scaled_difference(got, ref)
    assert got.shape == ref.shape == (5, config.num_classes or config.features_dim)
    assert scaled <= export.TOL, f"{name} -> {to}: reloaded logits differ from PyTorch's by {scaled:.2e} (scaled) at batch 5"
    if to == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        assert props["vit_config"] == config.to_json() and "NCHW" in props["input"]
    else:
        assert Path(str(out) + ".mlirbc").stat().st_size > 0
        assert meta["in"].startswith("float32[batch,")


def test_a_model_that_returns_every_token_is_refused_naming_why(tmp_path):
    config, _ = CONFIGS["tokens_out_sincos_registers"]
    weights = tmp_path / "model.safetensors"
    save_weights(weights, config, random_weights(config, seed=0))
    with pytest.raises(ValueError, match="pool='none' model: it returns every token, not logits or a pooled feature"):
        export.export(weights, "onnx", tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()
