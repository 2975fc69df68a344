"""Multi-head attention for the fused (tokens, 3, heads, head_dim) q/k/v projection, with a hand-written gradient.

Why not `jax.nn.dot_product_attention`: its XLA path works in (B, T, heads, head_dim) order through
vmap, and XLA:CPU materialises (B, heads, T, T) broadcasts for its softmax and gradient; on the CPU
that made attention ~60% of a training step. Here the math is the same (softmax(q k^T * scale) v, the
softmax with its row maximum subtracted) but laid out for the matmul kernels: heads move next to the
batch once, every matmul is a (batch, M, K) x (batch, K, N) product or the transposed-output form
that XLA:CPU runs as fast (measured in BENCHMARKS.md), and the backward pass is written out
(flash-attention's form: dS = P * (dP - rowsum(dO * O))) so that autodiff adds no broadcasts.

On GPUs with bfloat16/float16 compute, cuDNN's fused flash attention is used where it supports the
shapes (JAX's own `implementation=None` still means XLA); everywhere else this XLA formulation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _softmax_dtype(dtype: jnp.dtype) -> jnp.dtype:
    # Softmax in at least float32, also under bfloat16 compute; float64 stays float64 (parity).
    return jnp.promote_types(dtype, jnp.float32)


def _split_heads(qkv: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(B, T, 3, H, Dh) -> q, k, v as (B, H, T, Dh): one transposing copy for all three."""
    q, k, v = jnp.transpose(qkv, (2, 0, 3, 1, 4))
    return q, k, v


def _forward(qkv: jax.Array, scale: float) -> tuple[jax.Array, tuple]:
    q, k, v = _split_heads(qkv)
    # Scale q, not the (T, T) scores: XLA:CPU would materialise the scalar as a (B, H, T, T) operand.
    q = q * jnp.asarray(scale, q.dtype)
    acc = _softmax_dtype(qkv.dtype)
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=acc)
    e = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
    probs = e * (1.0 / jnp.sum(e, axis=-1, keepdims=True))
    out = jnp.einsum("bhqk,bhkd->bhqd", probs.astype(v.dtype), v)
    out = jnp.transpose(out, (0, 2, 1, 3))  # (B, T, H, Dh): heads back beside their features
    return out, (q, k, v, probs, out)


def _backward(scale: float, residuals: tuple, grad_out: jax.Array) -> tuple[jax.Array]:
    q, k, v, probs, out = residuals
    acc = probs.dtype
    g = jnp.transpose(grad_out, (0, 2, 1, 3))  # (B, H, T, Dh)
    # dV^T = dO^T P and dK^T = Q^T dS: XLA:CPU runs (Dh x T) @ (T x T) products several times faster
    # than the P^T dO form, whose contraction runs over the rows of both operands.
    g_t = jnp.swapaxes(g, -1, -2)
    dv_t = jnp.einsum("bhdq,bhqk->bhdk", g_t, probs.astype(g.dtype))
    dprobs = jnp.einsum("bhqd,bhkd->bhqk", g, v, preferred_element_type=acc)
    # rowsum(dP * P) = rowsum(dO * O): a reduction over head_dim instead of over T.
    delta = jnp.sum(grad_out.astype(acc) * out.astype(acc), axis=-1)  # (B, T, H)
    dscores = (probs * (dprobs - jnp.transpose(delta, (0, 2, 1))[..., None])).astype(q.dtype)
    # q was scaled in the forward pass (see there): dq takes the scale, dk already has it through q.
    dq = jnp.einsum("bhqk,bhkd->bhqd", dscores, k) * jnp.asarray(scale, q.dtype)
    dk_t = jnp.einsum("bhdq,bhqk->bhdk", jnp.swapaxes(q, -1, -2), dscores)
    # The barrier keeps XLA from folding the transposes below back into these products, which would
    # turn them into the slow P^T dO form again.
    dq, dk_t, dv_t = jax.lax.optimization_barrier((dq, dk_t, dv_t))
    # Back to the packed (B, T, 3, H, Dh) layout of the q/k/v projection.
    dqkv = jnp.stack([dq, jnp.swapaxes(dk_t, -1, -2), jnp.swapaxes(dv_t, -1, -2)])  # (3, B, H, T, Dh)
    return (jnp.transpose(dqkv, (1, 3, 0, 2, 4)),)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _xla_attention(qkv: jax.Array, scale: float) -> jax.Array:
    return _forward(qkv, scale)[0]


_xla_attention.defvjp(_forward, _backward)


def _cudnn_attention(qkv: jax.Array, scale: float) -> jax.Array | None:
    """cuDNN's fused attention on (B, T, H, Dh), or None where this backend, dtype or shape has none."""
    if qkv.dtype not in (jnp.bfloat16, jnp.float16) or jax.default_backend() != "gpu":
        return None
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    try:
        return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation="cudnn")
    except (NotImplementedError, ValueError, RuntimeError):  # unsupported head_dim, GPU or cuDNN version
        return None


def packed_attention(qkv: jax.Array, scale: float) -> jax.Array:
    """softmax(q k^T * scale) v for each head, from the packed projection.

    Args:
        qkv: (B, T, 3, heads, head_dim): the q/k/v projection reshaped as timm lays out its features.
        scale: the score scale, head_dim ** -0.5 for a standard ViT.

    Returns:
        (B, T, heads, head_dim) attention output, in qkv's dtype.
    """
    fused = _cudnn_attention(qkv, scale)
    return fused if fused is not None else _xla_attention(qkv, scale)
