"""BatchNorm with PyTorch's semantics, usable inside ``jax.lax.scan``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from spinal_jax import column_sums

#: Biases that train-mode BatchNorm cancels (a convolution's or Dense layer's right before it: the
#: batch mean subtracts them) get an exact zero gradient instead of a computed one (round-off, as
#: PyTorch has it); False computes them (for A/B benchmarks). See ``stop_cancelled_bias_gradient``.
SKIP_CANCELLED_BIAS_GRADIENT = True


def stop_cancelled_bias_gradient(bias: jnp.ndarray) -> jnp.ndarray:
    """``bias`` with its gradient stopped: for the bias of a layer whose output goes straight into
    train-mode BatchNorm, where it cancels (its gradient is exactly zero; computed, it would be
    round-off that reduction orders disagree on). The value is unchanged."""
    return jax.lax.stop_gradient(bias) if SKIP_CANCELLED_BIAS_GRADIENT else bias


def stats_dtype(dtype: Any) -> Any:
    """float32 for float32 and narrower inputs, float64 for float64."""
    return jnp.promote_types(dtype, jnp.float32)


def _shifted_sums(arrays: Sequence[jnp.ndarray], vectors: Sequence[jnp.ndarray]) -> tuple[jnp.ndarray, jnp.ndarray]:
    (x,), (shift,) = arrays, vectors
    d = x.astype(shift.dtype) - shift
    return d, jnp.square(d)


def _statistics(x: jnp.ndarray, sums: Callable[..., tuple[jnp.ndarray, jnp.ndarray]]) -> tuple[jnp.ndarray, jnp.ndarray]:
    rows = x.reshape(-1, x.shape[-1])
    shift = jax.lax.stop_gradient(rows[0].astype(stats_dtype(x.dtype)))
    sum_d, sum_d2 = sums(_shifted_sums, [rows], [shift])
    mean_d = sum_d / rows.shape[0]
    var = jnp.maximum(sum_d2 / rows.shape[0] - jnp.square(mean_d), 0.0)
    return mean_d + shift, var


def batch_norm_statistics(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Mean and biased variance over every axis but the last, in float32 (float64 for float64 input).

    One pass over ``x`` (the sums of ``x - k`` and its square in one fused reduction) instead of
    two, with a per-feature shift ``k`` (the first example's value, gradient stopped) so that the
    variance does not cancel when the mean is large: ``var = E[(x-k)^2] - E[x-k]^2`` is exact for any
    constant ``k`` and loses little precision when ``k`` is near the mean. (Train-mode BatchNorm takes
    the same numbers through ``column_sums``, its GPU kernel included; this form is XLA's and
    differentiable.)
    """
    return _statistics(x, column_sums.xla_column_sums)


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
    f = stats_dtype(x.dtype)
    return _affine(x, mean, _inverse_std(var, epsilon) * scale.astype(f), bias.astype(f)).astype(dtype)


def _inverse_std(var: jnp.ndarray, epsilon: float) -> jnp.ndarray:
    return jnp.reciprocal(jnp.sqrt(var + epsilon))


def _affine(x: jnp.ndarray, mean: jnp.ndarray, inv_scale: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
    return (x.astype(mean.dtype) - mean) * inv_scale + bias


def _relu_gate(dy: jnp.ndarray, x: jnp.ndarray, mean: jnp.ndarray, inv_scale: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
    """``dy`` where ReLU's input, the normalised ``x`` recomputed as the forward has it, is positive; else 0."""
    y = _affine(x, mean, inv_scale, bias).astype(dy.dtype)
    return jnp.where(y > 0, dy, jnp.zeros((), dy.dtype))


def _batch_norm_train_forward(
    x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, epsilon: float, dtype: Any, relu: bool
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    mean, var = _statistics(x, column_sums.column_sums)
    y = normalize(x, mean, var, scale, bias, epsilon, dtype)
    return (jax.nn.relu(y) if relu else y), mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def batch_norm_train(
    x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, epsilon: float, dtype: Any, relu: bool = False
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Train-mode BatchNorm: ``(normalised x as dtype, batch mean, biased batch variance)``; with
    ``relu``, the first output is ``relu`` of the normalised ``x``.

    The same function as ``batch_norm_statistics`` then ``normalize`` (then ``nn.relu``), with a
    hand-written gradient: ``dx = scale / sigma * (g - mean(g) - xhat * mean(g * xhat))``, ``g`` the
    incoming gradient (where the normalised ``x`` is positive, with ``relu``), both sums in one
    reduction (``column_sums``: autodiff of the composition takes more reduction kernels on GPUs).
    Gradients reaching the returned mean and variance are included.
    """
    return _batch_norm_train_forward(x, scale, bias, epsilon, dtype, relu)


def _batch_norm_train_fwd(x, scale, bias, epsilon, dtype, relu):
    y, mean, var = _batch_norm_train_forward(x, scale, bias, epsilon, dtype, relu)
    return (y, mean, var), (x, scale, bias, mean, var)


def batch_norm_input_gradient(g: jnp.ndarray, centred: jnp.ndarray, inv: jnp.ndarray, scale: jnp.ndarray,
                              sum_g: jnp.ndarray, sum_gx: jnp.ndarray, dmean: jnp.ndarray, dvar: jnp.ndarray,
                              count: int) -> jnp.ndarray:
    """Train-mode BatchNorm's input gradient from its output gradient ``g`` and the column sums
    ``sum(g)``, ``sum(g * xhat)``: ``scale / sigma * (g - mean(g) - xhat * mean(g * xhat))``, plus the
    terms of gradients ``dmean``, ``dvar`` reaching the batch mean and variance. ``centred`` = input -
    batch mean, ``inv`` = 1 / sigma; all in the statistics dtype, per-column vectors broadcast over the
    rows (also inside Pallas kernels: ``spinal_jax.fused_chain``)."""
    xhat = centred * inv
    dx = (scale * inv) * (g - sum_g / count - xhat * (sum_gx / count))
    return dx + dmean / count + centred * (2.0 * dvar / count)


def _incoming_gradient(dy: jnp.ndarray, x: jnp.ndarray, mean: jnp.ndarray, relu_affine: Sequence[jnp.ndarray]) -> jnp.ndarray:
    """BatchNorm's output gradient in the statistics dtype; behind a ReLU (``relu_affine`` =
    ``(inv * scale, bias)``, empty without one) only where the normalised ``x`` is positive."""
    return (_relu_gate(dy, x, mean, *relu_affine) if relu_affine else dy).astype(mean.dtype)


def _gradient_sums(arrays: Sequence[jnp.ndarray], vectors: Sequence[jnp.ndarray]) -> tuple[jnp.ndarray, jnp.ndarray]:
    # vectors: (mean, inv) or, behind a ReLU, (mean, inv, inv * scale, bias)
    (dy, x), (mean, inv, *relu_affine) = arrays, vectors
    g = _incoming_gradient(dy, x, mean, relu_affine)
    return g, g * ((x.astype(mean.dtype) - mean) * inv)


def _batch_norm_train_bwd(epsilon, dtype, relu, res, cotangents):
    x, scale, bias, mean, var = res
    dy, dmean, dvar = cotangents
    count = x.size // x.shape[-1]
    f = stats_dtype(x.dtype)
    inv = _inverse_std(var, epsilon)
    relu_affine = [inv * scale.astype(f), bias.astype(f)] if relu else []
    rows = (dy.reshape(-1, x.shape[-1]), x.reshape(-1, x.shape[-1]))
    sum_g, sum_gx = column_sums.column_sums(_gradient_sums, rows, [mean, inv, *relu_affine])
    g = _incoming_gradient(dy, x, mean, relu_affine)
    dx = batch_norm_input_gradient(g, x.astype(f) - mean, inv, scale.astype(f), sum_g, sum_gx, dmean, dvar, count)
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
    ``relu``: return ``nn.relu`` of the result (the same numbers; in training one op whose backward
    recomputes ReLU's mask from the BatchNorm input it reads anyway).
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    unbiased_running_var: bool = False
    relu: bool = False
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
            y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, self.dtype or x.dtype, self.relu)
            if not self.is_initializing():
                count = int(x.size // features)
                ra_mean.value, ra_var.value = updated_running_stats(
                    ra_mean.value, ra_var.value, mean, var, count,
                    self.momentum, self.unbiased_running_var,
                )
            return y
        y = normalize(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon, self.dtype or x.dtype)
        return nn.relu(y) if self.relu else y
