"""NNX twin of ``spinal_jax.SpinalDense``: the same function (``spinal_forward``), NNX state.

State layout mirrors the linen variables: attributes ``hidden_k`` / ``output`` (``kernel``,
``bias`` ``nnx.Param``), and with BatchNorm ``bn_k`` (``scale``, ``bias`` ``nnx.Param``; ``mean``,
``var`` ``nnx.BatchStat``). ``params_tree()`` / ``stats_tree()`` return the linen-shaped dicts and
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
    def __init__(self, fan_in: int, features: int, init_scheme: str, zero_bias: bool,
                 param_dtype: Any, rngs: nnx.Rngs):
        kinit, binit = kernel_and_bias_init(init_scheme, fan_in)
        if zero_bias:
            binit = nnx.initializers.zeros_init()
        self.kernel = nnx.Param(kinit(rngs.params(), (fan_in, features), param_dtype))
        self.bias = nnx.Param(binit(rngs.params(), (features,), param_dtype))


class _BNState(nnx.Module):
    def __init__(self, width: int, param_dtype: Any):
        self.scale = nnx.Param(jnp.ones((width,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((width,), param_dtype))
        self.mean = nnx.BatchStat(jnp.zeros((width,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((width,), jnp.float32))


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
        for k in range(num_layers):
            fan_in = self.plan.hidden_in_features(k)
            setattr(self, f"hidden_{k}", _DenseParams(fan_in, layer_width, init_scheme, zero_bias, param_dtype, rngs))
            if batch_norm:
                setattr(self, f"bn_{k}", _BNState(layer_width, param_dtype))
        if features is not None:
            fan_in = num_layers * layer_width
            self.output = _DenseParams(fan_in, features, init_scheme, zero_bias, param_dtype, rngs)

    def _names(self) -> list[str]:
        names = [f"hidden_{k}" for k in range(self.plan.num_layers)]
        return [*names, "output"] if self.features is not None else names

    def params_tree(self) -> dict[str, dict[str, jax.Array]]:
        """The parameters as the linen layer's ``params`` dict."""
        tree = {n: {"kernel": getattr(self, n).kernel.get_value(), "bias": getattr(self, n).bias.get_value()}
                for n in self._names()}
        if self.batch_norm:
            for k in range(self.plan.num_layers):
                bn = getattr(self, f"bn_{k}")
                tree[f"bn_{k}"] = {"scale": bn.scale.get_value(), "bias": bn.bias.get_value()}
        return tree

    def stats_tree(self) -> dict[str, dict[str, jax.Array]]:
        """The running statistics as the linen layer's ``batch_stats`` dict (empty without BN)."""
        if not self.batch_norm:
            return {}
        return {f"bn_{k}": {"mean": getattr(self, f"bn_{k}").mean.get_value(),
                            "var": getattr(self, f"bn_{k}").var.get_value()}
                for k in range(self.plan.num_layers)}

    def load_linen(self, variables: Mapping[str, Any]) -> None:
        """Copy linen ``SpinalDense`` variables (``{"params", "batch_stats"}``) into this module."""
        params = variables["params"]
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
