"""LayerNorm with a closed-form gradient: the same math as `flax.linen.LayerNorm(use_fast_variance=False)`.

Why not Flax's: autodiff through its two-pass variance gives XLA a chain of reductions and broadcasts
for the backward pass; the closed form (as torch and apex compute it) is one fused pass over the
input for dx and one reduction for the scale and bias. Parameter names ("scale", "bias") are Flax's,
so checkpoints do not change.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _statistics(x: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
    """Mean and 1/sqrt(var + eps) over the last axis, with the two-pass variance torch uses."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    centred = x - mean
    return mean, jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """LayerNorm over the last axis. Statistics in at least float32; the result in x's dtype."""
    return _forward(x, scale, bias, eps)[0]


def _forward(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> tuple[jax.Array, tuple]:
    acc = jnp.promote_types(x.dtype, jnp.float32)
    mean, inv_std = _statistics(x.astype(acc), eps)
    y = ((x.astype(acc) - mean) * inv_std * scale.astype(acc) + bias.astype(acc)).astype(x.dtype)
    # The statistics are (..., 1): keeping them spares the backward pass a reduction over x.
    return y, (x, scale, bias, mean, inv_std)


def _backward(eps: float, residuals: tuple, grad_y: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    x, scale, bias, mean, inv_std = residuals
    acc = inv_std.dtype
    # x-hat is recomputed in the fused pass rather than stored: one (B, T, D) tensor less in memory.
    xhat = (x.astype(acc) - mean) * inv_std
    g = grad_y.astype(acc)
    gs = g * scale.astype(acc)
    dx = inv_std * (gs - jnp.mean(gs, axis=-1, keepdims=True) - xhat * jnp.mean(gs * xhat, axis=-1, keepdims=True))
    reduce_axes = tuple(range(x.ndim - 1))
    dscale = jnp.sum(g * xhat, axis=reduce_axes).astype(scale.dtype)
    dbias = jnp.sum(g, axis=reduce_axes).astype(bias.dtype)
    return dx.astype(x.dtype), dscale, dbias


layer_norm.defvjp(_forward, _backward)


class LayerNorm(nn.Module):
    """Drop-in for `nn.LayerNorm(epsilon=eps, use_fast_variance=False, dtype=dtype)`, same parameters.

    Attributes:
        epsilon: added to the variance.
        dtype: output dtype (None: the input's). Statistics are computed in at least float32.
        param_dtype: dtype of scale and bias.
    """

    epsilon: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (d,), self.param_dtype)
        dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        return layer_norm(x.astype(dtype), scale, bias, self.epsilon)
