"""column_sums: the Pallas kernel (in interpret mode here) against XLA's reduction, and the dispatch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spinal_jax import column_sums, normalization


def _shifted(arrays, vectors):
    (x,), (shift,) = arrays, vectors
    d = x.astype(jnp.float32) - shift
    return d, d * d


def _gradient(arrays, vectors):
    (g, x), (mean, inv) = arrays, vectors
    g = g.astype(jnp.float32)
    return g, g * (x.astype(jnp.float32) - mean) * inv


def _single_sum(arrays, vectors):
    return (arrays[0].astype(jnp.float32),)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(
    ("rows", "cols"),
    [(1000, 64), (32 * 270 + 7, 256), (512, 128)],  # ragged last tile; more tiles than programs; one tile
)
def test_pallas_kernel_equals_xla_reduction(rows, cols, dtype):
    """BatchNorm's sums (the forward's shifted ones, the backward's gradient ones, also behind a ReLU)
    and a single sum from the kernel equal XLA's to float32 round-off, with the rows past the end of the last tile
    masked out."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x = (3.0 + 2.0 * jax.random.normal(k1, (rows, cols))).astype(dtype)
    g = jax.random.normal(k2, (rows, cols)).astype(dtype)
    shift = x[0].astype(jnp.float32)
    mean = jnp.mean(x.astype(jnp.float32), axis=0)
    inv = jax.random.uniform(k3, (cols,), minval=0.5, maxval=2.0)
    relu_gradient = [mean, inv, inv * 1.5, jnp.full((cols,), -0.25)]  # the backward behind a ReLU
    cases = ((_shifted, [x], [shift]), (_gradient, [g, x], [mean, inv]),
             (normalization._gradient_sums, [g, x], relu_gradient), (_single_sum, [g], []))
    for fn, arrays, vectors in cases:
        got = column_sums.pallas_column_sums(fn, arrays, vectors, interpret=True)
        want = column_sums.xla_column_sums(fn, arrays, vectors)
        want64 = [np.sum(np.asarray(v, np.float64), axis=0) for v in fn(arrays, vectors)]
        for a, b, exact in zip(got, want, want64, strict=True):
            scale = np.max(np.abs(exact)) + 1.0
            assert np.max(np.abs(np.asarray(a) - exact)) <= 1e-5 * scale * np.sqrt(rows)
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)


def test_dispatch_rules():
    ok = [jnp.zeros((4096, 64), jnp.bfloat16)]
    assert column_sums.pallas_applies(ok)
    assert not column_sums.pallas_applies([jnp.zeros((100, 64))])  # short: XLA's one kernel
    assert not column_sums.pallas_applies([jnp.zeros((4096, 96))])  # not a power of two wide
    assert not column_sums.pallas_applies([jnp.zeros((4096, 64)), jnp.zeros((4096, 32))])
    with jax.enable_x64(True):
        assert not column_sums.pallas_applies([jnp.zeros((4096, 64), jnp.float64)])


def test_batch_norm_train_uses_the_same_numbers_as_the_reference_statistics():
    """On this backend column_sums is XLA's: the train-mode statistics equal batch_norm_statistics."""
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 8, 8, 64)) + 5.0
    _, mean, var = normalization.batch_norm_train(x, jnp.ones(64), jnp.zeros(64), 1e-5, jnp.float32)
    ref_mean, ref_var = normalization.batch_norm_statistics(x)
    np.testing.assert_array_equal(mean, ref_mean)
    np.testing.assert_array_equal(var, ref_var)

