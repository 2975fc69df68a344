"""The JAX twin's side of every comparison: its forward pass with intermediates, gradients, AdamW steps and the
JAX trainer's own update on lockstep inputs. twins.torch_side is its twin, function for function, under the same
names and layouts (timm names, NHWC inputs)."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jax_vit
from jax_vit import ViT, params_from_state_dict, state_dict_from_params
from jax_vit.inference import matmul_precision
from twins.differences import cast, named_intermediates
from twins.lockstep import Batch, lockstep_inputs
from vit_spec import ViTConfig


def _loss(model: ViT, params: Any, images: jax.Array, labels: np.ndarray) -> jax.Array:
    logits = model.apply({"params": params}, images)
    if model.config.num_classes:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return 0.5 * jnp.mean(logits**2)


def _params(config: ViTConfig, state_dict: Mapping[str, np.ndarray], dtype: str) -> Any:
    return jax.tree.map(jax.numpy.asarray, params_from_state_dict(config, cast(state_dict, dtype)))


def forward(config: ViTConfig, state_dict: Mapping[str, np.ndarray], images_nhwc: np.ndarray, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Every compared tensor of the JAX twin: intermediates, and the logits again through fused attention."""
    with matmul_precision(dtype):
        params = _params(config, state_dict, dtype)
        images = jax.numpy.asarray(images_nhwc, dtype)
        model = ViT(config)
        _, inter = jax.jit(lambda p, x: model.apply({"params": p}, x, return_intermediates=True))(params, images)
        out = named_intermediates(inter, config)
        out["logits (fused attention)"] = np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, x))(params, images))
    return out


def gradients(config: ViTConfig, state_dict: Mapping[str, np.ndarray], images_nhwc: np.ndarray, labels: np.ndarray, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Gradients of the mean cross-entropy w.r.t. every parameter (timm names) and the input ("input", NHWC)."""
    model = ViT(config)
    with matmul_precision(dtype):
        params = _params(config, state_dict, dtype)
        images = jax.numpy.asarray(images_nhwc, dtype)
        grad_fn = jax.jit(jax.grad(lambda p, x: _loss(model, p, x, labels), argnums=(0, 1)))
        grad_params, grad_images = grad_fn(params, images)
        grads = state_dict_from_params(config, grad_params)
    if config.pos_embed == "sincos2d":
        del grads["pos_embed"]  # fixed, not a parameter
    grads["input"] = np.asarray(grad_images)
    return grads


def adamw_steps(config: ViTConfig, state_dict: Mapping[str, np.ndarray], images_nhwc: np.ndarray, labels: np.ndarray, steps: int, lr: float, weight_decay: float, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Parameters after `steps` optax.adamw steps on one batch (timm names)."""
    model = ViT(config)
    with matmul_precision(dtype):
        params = _params(config, state_dict, dtype)
        images = jax.numpy.asarray(images_nhwc, dtype)
        tx = optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay)
        opt_state = tx.init(params)

        @jax.jit
        def step(params, opt_state):
            grads = jax.grad(lambda p: _loss(model, p, images, labels))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        for _ in range(steps):
            params, opt_state = step(params, opt_state)
        return state_dict_from_params(config, params)


def lockstep_steps(
    config: ViTConfig, recipe: Any, weights: Mapping[str, np.ndarray], batches: Sequence[Batch],
    steps_per_epoch: int, total_steps: int, dtype: str = "float32",
) -> tuple[list[dict[str, float]], dict[str, np.ndarray]]:
    """The JAX trainer's update (train.jax_loop.step, train.jax_loop.optim) on `batches` (twins.lockstep's
    inputs): per-step metrics and the final parameters (timm names)."""
    from train.jax_loop.optim import make_optimizer
    from train.jax_loop.step import TrainState, make_update_step

    with matmul_precision(dtype):
        params = _params(config, weights, dtype)
        tx, schedule = make_optimizer(recipe, steps_per_epoch, total_steps)
        update = make_update_step(ViT(config), tx, schedule)
        state = TrainState.create(params, tx)
        key = jax.random.key(0)
        metrics = []
        for batch in batches:
            x, targets = lockstep_inputs(batch, recipe.augment, config.num_classes, dtype)
            state, m = update(state, x, targets, np.asarray(batch[1], np.int32), key)
            metrics.append({k: float(v) for k, v in m.items()})
        return metrics, state_dict_from_params(config, jax.device_get(state.params))


def recording_initial_params(store: dict[str, dict[str, np.ndarray]]) -> Callable[[ViTConfig, jax.Array], Any]:
    """The JAX trainer's `initial_params` hook: jax_vit.init_params, its weights kept in store["weights"] (timm
    names) so that the PyTorch run can start from them (`vit compare`)."""

    def initial_params(config: ViTConfig, key: jax.Array) -> Any:
        params = jax_vit.init_params(config, key)
        store["weights"] = jax_vit.state_dict_from_params(config, jax.device_get(params))
        return params

    return initial_params


def weights_of(config: ViTConfig, params: Any) -> dict[str, np.ndarray]:
    """Flax parameters (a finished run's) as the shared layout's numpy arrays (timm names)."""
    return state_dict_from_params(config, params)
