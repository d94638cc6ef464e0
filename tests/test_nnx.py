"""NNX SpinalDense: the same function as the linen layer from the same weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import spinal_jax.nnx as snnx
from spinal_jax import SpinalDense


@pytest.mark.parametrize(("batch_norm", "features"), [(True, 5), (False, None)])
def test_nnx_equals_linen(batch_norm, features):
    x = jax.random.normal(jax.random.key(0), (6, 13))
    linen = SpinalDense(features, 4, 5, num_splits=3, batch_norm=batch_norm, unbiased_running_var=True)
    v = linen.init(jax.random.key(1), x)
    if batch_norm:
        v["batch_stats"] = jax.tree_util.tree_map(lambda a: a + 0.25, v["batch_stats"])
    layer = snnx.SpinalDense(13, features, 4, 5, num_splits=3, batch_norm=batch_norm,
                             unbiased_running_var=True, rngs=nnx.Rngs(0))
    assert jax.tree_util.tree_map(jnp.shape, layer.params_tree()) == jax.tree_util.tree_map(jnp.shape, v["params"])
    layer.load_linen(v)
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(linen.apply(v, x)))
    if batch_norm:
        y_l, upd = linen.apply(v, x, train=True, mutable=["batch_stats"])
        y_n = layer(x, train=True)
        np.testing.assert_array_equal(np.asarray(y_n), np.asarray(y_l))
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                               layer.stats_tree(), upd["batch_stats"])


def test_nnx_jit_grad_dropout_and_errors():
    layer = snnx.SpinalDense(8, 3, 4, 3, dropout_rate=0.3, init_scheme="torch", rngs=nnx.Rngs(params=0, dropout=1))
    x = jnp.ones((5, 8))

    @nnx.jit
    def loss_grad(model, x):
        return nnx.grad(lambda m: jnp.sum(m(x, train=True) ** 2))(model)

    g = loss_grad(layer, x)
    assert g["hidden_1"]["kernel"].get_value().shape == (8, 4)
    a, b = layer(x, train=True), layer(x, train=True)
    assert float(jnp.abs(a - b).max()) > 0  # fresh dropout masks per call
    assert float(jnp.abs(layer(x) - layer(x)).max()) == 0
    with pytest.raises(ValueError, match=r"input last dimension is 9.*8 input features"):
        layer(jnp.ones((5, 9)))
    with pytest.raises(ValueError, match="num_splits"):
        snnx.SpinalDense(4, 2, 3, 3, num_splits=5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dropout_rate"):
        snnx.SpinalDense(4, 2, 3, 3, dropout_rate=1.0, rngs=nnx.Rngs(0))
