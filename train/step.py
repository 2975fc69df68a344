"""TrainState and the jitted train step: augmentation, loss, optimizer update and metrics in one program."""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jax_vit import ViT
from train import sharding
from train.augment import AugmentConfig, augment_batch

Batch = tuple[jax.Array, jax.Array]  # uint8 images (B, H, W, C), int32 labels (B,)
Metrics = dict[str, jax.Array]


class TrainState(flax.struct.PyTreeNode):
    """What a step changes: the step count, the parameters (float32) and the optimizer state."""

    step: jax.Array
    params: Any
    opt_state: Any

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def make_train_step(
    model: ViT,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    augment: AugmentConfig,
    num_classes: int,
    mesh: Mesh | None = None,
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]:
    """The jitted step `(state, (images, labels), rng) -> (state, metrics)`; the state is donated.

    `rng` is the run's key: the step draws from fold_in(rng, state.step), so a step's randomness
    depends on the step alone (resume-safe). Metrics: loss, accuracy (on the unmixed labels),
    lr, grad_norm, and finite (loss and gradients finite).
    """

    def step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
        images, labels = batch
        key = jax.random.fold_in(rng, state.step)
        k_aug, k_dropout = jax.random.split(key)
        x, targets = augment_batch(k_aug, images, labels, num_classes, augment)

        def loss_fn(params: Any) -> tuple[jax.Array, jax.Array]:
            logits = model.apply({"params": params}, x, train=True, rngs={"dropout": k_dropout})
            logits = logits.astype(jnp.float32)  # loss in float32 also under bfloat16 compute
            return optax.softmax_cross_entropy(logits, targets).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.global_norm(grads)
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
            "lr": jnp.asarray(schedule(state.step), jnp.float32),
            "grad_norm": grad_norm,
            "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm),
        }
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    if mesh is None:
        return jax.jit(step, donate_argnums=(0,))
    repl, batch = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    return jax.jit(
        step,
        in_shardings=(repl, (batch, batch), repl),
        out_shardings=(repl, repl),
        donate_argnums=(0,),
    )
