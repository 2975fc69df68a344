"""TrainState and the jitted train step: augmentation, loss, optimizer update and metrics in one program.

`make_train_step` runs one step on a batch sent from the host; `make_multi_step` runs K consecutive
steps in one dispatch, gathering each batch on the device from a resident split (train.jax_loop.device_data).
Both compute the same steps: the same function of (state, batch, fold_in(rng, state.step)).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jax_vit import ViT
from train import param_groups
from train.jax_loop import device_data, sharding
from train.jax_loop.augment import AugmentConfig, augment_batch

Batch = tuple[jax.Array, jax.Array]  # uint8 images (B, H, W, C), int32 labels (B,)
Metrics = dict[str, jax.Array]
StepFn = Callable[["TrainState", Batch, jax.Array], tuple["TrainState", Metrics]]


class TrainState(flax.struct.PyTreeNode):
    """What a step changes: the step count, the parameters (float32) and the optimizer state.

    `freeze` (static, train.param_groups.FREEZE_CHOICES; None: everything trains) says which parameters train:
    the optimizer state covers those only, and the step differentiates only with respect to them.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    freeze: str | None = flax.struct.field(pytree_node=False, default=None)

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation, freeze: str | None = None) -> "TrainState":
        trainable, _ = split_trainable(params, freeze)
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(trainable), freeze=freeze)


def split_trainable(params: Any, freeze: str | None) -> tuple[Any, dict[str, Any]]:
    """(trainable, frozen) top-level modules of `params` under `freeze` (train.param_groups.trains on the Flax
    module names, timm's): (params, {}) without it, ({head, head_dist}, the rest) for "backbone"."""
    if freeze is None:
        return params, {}
    trainable = {k: v for k, v in params.items() if param_groups.trains(k, freeze)}
    return trainable, {k: v for k, v in params.items() if k not in trainable}


def _update_fn(model: ViT, tx: optax.GradientTransformation, schedule: optax.Schedule) -> Callable[..., tuple[TrainState, Metrics]]:
    """`(state, x, targets, labels, dropout_key) -> (state, metrics)`: the step after augmentation, on
    normalised images and soft targets."""

    def update(state: TrainState, x: jax.Array, targets: jax.Array, labels: jax.Array, k_dropout: jax.Array) -> tuple[TrainState, Metrics]:
        # Only the trainable parameters are differentiated: the frozen ones enter the loss as constants, so their
        # gradients (and the backward pass beneath the head, under --freeze backbone) are never computed, and they
        # leave the step as they came in, bit for bit.
        trainable, frozen = split_trainable(state.params, state.freeze)

        def loss_fn(trained: Any) -> tuple[jax.Array, jax.Array]:
            params = {**frozen, **trained} if frozen else trained
            logits = model.apply({"params": params}, x, train=True, rngs={"dropout": k_dropout})
            logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))  # float32 loss under bfloat16 compute
            return optax.softmax_cross_entropy(logits, targets).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        updates, opt_state = tx.update(grads, state.opt_state, trainable)
        trained = optax.apply_updates(trainable, updates)
        params = {**frozen, **trained} if frozen else trained
        grad_norm = optax.global_norm(grads)
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
            "lr": jnp.asarray(schedule(state.step), jnp.float32),
            "grad_norm": grad_norm,
            "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm),
        }
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return update


def _step_fn(
    model: ViT, tx: optax.GradientTransformation, schedule: optax.Schedule, augment: AugmentConfig, num_classes: int
) -> StepFn:
    """The (unjitted) train step that make_train_step and make_multi_step compile."""
    update = _update_fn(model, tx, schedule)

    def step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
        images, labels = batch
        key = jax.random.fold_in(rng, state.step)
        k_aug, k_dropout = jax.random.split(key)
        x, targets = augment_batch(k_aug, images, labels, num_classes, augment)
        return update(state, x, targets, labels, k_dropout)

    return step


def make_update_step(model: ViT, tx: optax.GradientTransformation, schedule: optax.Schedule) -> Callable[..., tuple[TrainState, Metrics]]:
    """The jitted step without augmentation: `(state, x, targets, labels, dropout_key) -> (state, metrics)` on
    normalised images and (B, classes) soft targets (the parity suite feeds both twins the same batch)."""
    return jax.jit(_update_fn(model, tx, schedule))


def make_train_step(
    model: ViT,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    augment: AugmentConfig,
    num_classes: int,
    mesh: Mesh | None = None,
    state_sharding: Any = None,
) -> StepFn:
    """The jitted step `(state, (images, labels), rng) -> (state, metrics)`; the state is donated.

    `rng` is the run's key: the step draws from fold_in(rng, state.step), so a step's randomness
    depends on the step alone (resume-safe). Metrics: loss, accuracy (on the unmixed labels),
    lr, grad_norm (of the trainable parameters' gradients), and finite (loss and gradients finite).

    mesh: the batch is sliced over its data x fsdp devices; state_sharding: where the state lives and stays (a
    TrainState of NamedShardings: train.jax_loop.sharding.state_shardings; None: replicated). XLA gathers each
    split parameter where a layer needs it and reduce-scatters its gradient back.
    """
    step = _step_fn(model, tx, schedule, augment, num_classes)
    if mesh is None:
        return jax.jit(step, donate_argnums=(0,))
    step = sharding.under_mesh(step, mesh)
    repl, batch = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    state_in = repl if state_sharding is None else state_sharding
    return jax.jit(
        step,
        in_shardings=(state_in, (batch, batch), repl),
        out_shardings=(state_in, repl),
        donate_argnums=(0,),
    )


def make_multi_step(
    model: ViT,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    augment: AugmentConfig,
    num_classes: int,
    mesh: Mesh | None = None,
    state_sharding: Any = None,
) -> Callable[[TrainState, Batch, jax.Array, jax.Array], tuple[TrainState, Metrics]]:
    """K train steps in one jitted call: `(state, (images, labels), indices, rng) -> (state, metrics)`.

    For small models on fast accelerators, where one step costs less than its Python dispatch and
    its host-to-device batch copy. `(images, labels)` is the whole training split, resident on the
    device (train.jax_loop.device_data.put_split; replicated over the mesh); `indices` (K, B) int32 holds the
    rows of K consecutive global batches (train.data.BatchOrder, the only per-call transfer: 4 bytes
    per example). A `lax.scan` over the K rows gathers each batch on the device and runs the step of
    make_train_step on it, with the same randomness (fold_in(rng, state.step)). Metrics come back
    stacked, (K,) each. One program per K: the trainer keeps K fixed but for the calls that end at
    a log, evaluation or checkpoint step.

    The same steps, not the same XLA program: the scanned step is compiled as a loop body, fused
    otherwise, so K > 1 agrees with K single steps to float32 rounding (K = 1 runs no loop).

    Args:
        model, tx, schedule, augment, num_classes: as make_train_step.
        mesh: where the split is replicated and each gathered batch is sharded (along the batch, as
            make_train_step's input); None: the default device.
        state_sharding: where the state lives, as make_train_step's.
    """
    step = _step_fn(model, tx, schedule, augment, num_classes)
    batch_sharding = None if mesh is None else sharding.batch_sharding(mesh)

    def multi_step(state: TrainState, split: Batch, indices: jax.Array, rng: jax.Array) -> tuple[TrainState, Metrics]:
        images, labels = split

        def one(state: TrainState, rows: jax.Array) -> tuple[TrainState, Metrics]:
            # Every device holds the split and its share of the rows: the gather needs no communication.
            batch = (jnp.take(images, rows, axis=0, mode="clip"), jnp.take(labels, rows, axis=0, mode="clip"))
            if batch_sharding is not None:
                batch = jax.lax.with_sharding_constraint(batch, (batch_sharding, batch_sharding))
            return step(state, batch, rng)

        if indices.shape[0] == 1:
            # No loop for one step: XLA:CPU runs a loop body (even of one trip) ~20% slower than the same
            # step as the whole program.
            state, metrics = one(state, indices[0])
            return state, jax.tree.map(lambda m: m[None], metrics)
        return jax.lax.scan(one, state, indices)

    if mesh is None:
        return jax.jit(multi_step, donate_argnums=(0,))
    multi_step = sharding.under_mesh(multi_step, mesh)
    repl = sharding.replicated(mesh)
    state_in = repl if state_sharding is None else state_sharding
    return jax.jit(
        multi_step,
        in_shardings=(state_in, repl, device_data.rows_sharding(mesh), repl),
        out_shardings=(state_in, repl),
        donate_argnums=(0,),
    )
