"""Accuracy of the PyTorch model: inside the PyTorch trainer, and for a weights file (`vit eval --framework torch`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import torch_vit
from torch_vit import ViT
from train.data import Split


@torch.no_grad()
def evaluate(model: ViT, images: Any, labels: Any, batch_size: int = 1000) -> dict[str, float]:
    """{"accuracy", "loss"} of the model on uint8 NHWC images (numpy), normalised with its config."""
    cfg = model.config
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    mean = torch.tensor(cfg.image_mean, dtype=dtype, device=device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.image_std, dtype=dtype, device=device).view(1, -1, 1, 1)
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(labels), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device).permute(0, 3, 1, 2)
        y = torch.from_numpy(np.asarray(labels[start : start + batch_size], np.int64)).to(device)
        logits = model((x.to(dtype) / 255.0 - mean) / std).float()
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
    return {"accuracy": correct / len(labels), "loss": loss / len(labels)}


def torch_logits(path: str | Path, split: Split, batch_size: int = 500) -> np.ndarray:
    """Logits of the weights file on the split, computed by the PyTorch model (float32, NCHW)."""
    model = torch_vit.load(path).float().eval()
    cfg = model.config
    mean = torch.tensor(cfg.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(cfg.image_std, dtype=torch.float32).view(1, -1, 1, 1)
    out = []
    with torch.no_grad():
        for i in range(0, len(split), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(split.images[i : i + batch_size])).permute(0, 3, 1, 2)
            out.append(model((x.float() / 255.0 - mean) / std).numpy())
    return np.concatenate(out).astype(np.float32)
