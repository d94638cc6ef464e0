"""BatchNorm with PyTorch's semantics, usable inside ``jax.lax.scan``."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn


def _stats_dtype(dtype: Any) -> Any:
    """float32 for float32 and narrower inputs, float64 for float64."""
    return jnp.promote_types(dtype, jnp.float32)


def _column_sums(a: jnp.ndarray, b: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Sums of ``a`` and ``b`` over every axis but the last, as one reduction of the two stacked.

    On GPUs XLA splits a long reduction into a partial and a final kernel per output; stacking the two
    operands makes the pair one partial and one final kernel instead of one partial and two finals.
    """
    sums = jnp.sum(jnp.stack([a, b], axis=-2), axis=tuple(range(a.ndim - 1)))
    return sums[0], sums[1]


def batch_norm_statistics(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Mean and biased variance over every axis but the last, in float32 (float64 for float64 input).

    One pass over ``x`` (the sums of ``x - k`` and its square in one fused reduction) instead of
    two, with a per-feature shift ``k`` (the first example's value, gradient stopped) so that the
    variance does not cancel when the mean is large: ``var = E[(x-k)^2] - E[x-k]^2`` is exact for any
    constant ``k`` and loses little precision when ``k`` is near the mean.
    """
    x32 = x.astype(_stats_dtype(x.dtype))
    count = x.size // x.shape[-1]
    shift = jax.lax.stop_gradient(x32.reshape(-1, x.shape[-1])[0])
    d = x32 - shift
    sum_d, sum_d2 = _column_sums(d, jnp.square(d))
    mean_d = sum_d / count
    var = jnp.maximum(sum_d2 / count - jnp.square(mean_d), 0.0)
    return mean_d + shift, var


def normalize(
    x: jnp.ndarray,
    mean: jnp.ndarray,
    var: jnp.ndarray,
    scale: jnp.ndarray,
    bias: jnp.ndarray,
    epsilon: float,
    dtype: Any,
) -> jnp.ndarray:
    """``(x - mean) / sqrt(var + epsilon) * scale + bias`` computed in (at least) float32, returned as ``dtype``."""
    f = _stats_dtype(x.dtype)
    inv = jnp.reciprocal(jnp.sqrt(var + epsilon)) * scale.astype(f)
    y = (x.astype(f) - mean) * inv + bias.astype(f)
    return y.astype(dtype)


def _batch_norm_train_forward(
    x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, epsilon: float, dtype: Any
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    mean, var = batch_norm_statistics(x)
    return normalize(x, mean, var, scale, bias, epsilon, dtype), mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(
    x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, epsilon: float, dtype: Any
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Train-mode BatchNorm: ``(normalised x as dtype, batch mean, biased batch variance)``.

    The same function as ``batch_norm_statistics`` then ``normalize``, with a hand-written gradient:
    ``dx = scale / sigma * (dy - mean(dy) - xhat * mean(dy * xhat))`` with both sums in one reduction
    (autodiff of the composition takes more reduction kernels on GPUs). Gradients reaching the returned
    mean and variance are included.
    """
    return _batch_norm_train_forward(x, scale, bias, epsilon, dtype)


def _batch_norm_train_fwd(x, scale, bias, epsilon, dtype):
    y, mean, var = _batch_norm_train_forward(x, scale, bias, epsilon, dtype)
    return (y, mean, var), (x, scale, mean, var)


def _batch_norm_train_bwd(epsilon, dtype, res, cotangents):
    x, scale, mean, var = res
    dy, dmean, dvar = cotangents
    count = x.size // x.shape[-1]
    inv = jnp.reciprocal(jnp.sqrt(var + epsilon))
    f = _stats_dtype(x.dtype)
    centred = x.astype(f) - mean
    xhat = centred * inv
    g = dy.astype(f)
    sum_g, sum_gx = _column_sums(g, g * xhat)
    dx = (scale.astype(f) * inv) * (g - sum_g / count - xhat * (sum_gx / count))
    dx = dx + dmean / count + centred * (2.0 * dvar / count)
    return dx.astype(x.dtype), sum_gx.astype(scale.dtype), sum_g.astype(scale.dtype)


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


def updated_running_stats(
    running_mean: jnp.ndarray,
    running_var: jnp.ndarray,
    batch_mean: jnp.ndarray,
    batch_var: jnp.ndarray,
    count: int,
    momentum: float,
    unbiased_running_var: bool,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Exponential running statistics; ``momentum`` is Flax's (weight of the old value).

    PyTorch (``momentum=0.1`` there, ``0.9`` here) stores the *unbiased* batch variance in the
    running estimate while normalising with the biased one; ``unbiased_running_var`` does the same.
    """
    if unbiased_running_var and count > 1:
        batch_var = batch_var * (count / (count - 1))
    new_mean = momentum * running_mean + (1.0 - momentum) * batch_mean
    new_var = momentum * running_var + (1.0 - momentum) * batch_var
    return new_mean, new_var


class BatchNorm(nn.Module):
    """BatchNorm over the last axis (features), statistics over all other axes.

    Defaults are PyTorch's: ``momentum=0.9`` in Flax's convention (PyTorch's 0.1) and ``epsilon=1e-5``.
    Statistics are computed in float32 whatever the compute dtype. Variables: ``params`` ``scale``
    and ``bias``; ``batch_stats`` ``mean`` and ``var`` (the names ``flax.linen.BatchNorm`` uses).
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    unbiased_running_var: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones_init(), (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (features,), self.param_dtype)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        if train:
            y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, self.dtype or x.dtype)
            if not self.is_initializing():
                count = int(x.size // features)
                ra_mean.value, ra_var.value = updated_running_stats(
                    ra_mean.value, ra_var.value, mean, var, count,
                    self.momentum, self.unbiased_running_var,
                )
            return y
        return normalize(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon, self.dtype or x.dtype)
