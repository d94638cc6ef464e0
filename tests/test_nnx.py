"""NNX SpinalDense: the same function as the linen layer from the same weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import spinal_jax.nnx as snnx
from spinal_jax import SpinalDense


@pytest.mark.parametrize(("batch_norm", "features", "stack"), [(True, 5, False), (False, None, False), (True, 5, True)])
def test_nnx_equals_linen(batch_norm, features, stack):
    x = jax.random.normal(jax.random.key(0), (6, 13))
    linen = SpinalDense(features, 4, 5, num_splits=3, batch_norm=batch_norm, unbiased_running_var=True,
                        stack_layers=stack)
    v = jax.jit(linen.init)(jax.random.key(1), x)
    if batch_norm:
        v["batch_stats"] = jax.tree_util.tree_map(lambda a: a + 0.25, v["batch_stats"])
    layer = snnx.SpinalDense(13, features, 4, 5, num_splits=3, batch_norm=batch_norm,
                             unbiased_running_var=True, stack_layers=stack, rngs=nnx.Rngs(0))
    assert jax.tree_util.tree_map(jnp.shape, layer.params_tree()) == jax.tree_util.tree_map(jnp.shape, v["params"])
    if stack:  # independent draws per stacked layer
        k = layer.hidden_stack.kernel.get_value()
        assert float(jnp.abs(k[0] - k[1]).max()) > 0
    else:
        with pytest.raises(ValueError, match="unstack_layers"):
            snnx.SpinalDense(13, features, 4, 5, num_splits=3, batch_norm=batch_norm, stack_layers=True,
                             rngs=nnx.Rngs(0)).load_linen(v)
    layer.load_linen(v)
    apply = jax.jit(linen.apply, static_argnames=("train", "mutable"))
    call = nnx.jit(lambda m, x, train: m(x, train=train), static_argnums=2)
    np.testing.assert_array_equal(np.asarray(call(layer, x, False)), np.asarray(apply(v, x)))
    if batch_norm:
        y_l, upd = apply(v, x, train=True, mutable=("batch_stats",))
        y_n = call(layer, x, True)
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
    call = nnx.jit(lambda m, x, train: m(x, train=train), static_argnums=2)
    a, b = call(layer, x, True), call(layer, x, True)
    assert float(jnp.abs(a - b).max()) > 0  # fresh dropout masks per call
    assert float(jnp.abs(call(layer, x, False) - call(layer, x, False)).max()) == 0
    with pytest.raises(ValueError, match=r"input last dimension is 9.*8 input features"):
        layer(jnp.ones((5, 9)))
    with pytest.raises(ValueError, match="num_splits"):
        snnx.SpinalDense(4, 2, 3, 3, num_splits=5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dropout_rate"):
        snnx.SpinalDense(4, 2, 3, 3, dropout_rate=1.0, rngs=nnx.Rngs(0))
