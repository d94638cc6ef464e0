"""NNX twin of ``spinal_jax.SpinalDense``: the same function (``spinal_forward``), NNX state.

State layout mirrors the linen variables: attributes ``hidden_k`` / ``output`` (``kernel``,
``bias`` ``nnx.Param``), and with BatchNorm ``bn_k`` (``scale``, ``bias`` ``nnx.Param``; ``mean``,
``var`` ``nnx.BatchStat``); with ``stack_layers=True``, ``hidden_0``, ``hidden_stack``, ``bn_0``,
``bn_stack`` as in the linen layer's stacked form. ``params_tree()`` / ``stats_tree()`` return the linen-shaped dicts and
``load_linen(variables)`` copies linen variables in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from spinal_jax.initializers import kernel_and_bias_init
from spinal_jax.layers import check_input, spinal_forward
from spinal_jax.reference import check_options, make_plan

__all__ = ["SpinalDense"]


class _DenseParams(nnx.Module):
    """Kernel (fan_in, features) and bias; ``count`` independent sets stacked along axis 0."""

    def __init__(self, fan_in: int, features: int, init_scheme: str, zero_bias: bool,
                 param_dtype: Any, rngs: nnx.Rngs, count: int | None = None):
        kinit, binit = kernel_and_bias_init(init_scheme, fan_in)
        if zero_bias:
            binit = nnx.initializers.zeros_init()

        def draw(init, key, shape):
            if count is None:
                return init(key, shape, param_dtype)
            return jax.vmap(lambda k: init(k, shape, param_dtype))(jax.random.split(key, count))

        self.kernel = nnx.Param(draw(kinit, rngs.params(), (fan_in, features)))
        self.bias = nnx.Param(draw(binit, rngs.params(), (features,)))


class _BNState(nnx.Module):
    def __init__(self, shape: tuple[int, ...], param_dtype: Any):
        self.scale = nnx.Param(jnp.ones(shape, param_dtype))
        self.bias = nnx.Param(jnp.zeros(shape, param_dtype))
        self.mean = nnx.BatchStat(jnp.zeros(shape, jnp.float32))
        self.var = nnx.BatchStat(jnp.ones(shape, jnp.float32))


class SpinalDense(nnx.Module):
    """SpinalNet fully connected layer (NNX); arguments as ``spinal_jax.SpinalDense`` plus
    ``in_features`` and ``rngs``. Call ``layer(x, train=False)``; dropout in training draws from
    ``rngs.dropout`` (pass ``rngs=nnx.Rngs(params=..., dropout=...)``).
    """

    def __init__(
        self,
        in_features: int,
        features: int | None,
        layer_width: int,
        num_layers: int,
        num_splits: int = 2,
        activation: Callable[[jax.Array], jax.Array] | None = jax.nn.relu,
        dropout_rate: float = 0.0,
        output_dropout_rate: float | None = None,
        batch_norm: bool = False,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        unbiased_running_var: bool = False,
        init_scheme: str = "flax",
        zero_bias: bool = False,
        weight_sharing: Sequence[int] | None = None,
        stack_layers: bool = False,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        *,
        rngs: nnx.Rngs,
    ):
        check_options(layer_width, num_layers, num_splits, dropout_rate, output_dropout_rate)
        self.plan = make_plan(in_features, num_splits, layer_width, num_layers, weight_sharing)
        self.in_features = in_features
        self.features = features
        self.activation = activation
        self.dropout_rate = dropout_rate
        self.output_dropout_rate = dropout_rate if output_dropout_rate is None else output_dropout_rate
        self.batch_norm = batch_norm
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.unbiased_running_var = unbiased_running_var
        self.dtype = dtype
        self.rngs = rngs
        self.stack_layers = stack_layers and num_layers > 1
        s, w, L = self.plan.segment_size, layer_width, num_layers
        dense = dict(init_scheme=init_scheme, zero_bias=zero_bias, param_dtype=param_dtype, rngs=rngs)
        self.hidden_0 = _DenseParams(s, w, **dense)
        if batch_norm:
            self.bn_0 = _BNState((w,), param_dtype)
        if self.stack_layers:
            self.hidden_stack = _DenseParams(s + w, w, **dense, count=L - 1)
            if batch_norm:
                self.bn_stack = _BNState((L - 1, w), param_dtype)
        else:
            for k in range(1, L):
                setattr(self, f"hidden_{k}", _DenseParams(s + w, w, **dense))
                if batch_norm:
                    setattr(self, f"bn_{k}", _BNState((w,), param_dtype))
        if features is not None:
            fan_in = num_layers * layer_width
            self.output = _DenseParams(fan_in, features, init_scheme, zero_bias, param_dtype, rngs)

    def _names(self) -> tuple[list[str], list[str]]:
        """Names of the Dense and BatchNorm sub-modules, in the linen layer's order."""
        if self.stack_layers:
            dense, bns = ["hidden_0", "hidden_stack"], ["bn_0", "bn_stack"]
        else:
            dense = [f"hidden_{k}" for k in range(self.plan.num_layers)]
            bns = [f"bn_{k}" for k in range(self.plan.num_layers)]
        if self.features is not None:
            dense.append("output")
        return dense, bns if self.batch_norm else []

    def params_tree(self) -> dict[str, dict[str, jax.Array]]:
        """The parameters as the linen layer's ``params`` dict (same form: per-layer or stacked)."""
        dense, bns = self._names()
        tree = {n: {"kernel": getattr(self, n).kernel.get_value(), "bias": getattr(self, n).bias.get_value()}
                for n in dense}
        for n in bns:
            tree[n] = {"scale": getattr(self, n).scale.get_value(), "bias": getattr(self, n).bias.get_value()}
        return tree

    def stats_tree(self) -> dict[str, dict[str, jax.Array]]:
        """The running statistics as the linen layer's ``batch_stats`` dict (empty without BN)."""
        return {n: {"mean": getattr(self, n).mean.get_value(), "var": getattr(self, n).var.get_value()}
                for n in self._names()[1]}

    def load_linen(self, variables: Mapping[str, Any]) -> None:
        """Copy linen ``SpinalDense`` variables (``{"params", "batch_stats"}``) into this module."""
        params = variables["params"]
        dense, bns = self._names()
        if set(params) != {*dense, *bns}:
            raise ValueError(
                f"params have entries {sorted(params)}, this layer {sorted({*dense, *bns})} "
                f"(stack_layers={self.stack_layers}); convert with spinal_jax.reference."
                "unstack_layers / restack_layers"
            )
        for name, leaves in params.items():
            sub = getattr(self, name)
            for leaf, value in leaves.items():
                target = getattr(sub, leaf)
                if target.get_value().shape != value.shape:
                    raise ValueError(f"{name}/{leaf}: shape {value.shape}, expected {target.get_value().shape}")
                target.set_value(jnp.asarray(value, target.get_value().dtype))
        for name, leaves in variables.get("batch_stats", {}).items():
            sub = getattr(self, name)
            sub.mean.set_value(jnp.asarray(leaves["mean"], jnp.float32))
            sub.var.set_value(jnp.asarray(leaves["var"], jnp.float32))

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_input(x, self.in_features)
        need_rng = train and (self.dropout_rate > 0 or self.output_dropout_rate > 0)
        y, new_stats = spinal_forward(
            self.params_tree(), self.stats_tree(), x, self.plan,
            activation=self.activation, train=train, dropout_rate=self.dropout_rate,
            output_dropout_rate=self.output_dropout_rate, batch_norm=self.batch_norm,
            bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
            unbiased_running_var=self.unbiased_running_var, dtype=self.dtype,
            dropout_rng=self.rngs.dropout() if need_rng else None,
        )
        if new_stats is not None:
            for name, st in new_stats.items():
                getattr(self, name).mean.set_value(st["mean"])
                getattr(self, name).var.set_value(st["var"])
        return y
