"""RMSNorm as timm's RmsNorm computes it: x * rsqrt(mean(x^2) + eps) * weight, a scale and no bias.

Statistics in at least float32, the result in the input's dtype; the parameter is Flax's "scale", as
LayerNorm's, so that jax_vit.weights maps it to timm's "weight" the same way.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class RmsNorm(nn.Module):
    """RMSNorm over the last axis.

    Attributes:
        epsilon: added to the mean square.
        dtype: output dtype (None: the input's). Statistics are computed in at least float32.
        param_dtype: dtype of the scale.
    """

    epsilon: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        acc = jnp.promote_types(dtype, jnp.float32)
        y = x.astype(acc)
        y = y * jax.lax.rsqrt(jnp.mean(y * y, axis=-1, keepdims=True) + self.epsilon)
        return (y * scale.astype(acc)).astype(dtype)
