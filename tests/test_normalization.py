"""BatchNorm: the hand-written train-mode gradient against autodiff of the same forward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spinal_jax import normalization


def _grads(fn, x, scale, bias, dtype, cots, relu=False):
    def loss(x, scale, bias):
        y, mean, var = fn(x, scale, bias, 1e-5, dtype, relu)
        return jnp.sum(y.astype(cots[0].dtype) * cots[0]) + jnp.sum(mean * cots[1]) + jnp.sum(var * cots[2])

    return jax.grad(loss, argnums=(0, 1, 2))(x, scale, bias)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(6, 5, 5, 7), (9, 4)])
def test_custom_gradient_equals_autodiff_float64(shape, relu):
    """In float64 the hand-written VJP and autodiff of the composition agree to 1e-10 (all three
    outputs carry a cotangent: y, the batch mean and the batch variance), with and without the ReLU."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(2.0, 3.0, shape))
        scale, bias = jnp.asarray(rng.normal(size=shape[-1])), jnp.asarray(rng.normal(size=shape[-1]))
        cots = (jnp.asarray(rng.normal(size=shape)), jnp.asarray(rng.normal(size=shape[-1])),
                jnp.asarray(rng.normal(size=shape[-1])))
        custom = _grads(normalization.batch_norm_train, x, scale, bias, jnp.float64, cots, relu)
        auto = _grads(normalization._batch_norm_train_forward, x, scale, bias, jnp.float64, cots, relu)
        for c, a in zip(custom, auto, strict=True):
            np.testing.assert_allclose(c, a, rtol=1e-10, atol=1e-10 * float(jnp.abs(a).max()))


def test_bfloat16_input_keeps_dtypes():
    """bf16 activations: y and dx in bf16, the statistics and parameter gradients in float32."""
    x = jax.random.normal(jax.random.key(0), (8, 3, 3, 4)).astype(jnp.bfloat16)
    scale, bias = jnp.ones(4), jnp.zeros(4)
    y, mean, var = normalization.batch_norm_train(x, scale, bias, 1e-5, jnp.bfloat16)
    assert (y.dtype, mean.dtype, var.dtype) == (jnp.bfloat16, jnp.float32, jnp.float32)
    cots = (jnp.ones(x.shape, jnp.float32), jnp.zeros(4), jnp.zeros(4))
    dx, dscale, dbias = _grads(normalization.batch_norm_train, x, scale, bias, jnp.bfloat16, cots)
    assert (dx.dtype, dscale.dtype, dbias.dtype) == (jnp.bfloat16, jnp.float32, jnp.float32)
    np.testing.assert_allclose(dbias, np.full(4, x.size // 4), rtol=0)  # d/dbias of sum(y) = count


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_relu_inside_equals_relu_after(dtype):
    """BatchNorm with ``relu=True`` gives the numbers of nn.relu after it: values and the input's
    gradient bit for bit (the backward recomputes the mask exactly as the forward computed its
    output), the parameters' gradients (column sums, whose order XLA picks per fusion) to round-off."""
    from flax import linen as nn

    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(0.5, 2.0, (10, 6, 6, 8)), dtype)
    scale, bias = jnp.asarray(rng.normal(size=8), jnp.float32), jnp.asarray(rng.normal(size=8), jnp.float32)
    cots = (jnp.asarray(rng.normal(size=x.shape), jnp.float32), jnp.asarray(rng.normal(size=8), jnp.float32),
            jnp.asarray(rng.normal(size=8), jnp.float32))

    def after(x, scale, bias, epsilon, dtype, relu):
        y, mean, var = normalization.batch_norm_train(x, scale, bias, epsilon, dtype, False)
        return nn.relu(y), mean, var

    inside = jax.jit(lambda *a: _grads(normalization.batch_norm_train, *a, cots, True), static_argnums=3)
    outside = jax.jit(lambda *a: _grads(after, *a, cots, True), static_argnums=3)
    (dx_in, *params_in), (dx_out, *params_out) = inside(x, scale, bias, dtype), outside(x, scale, bias, dtype)
    np.testing.assert_array_equal(np.asarray(dx_in, np.float32), np.asarray(dx_out, np.float32))
    for a, b in zip(params_in, params_out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * float(jnp.abs(b).max()))
    y_in = normalization.batch_norm_train(x, scale, bias, 1e-5, dtype, True)[0]
    np.testing.assert_array_equal(np.asarray(y_in, np.float32), np.asarray(after(x, scale, bias, 1e-5, dtype, True)[0], np.float32))
