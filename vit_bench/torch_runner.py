"""The PyTorch side of `vit bench`: what it times of PyTorch, and what it reports of it.

- `TorchRunner`: PyTorch eager or torch.compile, the training step (AdamW) or inference of one row and dtype;
- `matmul`: a square matmul, for the matmul peak;
- `machine_info`, `set_threads`, `match_jax_float32_matmuls`: PyTorch's device, threads and precision;
- `inference_functions`, `onnxruntime_functions`: the eager or compiled forward, and the ONNX export
  (torch_vit.export) run in onnxruntime, of the inference section (`vit bench --inference`).

This module imports PyTorch only, never JAX; vit_bench.measure and vit_bench.inference reach it by name
(vit_bench.jax_runner is its JAX twin). PyTorch itself is imported inside the functions, so that
importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vit_spec import ViTConfig


def _device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TorchRunner:
    """PyTorch eager or torch.compile: the training step (AdamW) or inference of one row and dtype.

    AdamW's settings (`lr`, `betas`, `eps`, `weight_decay`) are vit_bench.measure's, the same as JAX's;
    weight decay leaves biases, norms and the parameters named in `no_decay_names` alone.
    """

    def __init__(
        self, config: ViTConfig, dtype: str, task: str, images_nchw: np.ndarray, labels: np.ndarray, compile: bool, *,
        lr: float, betas: tuple[float, float], eps: float, weight_decay: float, no_decay_names: tuple[str, ...],
    ):
        import torch
        import torch.nn.functional as F

        import torch_vit

        self.torch = torch
        self.device = _device()
        torch.manual_seed(0)
        model = torch_vit.ViT(config).to(self.device)
        images = torch.from_numpy(images_nchw).to(self.device)
        labels_t = torch.from_numpy(labels.astype(np.int64)).to(self.device)
        autocast = (
            (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16))
            if dtype == "bfloat16"
            else contextlib.nullcontext
        )
        if compile:
            # A fresh dynamo cache: compiles of earlier rows would otherwise count towards its
            # recompile limit, past which torch.compile silently falls back to eager.
            torch._dynamo.reset()
            forward: Callable = torch.compile(model)
        else:
            forward = model
        if task == "train":
            model.train()  # dropout rates are 0: the same computation as eval, as in JAX's train=True
            decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n not in no_decay_names]
            no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and n not in no_decay_names)]
            opt = torch.optim.AdamW(
                [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                lr=lr, betas=betas, eps=eps,
            )

            def run() -> None:
                with autocast():
                    logits = forward(images)
                loss = F.cross_entropy(logits.float(), labels_t)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

        else:
            model.eval()

            def run() -> None:
                with torch.inference_mode(), autocast():
                    forward(images)

        self._run = run
        self.compile_s: float | None = None
        if compile:
            # torch.compile compiles on the first call (the backward at the first backward): time it.
            start = time.perf_counter()
            self.steps(1)
            self.compile_s = time.perf_counter() - start

    def steps(self, k: int) -> None:
        for _ in range(k):
            self._run()
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()


def on_cpu() -> bool:
    """Whether PyTorch runs on the CPU (no CUDA device)."""
    return _device().type == "cpu"


def matmul(a: np.ndarray, b: np.ndarray, dtype: str) -> Callable[[], None]:
    """`a @ b` in `dtype` ("float32" or "bfloat16") on PyTorch's device: each call runs it and waits."""
    import torch

    device = _device()
    tdtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    ta, tb = (torch.from_numpy(x).to(device, tdtype) for x in (a, b))

    def once() -> None:
        torch.matmul(ta, tb)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return once


def machine_info() -> dict[str, Any]:
    """PyTorch's device, intra-op and inter-op threads, and version."""
    import torch

    return {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "version": torch.__version__,
    }


def set_threads(n: int) -> None:
    """PyTorch's intra-op threads: the benchmarks give it one per core, as XLA's CPU backend uses."""
    import torch

    torch.set_num_threads(n)


def match_jax_float32_matmuls() -> None:
    """On a GPU, float32 matmuls in TF32 as JAX's default on NVIDIA GPUs; nothing on the CPU."""
    import torch

    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")


def inference_functions(
    config: ViTConfig, weights: dict[str, np.ndarray], compile: bool = False
) -> tuple[Callable[[np.ndarray], Any], Callable[[Any], np.ndarray]]:
    """(prepare, call) of the forward under `torch.inference_mode()`, eager or torch.compile (inductor,
    `dynamic=False`): prepare makes NHWC float32 images an NCHW tensor, call returns numpy logits."""
    import torch

    from torch_vit import model_from_state_dict

    model = model_from_state_dict(config, weights).eval()
    if compile:
        # A fresh dynamo cache: earlier models' graphs would count towards its recompile limit.
        torch._dynamo.reset()
        forward = torch.compile(model, dynamic=False)
    else:
        forward = model

    def call(x: Any) -> np.ndarray:
        with torch.inference_mode():
            return forward(x).numpy()

    return lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), call


def onnxruntime_functions(path: Path) -> tuple[Callable[[np.ndarray], Any], Callable[[Any], np.ndarray]]:
    """(prepare, call) of the weights file at `path` exported to ONNX (torch_vit.export, as `vit export --to
    onnx` writes it) beside it, run in onnxruntime's CPU provider with default session options."""
    import onnxruntime

    from torch_vit.export import export_onnx

    out = path.with_suffix(".onnx")
    export_onnx(path, out)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return (
        lambda x: np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
        lambda x: session.run(["logits"], {"images": x})[0],
    )
