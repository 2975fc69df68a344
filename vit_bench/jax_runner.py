"""The JAX side of `vit bench`: what it times of JAX, and what it reports of it.

- `JaxRunner`: the jitted training step (`adamw_train_step`, state donated) or forward of one row and
  dtype, compiled and timed apart;
- `matmul`: a compiled square matmul, for the matmul peak;
- `machine_info`: JAX's devices and versions;
- `inference_functions`: the jitted forward of the inference section (`vit bench --inference`).

This module imports JAX only, never PyTorch; vit_bench.measure and vit_bench.inference reach it by name
(vit_bench.torch_runner is its PyTorch twin). JAX itself is imported inside the functions, so that
importing this module costs nothing.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from vit_spec import ViTConfig


def adamw_train_step(model: Any, tx: Any) -> Callable:
    """`(state, images, labels, key) -> (state, loss)`: forward, float32 cross-entropy, backward, optax update.

    The step every JAX measurement of `vit bench` times (the sweep, the ablation, compile time).
    """
    import jax
    import jax.numpy as jnp
    import optax

    def train_step(state: tuple, images: jax.Array, labels: jax.Array, key: jax.Array) -> tuple:
        params, opt_state = state

        def loss_fn(params: Any) -> jax.Array:
            logits = model.apply({"params": params}, images, train=True, rngs={"dropout": key})
            # The loss in float32 also under bfloat16 compute, as in train/jax_loop/step.py.
            return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return train_step


class JaxRunner:
    """The jitted JAX step (train: donated state) or forward (inference) of one row and dtype.

    AdamW's settings (`lr`, `betas`, `eps`, `weight_decay`) are vit_bench.measure's, the same as PyTorch's;
    weight decay leaves biases, norms and train.jax_loop.optim's NO_DECAY_NAMES alone.
    """

    def __init__(
        self, config: ViTConfig, dtype: str, task: str, images_nhwc: np.ndarray, labels: np.ndarray, *,
        lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
    ):
        import jax
        import jax.numpy as jnp
        import optax

        from jax_vit import ViT, init_params
        from train.jax_loop.optim import weight_decay_mask

        self.jax = jax
        device = jax.devices()[0]
        model = ViT(config, dtype=jnp.bfloat16 if dtype == "bfloat16" else None)
        params = jax.device_put(init_params(config, 0), device)
        images = jax.device_put(images_nhwc, device)
        labels = jax.device_put(labels.astype(np.int32), device)
        start = time.perf_counter()
        if task == "train":
            tx = optax.adamw(lr, *betas, eps, weight_decay=weight_decay, mask=weight_decay_mask)
            # Dropout rates are 0 in the benched configs; train=True still needs its rng.
            key = jax.device_put(jax.random.key(0), device)

            train_step = adamw_train_step(model, tx)

            self.state = (params, tx.init(params))
            compiled = jax.jit(train_step, donate_argnums=(0,)).lower(self.state, images, labels, key).compile()
            self.compiled = compiled

            def run() -> Any:
                self.state, loss = compiled(self.state, images, labels, key)
                return loss

        else:
            forward = lambda params, images: model.apply({"params": params}, images)
            compiled = jax.jit(forward).lower(params, images).compile()
            run = lambda: compiled(params, images)
        self.compile_s = time.perf_counter() - start
        self._run = run

    def steps(self, k: int) -> None:
        out = None
        for _ in range(k):
            out = self._run()
        # Dispatch is asynchronous: wait for the last step (each train step waits for the one before).
        self.jax.block_until_ready((out, getattr(self, "state", None)))


def on_cpu() -> bool:
    """Whether JAX's default device is the CPU."""
    import jax

    return jax.devices()[0].platform == "cpu"


def matmul(a: np.ndarray, b: np.ndarray, dtype: str) -> Callable[[], None]:
    """`a @ b` in `dtype` ("float32" or "bfloat16") on JAX's default device, compiled: each call runs it and waits."""
    import jax
    import jax.numpy as jnp

    ja, jb = (jax.device_put(x.astype(jnp.bfloat16 if dtype == "bfloat16" else np.float32)) for x in (a, b))
    compiled = jax.jit(jnp.matmul).lower(ja, jb).compile()

    def once() -> None:
        compiled(ja, jb).block_until_ready()

    return once


def persistent_cache() -> str | None:
    """The directory of JAX's persistent compilation cache where one is on (JAX_COMPILATION_CACHE_DIR): a
    program it already holds is loaded rather than compiled, so compile seconds then measure the load."""
    import jax

    return jax.config.jax_compilation_cache_dir if jax.config.jax_enable_compilation_cache else None


def persistent_cache_note(where: str) -> str:
    """The line for a report whose compile seconds the cache at `where` (persistent_cache()) may have served."""
    return (f"JAX's persistent compilation cache is on ({where}): a program it held was loaded, not compiled; "
            "unset JAX_COMPILATION_CACHE_DIR for compile times")


def machine_info() -> dict[str, Any]:
    """JAX's devices, device kind, persistent compilation cache and the versions of jax, jaxlib, flax and optax."""
    import jax
    import jaxlib

    import flax
    import optax

    return {
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "compilation_cache": persistent_cache(),
        "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
                     "optax": optax.__version__},
    }


def inference_functions(
    config: ViTConfig, weights: dict[str, np.ndarray]
) -> tuple[Callable[[np.ndarray], Any], Callable[[Any], np.ndarray]]:
    """(prepare, call) of the jitted forward: prepare puts NHWC float32 images on the device, call returns
    finished numpy logits. Default matmul precision (exact float32 on CPU)."""
    import jax

    from jax_vit import ViT, params_from_state_dict

    model = ViT(config)
    params = jax.device_put(params_from_state_dict(config, weights))
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x))
    return jax.device_put, lambda x: np.asarray(forward(params, x).block_until_ready())
