"""The SpinalNet fully connected layer (Kabir et al., arXiv 2007.03347) as a Flax linen module.

``SpinalDense`` computes, for an input of ``D`` features split into segments of
``s = round(D / num_splits)`` features (wrapping around the input), a chain of ``num_layers``
hidden layers of width ``w``: layer ``k`` reads segment ``k`` and the previous layer's output,
``h_k = act(BN(Dense([x_seg_k, h_{k-1}])))``; the output is a Dense over ``[h_0, ..., h_{L-1}]``.

The math lives in the pure function ``spinal_forward`` (shared with ``spinal_jax.nnx``): the
input-segment projections of all layers are computed together (one batched matmul per distinct
segment), only the ``w x w`` products run sequentially inside one ``jax.lax.scan``, so compile time
does not grow with depth through the network's ops.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from spinal_jax.initializers import kernel_and_bias_init
from spinal_jax.normalization import batch_norm_statistics, updated_running_stats
from spinal_jax.reference import SpinalPlan, check_options, make_plan, segment_size

__all__ = [
    "SpinalDense",
    "SpinalPlan",
    "check_input",
    "make_plan",
    "num_params",
    "segment_size",
    "spinal_forward",
]

Array = jax.Array


def check_input(x: Any, expected_features: int | None = None) -> None:
    """Raise ``ValueError`` for a non-floating input or one of the wrong width."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"SpinalDense input must be a floating-point array, got dtype {dtype}; cast it "
            "(e.g. x.astype(jnp.float32))"
        )
    if x.ndim < 1:
        raise ValueError("SpinalDense input must have at least one axis (the features)")
    if expected_features is not None and x.shape[-1] != expected_features:
        raise ValueError(
            f"input last dimension is {x.shape[-1]}, but the parameters were made for "
            f"{expected_features} input features"
        )


def _dropout_scale(key: Array, rate: float, shape: tuple[int, ...], dtype: Any) -> Array:
    """Inverted-dropout multiplier: 0 with probability ``rate``, else ``1 / (1 - rate)``."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)


def _segment(x: Array, plan: SpinalPlan, start: int) -> Array:
    pieces = [jax.lax.slice_in_dim(x, b, e, axis=1) for b, e in plan.segment_pieces(start)]
    return pieces[0] if len(pieces) == 1 else jax.lax.concatenate(pieces, dimension=1)


def _take_layers(stacked: Array, idx: tuple[int, ...]) -> Array:
    """``stacked[idx]`` along axis 0 for static indices; a strided slice when they are evenly spaced."""
    if len(idx) == 1:
        return jax.lax.slice_in_dim(stacked, idx[0], idx[0] + 1, axis=0)
    step = idx[1] - idx[0]
    if step > 0 and all(b - a == step for a, b in itertools.pairwise(idx)):
        return jax.lax.slice_in_dim(stacked, idx[0], idx[-1] + 1, step, axis=0)
    return stacked[np.asarray(idx)]


def spinal_forward(
    params: Mapping[str, Any],
    batch_stats: Mapping[str, Any] | None,
    x: Array,
    plan: SpinalPlan,
    *,
    activation: Callable[[Array], Array] | None = nn.relu,
    train: bool = False,
    dropout_rate: float = 0.0,
    output_dropout_rate: float = 0.0,
    batch_norm: bool = False,
    bn_momentum: float = 0.9,
    bn_epsilon: float = 1e-5,
    unbiased_running_var: bool = False,
    dtype: Any = None,
    dropout_rng: Array | None = None,
) -> tuple[Array, dict[str, Any] | None]:
    """Pure SpinalDense forward from a parameter tree (see ``SpinalDense`` for its layout).

    Returns ``(y, new_batch_stats)``; ``new_batch_stats`` is ``None`` unless ``train`` and
    ``batch_norm``. ``dropout_rng`` is needed when ``train`` and a dropout rate is positive.
    """
    L, s, w = plan.num_layers, plan.segment_size, plan.layer_width
    lead = x.shape[:-1]
    has_output = "output" in params
    if dtype is None:
        dtype = jnp.result_type(x.dtype, *(p.dtype for p in jax.tree_util.tree_leaves(params)))
    x = x.reshape(-1, plan.in_features).astype(dtype)
    n = x.shape[0]

    def hidden(k: int) -> Mapping[str, Array]:
        return params[f"hidden_{plan.reuse[k]}"]

    use_dropout = train and dropout_rate > 0.0
    use_out_dropout = train and output_dropout_rate > 0.0
    if (use_dropout or use_out_dropout) and dropout_rng is None:
        raise ValueError("dropout in train mode needs a 'dropout' rng (rngs={'dropout': key})")
    if use_dropout or use_out_dropout:
        hidden_key, out_key = jax.random.split(dropout_rng)
    masks = _dropout_scale(hidden_key, dropout_rate, (L, n, s + w), dtype) if use_dropout else None

    # Input-segment projections of all layers (off the sequential path): one batched matmul per
    # distinct segment against the stacked segment rows of the kernels of the layers reading it.
    # Stack the kernels once (a single concatenate, whose gradient is a single split).
    k_rest = (
        jnp.stack([hidden(k)["kernel"] for k in range(1, L)]).astype(dtype) if L > 1 else None
    )
    k0 = hidden(0)["kernel"].astype(dtype)[None]
    k_seg = k0 if k_rest is None else jnp.concatenate([k0, k_rest[:, :s]], axis=0)  # (L, s, w)
    parts, order = [], []
    for start, users in plan.groups:
        seg = _segment(x, plan, start)
        kern = _take_layers(k_seg, users)
        if masks is None:
            parts.append(jnp.einsum("ns,usw->unw", seg, kern))
        else:
            seg_masked = seg[None] * _take_layers(masks, users)[:, :, :s]
            parts.append(jnp.einsum("uns,usw->unw", seg_masked, kern))
        order.extend(users)
    proj = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)
    if order != sorted(order):
        proj = proj[np.argsort(order)]  # back to layer order
    biases = jnp.stack([hidden(k)["bias"] for k in range(L)]).astype(dtype)
    proj = proj + biases[:, None, :]

    act = activation if activation is not None else (lambda v: v)

    def norm(z, scale, bias, mean, var):
        if train:
            mean, var = batch_norm_statistics(z)
        inv = jnp.reciprocal(jnp.sqrt(var + bn_epsilon)) * scale.astype(jnp.float32)
        return ((z.astype(jnp.float32) - mean) * inv + bias.astype(jnp.float32)).astype(dtype)

    def running(mean, var, z):
        bmean, bvar = batch_norm_statistics(z)
        return updated_running_stats(mean, var, bmean, bvar, n, bn_momentum, unbiased_running_var)

    if batch_norm:
        bn_p = {
            key: jnp.stack([params[f"bn_{k}"][key] for k in range(L)]) for key in ("scale", "bias")
        }
        bn_s = {key: jnp.stack([batch_stats[f"bn_{k}"][key] for k in range(L)]) for key in ("mean", "var")}

    def layer(z, k_inputs):
        """Normalisation, activation and running statistics of one hidden pre-activation."""
        if not batch_norm:
            return act(z), None
        scale, bias, mean, var = k_inputs
        y = norm(z, scale, bias, mean, var)
        new = running(mean, var, z) if train else None
        return act(y), new

    def bn_at(i):
        return tuple(a[i] for a in (bn_p["scale"], bn_p["bias"], bn_s["mean"], bn_s["var"]))

    h0, new0 = layer(proj[0], bn_at(0) if batch_norm else None)
    outs = [h0[None]]
    new_stats = [new0]
    if L > 1:
        kh = k_rest[:, s:]
        xs: dict[str, Any] = {"proj": proj[1:], "kernel": kh}
        if masks is not None:
            xs["mask"] = masks[1:, :, s:]
        if batch_norm:
            xs["bn"] = tuple(a[1:] for a in (bn_p["scale"], bn_p["bias"], bn_s["mean"], bn_s["var"]))

        def step(h, inp):
            if "mask" in inp:
                h = h * inp["mask"]
            z = inp["proj"] + h @ inp["kernel"]
            h_new, new = layer(z, inp.get("bn"))
            return h_new, (h_new, new)

        _, (hs, news) = jax.lax.scan(step, h0, xs)
        outs.append(hs)
        new_stats.append(news)
    hid = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=0)  # (L, n, w)
    if use_out_dropout:
        hid = hid * _dropout_scale(out_key, output_dropout_rate, hid.shape, dtype)

    if has_output:
        out = params["output"]
        features = out["kernel"].shape[-1]
        kernel = out["kernel"].astype(dtype).reshape(L, w, features)
        y = jnp.einsum("lnw,lwf->nf", hid, kernel) + out["bias"].astype(dtype)
    else:
        y = jnp.transpose(hid, (1, 0, 2)).reshape(n, L * w)
    y = y.reshape(*lead, y.shape[-1])

    stats_out = None
    if batch_norm and train:
        means = [new_stats[0][0][None]]
        vars_ = [new_stats[0][1][None]]
        if L > 1:
            means.append(new_stats[1][0])
            vars_.append(new_stats[1][1])
        means_a, vars_a = jnp.concatenate(means), jnp.concatenate(vars_)
        stats_out = {f"bn_{k}": {"mean": means_a[k], "var": vars_a[k]} for k in range(L)}
    return y, stats_out


class SpinalDense(nn.Module):
    """SpinalNet fully connected layer: a chain of narrow Dense layers fed the input gradually.

    Attributes:
      features: output features, or ``None`` to return the concatenated hidden outputs (L*w).
      layer_width: width ``w`` of each hidden layer.
      num_layers: number of hidden layers ``L``.
      num_splits: the input of ``D`` features is cut in segments of ``round(D / num_splits)``
        (round half to even); layer ``k`` reads features ``(k*s + j) % D``, ``j < s``.
      activation: applied after each hidden layer (after BatchNorm); ``None`` = linear.
      dropout_rate: dropout on each hidden layer's input (train mode only).
      output_dropout_rate: dropout on the output Dense's input; ``None`` = ``dropout_rate``.
      batch_norm: BatchNorm (PyTorch semantics) between each hidden Dense and its activation.
      bn_momentum, bn_epsilon, unbiased_running_var: see ``spinal_jax.normalization.BatchNorm``.
      init_scheme: ``"flax"`` (lecun_normal, zero bias) or ``"torch"`` (U(+-1/sqrt(fan_in)) both).
      zero_bias: initialise all Dense biases to zero.
      weight_sharing: optional reuse map, entry ``k`` = hidden layer whose weights layer ``k``
        uses (``spinal_jax.reference.make_plan``); all ``num_layers`` parameter sets still exist.
      dtype: compute dtype (default: promoted from input and params); param_dtype: of the params.

    Parameters: ``hidden_k`` ``{"kernel": (s [+ w], w), "bias": (w,)}``, ``output``
    ``{"kernel": (L*w, features), "bias"}`` and, with ``batch_norm``, params ``bn_k``
    ``{"scale", "bias"}`` and batch_stats ``bn_k`` ``{"mean", "var"}``.
    """

    features: int | None
    layer_width: int
    num_layers: int
    num_splits: int = 2
    activation: Callable[[Array], Array] | None = nn.relu
    dropout_rate: float = 0.0
    output_dropout_rate: float | None = None
    batch_norm: bool = False
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    unbiased_running_var: bool = False
    init_scheme: str = "flax"
    zero_bias: bool = False
    weight_sharing: Sequence[int] | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _out_rate(self) -> float:
        return self.dropout_rate if self.output_dropout_rate is None else self.output_dropout_rate

    def _param(self, name: str, fan_in: int, shape: tuple[int, int]) -> dict[str, Array]:
        if self.has_variable("params", name):
            # Existing parameters: skip Flax's per-parameter shape re-derivation (eval_shape), which
            # would make tracing deep stacks slow; shapes are checked in __call__.
            return self.get_variable("params", name)
        kinit, binit = kernel_and_bias_init(self.init_scheme, fan_in)
        if self.zero_bias:
            binit = nn.initializers.zeros_init()

        def init_fn(key):
            k1, k2 = jax.random.split(key)
            return {
                "kernel": kinit(k1, shape, self.param_dtype),
                "bias": binit(k2, (shape[1],), self.param_dtype),
            }

        return self.param(name, init_fn)

    def _check_params(self, plan: SpinalPlan) -> None:
        params = self.variables.get("params", {})
        if "hidden_0" not in params:
            return
        got = params["hidden_0"]["kernel"].shape[0]
        if got != plan.segment_size:
            raise ValueError(
                f"input last dimension is {plan.in_features} (segment size {plan.segment_size} with "
                f"num_splits={plan.num_splits}), but the parameters were made for segment size "
                f"{got}, i.e. about {got * plan.num_splits} input features"
            )
        for k in range(self.num_layers):
            name = f"hidden_{k}"
            want = (plan.hidden_in_features(k), plan.layer_width)
            have = tuple(params[name]["kernel"].shape) if name in params else None
            if have != want:
                raise ValueError(f"params[{name!r}]['kernel'] has shape {have}, expected {want}")

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        """Apply the layer to ``x`` of shape (..., D); needs a ``dropout`` rng when training with dropout."""
        check_options(
            self.layer_width, self.num_layers, self.num_splits, self.dropout_rate,
            self.output_dropout_rate,
        )
        check_input(x)
        plan = make_plan(
            x.shape[-1], self.num_splits, self.layer_width, self.num_layers, self.weight_sharing
        )
        self._check_params(plan)
        L, w = self.num_layers, self.layer_width
        params: dict[str, Any] = {}
        stats_vars = {}
        for k in range(L):
            fan_in = plan.hidden_in_features(k)
            params[f"hidden_{k}"] = self._param(f"hidden_{k}", fan_in, (fan_in, w))
            if self.batch_norm:
                params[f"bn_{k}"] = self.param(
                    f"bn_{k}",
                    lambda _key: {
                        "scale": jnp.ones((w,), self.param_dtype),
                        "bias": jnp.zeros((w,), self.param_dtype),
                    },
                ) if not self.has_variable("params", f"bn_{k}") else self.get_variable(
                    "params", f"bn_{k}"
                )
                stats_vars[f"bn_{k}"] = self.variable(
                    "batch_stats",
                    f"bn_{k}",
                    lambda: {"mean": jnp.zeros((w,), jnp.float32), "var": jnp.ones((w,), jnp.float32)},
                )
        if self.features is not None:
            params["output"] = self._param("output", L * w, (L * w, self.features))
        out_rate = self._out_rate()
        need_rng = train and (self.dropout_rate > 0 or out_rate > 0)
        rng = self.make_rng("dropout") if need_rng else None
        y, new_stats = spinal_forward(
            params,
            {k: v.value for k, v in stats_vars.items()},
            x,
            plan,
            activation=self.activation,
            train=train,
            dropout_rate=self.dropout_rate,
            output_dropout_rate=out_rate,
            batch_norm=self.batch_norm,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            unbiased_running_var=self.unbiased_running_var,
            dtype=self.dtype,
            dropout_rng=rng,
        )
        if new_stats is not None and not self.is_initializing():
            for k, var in stats_vars.items():
                var.value = new_stats[k]
        return y


def num_params(features: int | None, in_features: int, layer_width: int, num_layers: int,
               num_splits: int = 2, batch_norm: bool = False) -> int:
    """Parameter count of a SpinalDense (weights, biases and BatchNorm scale/bias)."""
    s = segment_size(in_features, num_splits)
    w, L = layer_width, num_layers
    n = s * w + w + (L - 1) * ((s + w) * w + w)
    if batch_norm:
        n += 2 * w * L
    if features is not None:
        n += L * w * features + features
    return n
