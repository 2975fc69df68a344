"""Accuracy of the JAX model: sharded inside training, and for a weights file (`vit eval`; train.torch_loop.evaluate
is the PyTorch side)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jax_vit import ViT
from train.data import Split
from train.jax_loop import sharding
from train.jax_loop.augment import normalize


def make_eval_step(model: ViT, mesh: Mesh, params_sharding: Any = None) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """Jitted `(params, images_u8, labels, valid) -> (correct, loss_sum)` summed over the valid rows; the
    parameters where `params_sharding` says (None: replicated), the batch sliced over data x fsdp."""
    cfg = model.config

    def step(params: Any, images: jax.Array, labels: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = model.apply({"params": params}, normalize(images, cfg.image_mean, cfg.image_std)).astype(jnp.float32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        correct = (jnp.argmax(logits, -1) == labels) & valid
        return jnp.sum(correct), jnp.sum(jnp.where(valid, loss, 0.0))

    repl, batch = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    params_in = repl if params_sharding is None else params_sharding
    return jax.jit(sharding.under_mesh(step, mesh), in_shardings=(params_in, batch, batch, batch), out_shardings=(repl, repl))


def evaluate(eval_step: Callable[..., Any], params: Any, split: Split, mesh: Mesh, batch_size: int = 1000) -> dict[str, float]:
    """{"accuracy", "loss"} over the whole split; the last batch is padded and masked."""
    n = len(split)
    devices, pcount, pindex = mesh.devices.size, jax.process_count(), jax.process_index()
    gb = -(-batch_size // devices) * devices
    per = gb // pcount
    correct, loss = 0, 0.0
    totals = []
    for start in range(0, n, gb):
        idx = np.arange(start, start + gb)[pindex * per : (pindex + 1) * per]
        valid = idx < n
        idx = np.minimum(idx, n - 1)
        images, labels, valid = sharding.global_batch(mesh, split.images[idx], split.labels[idx], valid)
        totals.append(eval_step(params, images, labels, valid))
    for c, l in sharding.to_host(totals):
        correct, loss = correct + int(c), loss + float(l)
    return {"accuracy": correct / n, "loss": loss / n}


def jax_logits(path: str | Path, split: Split, batch_size: int = 500) -> np.ndarray:
    """Logits of the weights file on the split, computed by the Flax model (float32)."""
    import jax_vit

    config, params = jax_vit.load(path)
    model = ViT(config)
    forward = jax.jit(lambda p, x: model.apply({"params": p}, normalize(x, config.image_mean, config.image_std)))
    params = jax.device_put(params)
    out = [np.asarray(forward(params, split.images[i : i + batch_size])) for i in range(0, len(split), batch_size)]
    return np.concatenate(out).astype(np.float32)
