"""BatchNorm with PyTorch's semantics, usable inside ``jax.lax.scan``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn


def batch_norm_statistics(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Mean and biased variance over every axis but the last, in float32.

    One pass over ``x`` (the sums of ``x - k`` and its square in one fused reduction) instead of
    two, with a per-feature shift ``k`` (the first example's value, gradient stopped) so that the
    variance does not cancel when the mean is large: ``var = E[(x-k)^2] - E[x-k]^2`` is exact for any
    constant ``k`` and loses little precision when ``k`` is near the mean.
    """
    x32 = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    shift = jax.lax.stop_gradient(x32.reshape(-1, x.shape[-1])[0])
    d = x32 - shift
    mean_d = jnp.mean(d, axis=axes)
    var = jnp.maximum(jnp.mean(jnp.square(d), axis=axes) - jnp.square(mean_d), 0.0)
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
    """``(x - mean) / sqrt(var + epsilon) * scale + bias`` computed in float32, returned as ``dtype``."""
    inv = jnp.reciprocal(jnp.sqrt(var + epsilon)) * scale.astype(jnp.float32)
    y = (x.astype(jnp.float32) - mean) * inv + bias.astype(jnp.float32)
    return y.astype(dtype)


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
            mean, var = batch_norm_statistics(x)
            if not self.is_initializing():
                count = int(x.size // features)
                ra_mean.value, ra_var.value = updated_running_stats(
                    ra_mean.value, ra_var.value, mean, var, count,
                    self.momentum, self.unbiased_running_var,
                )
        else:
            mean, var = ra_mean.value, ra_var.value
        return normalize(x, mean, var, scale, bias, self.epsilon, self.dtype or x.dtype)
