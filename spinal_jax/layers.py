"""The SpinalNet fully connected layer (Kabir et al., arXiv 2007.03347) as a Flax linen module.

``SpinalDense`` computes, for an input of ``D`` features split into segments of
``s = round(D / num_splits)`` features (wrapping around the input), a chain of ``num_layers``
hidden layers of width ``w``: layer ``k`` reads segment ``k`` and the previous layer's output,
``h_k = act(BN(Dense([x_seg_k, h_{k-1}])))``; the output is a Dense over ``[h_0, ..., h_{L-1}]``.

The math lives in the pure function ``spinal_forward`` (shared with ``spinal_jax.nnx``). The
input-segment products ``x_seg_k @ W_k[:s]`` do not depend on the chain; only the ``w x w`` products
``h_{k-1} @ W_k[s:]`` are sequential. Chains of up to ``SCAN_UNROLL_MAX + 1`` layers are written out
layer by layer (no concatenation of ``[x_seg_k, h_{k-1}]``: two products per layer, the first off the
sequential path). Longer chains compute the input-segment projections of all layers together (one
batched matmul per distinct segment) and run the ``w x w`` products in one ``jax.lax.scan``; with
``stack_layers=True`` the parameters of layers 1..L-1 are one stacked entry, so the program (and the
compile time) does not grow with depth; the per-layer form stacks them in the program (O(L)).
In training, a chain with BatchNorm and ReLU (the V3 head) on one GPU takes ``spinal_jax.fused_chain``:
one Pallas kernel per layer and pass for the sequential part (``fused_chain.applies`` has the conditions).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from spinal_jax import fused_chain
from spinal_jax.initializers import kernel_and_bias_init
from spinal_jax.normalization import (
    batch_norm_train,
    normalize,
    stop_cancelled_bias_gradient,
    updated_running_stats,
)
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

#: Chains of at most this many sequential (w x w) products, i.e. ``num_layers <= SCAN_UNROLL_MAX + 1``,
#: are written out layer by layer; longer chains run as one ``lax.scan`` (a while loop), so that compile
#: time stays flat in depth. On the GPU a while loop costs a host round trip per iteration, and the
#: written-out chain needs no stacking, gathering or concatenation of the per-layer projections
#: (PERF_NOTES.md has the measurements). 0 = always a loop (for L > 1).
SCAN_UNROLL_MAX = 16
#: In training, the dropout multipliers of the hidden layers' inputs and of the output Dense's input come from
#: one random draw with the layer's dropout key (uniforms compared with each keep probability), instead of a key
#: split and one Bernoulli draw each (a split and a draw fewer a step; other masks, of the same distribution).
#: Off until measured on a GPU (PERF_NOTES.md, round 23).
ONE_DROPOUT_DRAW = False


def _kernel_operand(v: Array) -> Array:
    """A sliced/reshaped kernel materialised before it enters a dot.

    Works around an XLA GPU compiler crash (jax 0.11.2, H100: ``triton_tiling_propagation.cc Check
    failed: src_fragment_it != src_fragments_order.end()`` while fusing such an operand into a Triton
    GEMM; seen for the small-CNN head, D=320, w=8, L=6). The copy is of parameters only (small).
    """
    return jax.lax.optimization_barrier(v)


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


def _dropout_masks(key: Array, rates: tuple[float, ...], shapes: tuple[tuple[int, ...], ...],
                   dtype: Any) -> list[Array | None]:
    """Inverted-dropout multipliers (0 with probability ``rate``, else ``1 / (1 - rate)``) of the given shapes,
    ``None`` where the rate is 0, from ``key``: one Bernoulli draw each after a key split, or with
    ``ONE_DROPOUT_DRAW`` one draw of uniforms for all of them (the shapes may differ only in the last axis),
    cut along it."""
    if ONE_DROPOUT_DRAW:
        widths = [shape[-1] if rate > 0.0 else 0 for shape, rate in zip(shapes, rates, strict=True)]
        uniform = jax.random.uniform(key, (*shapes[0][:-1], sum(widths)))
        starts = np.cumsum([0, *widths[:-1]])
        keeps = [jax.lax.slice_in_dim(uniform, b, b + width, axis=-1) < 1.0 - rate if width else None
                 for b, width, rate in zip(starts, widths, rates, strict=True)]
    else:
        keys = jax.random.split(key, len(shapes))
        keeps = [jax.random.bernoulli(k, 1.0 - rate, shape) if rate > 0.0 else None
                 for k, rate, shape in zip(keys, rates, shapes, strict=True)]
    return [None if keep is None else keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)
            for keep, rate in zip(keeps, rates, strict=True)]


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


def _bn_tuple(params: Mapping[str, Any], stats: Mapping[str, Any], name: str) -> tuple[Array, ...]:
    return (params[name]["scale"], params[name]["bias"], stats[name]["mean"], stats[name]["var"])


def _layer_params(
    params: Mapping[str, Any], batch_stats: Mapping[str, Any] | None, plan: SpinalPlan, k: int, batch_norm: bool
) -> tuple[Array, Array, tuple[Array, ...] | None]:
    """Kernel, bias and (with BatchNorm) (scale, bias, mean, var) of hidden layer ``k``, either form."""
    j = plan.reuse[k]
    if k > 0 and "hidden_stack" in params:
        kern, bias = params["hidden_stack"]["kernel"][j - 1], params["hidden_stack"]["bias"][j - 1]
        bn = tuple(a[k - 1] for a in _bn_tuple(params, batch_stats, "bn_stack")) if batch_norm else None
        return kern, bias, bn
    bn = _bn_tuple(params, batch_stats, f"bn_{k}") if batch_norm else None
    return params[f"hidden_{j}"]["kernel"], params[f"hidden_{j}"]["bias"], bn


def _rest_layers(
    params: Mapping[str, Any], batch_stats: Mapping[str, Any] | None, plan: SpinalPlan, batch_norm: bool
) -> tuple[Array, Array, tuple[Array, ...] | None]:
    """Hidden layers 1..L-1 in layer order, stacked along axis 0 (weight sharing applied).

    Returns the kernels (L-1, s+w, w), biases (L-1, w) and, with BatchNorm, (scale, bias, mean, var)
    each (L-1, w). The stacked parameter form is used as is (a strided slice or one gather under
    weight sharing); the per-layer form is stacked here, which is O(L) in the program.
    """
    L = plan.num_layers
    if "hidden_stack" in params:
        idx = tuple(j - 1 for j in plan.reuse[1:])
        kern, bias = params["hidden_stack"]["kernel"], params["hidden_stack"]["bias"]
        if idx != tuple(range(L - 1)):
            kern, bias = _take_layers(kern, idx), _take_layers(bias, idx)
        bn = _bn_tuple(params, batch_stats, "bn_stack") if batch_norm else None
        return kern, bias, bn
    kerns, biases, bns = zip(*(_layer_params(params, batch_stats, plan, k, batch_norm) for k in range(1, L)), strict=True)
    bn = tuple(jnp.stack(leaves) for leaves in zip(*bns, strict=True)) if batch_norm else None
    return jnp.stack(kerns), jnp.stack(biases), bn


def _output(params: Mapping[str, Any], hcat: Array, dtype: Any) -> Array:
    """The output Dense over the concatenated hidden outputs (float32 accumulation), or ``hcat`` itself."""
    if "output" not in params:
        return hcat
    acc = jnp.promote_types(dtype, jnp.float32)
    kernel = _kernel_operand(params["output"]["kernel"].astype(dtype))
    y = jnp.dot(hcat, kernel, preferred_element_type=acc)
    return (y + params["output"]["bias"].astype(acc)).astype(dtype)


def _fused_hidden(
    params: Mapping[str, Any],
    batch_stats: Mapping[str, Any],
    x: Array,
    plan: SpinalPlan,
    masks: Array | None,
    out_mask: Array | None,
    dtype: Any,
    epsilon: float,
    momentum: float,
    unbiased_running_var: bool,
) -> tuple[Array, tuple[Array, Array], tuple[Any, Any]]:
    """Train-mode hidden outputs ``(n, L*w)`` of a BatchNorm+ReLU chain by ``fused_chain``, times the output
    dropout's ``out_mask`` (L, n, w) when given, and the new running statistics of layer 0 and of layers
    1..L-1 (means, variances: stacked in the stacked parameter form, per-layer lists in the per-layer form).

    The input-segment products of all layers are one batched matmul (off the sequential path). Each
    layer's running statistics are updated from its own stored ones, not stacked and sliced back (on a
    GPU, XLA copied each slice of such a stack into the training loop's carry: 8 copies a step for the
    VGG-5 head, PERF_NOTES.md rounds 13 and 20): in place by the chain's kernels with
    ``fused_chain.UPDATE_RUNNING_STATS``, else by XLA after the chain."""
    L, s, n = plan.num_layers, plan.segment_size, x.shape[0]
    kern0, bias0, bn0 = _layer_params(params, batch_stats, plan, 0, True)
    kern, bias, bn = _rest_layers(params, batch_stats, plan, True)
    kern = kern.astype(dtype)
    seg_kernels = jnp.concatenate([kern0.astype(dtype)[None], kern[:, :s]])
    segs = jnp.stack([_segment(x, plan, plan.starts[k]) for k in range(L)])
    if masks is not None:
        segs = segs * masks[:, :, :s]
    biases = jnp.concatenate([bias0[None], bias]).astype(dtype)
    proj = jnp.einsum("lns,lsw->lnw", segs, _kernel_operand(seg_kernels)) + biases[:, None, :]
    scale, bn_bias = (jnp.concatenate([a0[None], a]) for a0, a in zip(bn0[:2], bn[:2], strict=True))
    hmask = None if masks is None else masks[1:, :, s:]
    stacked = "bn_stack" in batch_stats
    # The stored running statistics as they are (per layer, or layer 0's and the stack of the others).
    stored = [bn0[2:], bn[2:]] if stacked else [bn0[2:]] + [_bn_tuple(params, batch_stats, f"bn_{k}")[2:]
                                                             for k in range(1, L)]
    if fused_chain.UPDATE_RUNNING_STATS:  # inside the chain's kernels
        layout = tuple((0, 1, -1) if k == 0 else (2, 3, k - 1) if stacked else (2 * k, 2 * k + 1, -1)
                       for k in range(L))
        hcat, _, _, running = fused_chain.fused_chain(
            proj, hmask, kern[:, s:], scale, bn_bias, epsilon,
            running=tuple(a for pair in stored for a in pair),
            update=fused_chain.RunningUpdate(layout, momentum, unbiased_running_var),
        )
        new = [running[i:i + 2] for i in range(0, len(running), 2)]
    else:
        hcat, mean, var = fused_chain.fused_chain(proj, hmask, kern[:, s:], scale, bn_bias, epsilon)
        rows = [0, slice(1, L)] if stacked else list(range(L))
        new = [updated_running_stats(*pair, mean[r], var[r], n, momentum, unbiased_running_var)
               for pair, r in zip(stored, rows, strict=True)]
    if out_mask is not None:
        hcat = hcat * jnp.transpose(out_mask, (1, 0, 2)).reshape(n, L * plan.layer_width)
    if stacked:
        return hcat, tuple(new[0]), tuple(new[1])
    return hcat, tuple(new[0]), ([m for m, _ in new[1:]], [v for _, v in new[1:]])


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
    """Pure SpinalDense forward from a parameter tree in either form (see ``SpinalDense``).

    Returns ``(y, new_batch_stats)``; ``new_batch_stats`` (in the form of ``params``) is ``None``
    unless ``train`` and ``batch_norm``. ``dropout_rng`` is needed when ``train`` and a dropout rate
    is positive.
    """
    L, s, w = plan.num_layers, plan.segment_size, plan.layer_width
    lead = x.shape[:-1]
    stacked = "hidden_stack" in params
    if train and batch_norm:
        # Each hidden layer's BatchNorm subtracts the batch mean: the hidden biases cancel.
        params = {
            name: {**p, "bias": stop_cancelled_bias_gradient(p["bias"])} if name.startswith("hidden") else p
            for name, p in params.items()
        }
    if dtype is None:
        dtype = jnp.result_type(x.dtype, *(p.dtype for p in jax.tree_util.tree_leaves(params)))
    x = x.reshape(-1, plan.in_features).astype(dtype)
    n = x.shape[0]

    use_dropout = train and dropout_rate > 0.0
    use_out_dropout = train and output_dropout_rate > 0.0
    if (use_dropout or use_out_dropout) and dropout_rng is None:
        raise ValueError("dropout in train mode needs a 'dropout' rng (rngs={'dropout': key})")
    masks = out_mask = None
    if use_dropout or use_out_dropout:
        # masks: on each layer's input (segment, then h); out_mask: on h_0 .. h_{L-1} for the output Dense.
        masks, out_mask = _dropout_masks(dropout_rng, (dropout_rate if use_dropout else 0.0,
                                                       output_dropout_rate if use_out_dropout else 0.0),
                                         ((L, n, s + w), (L, n, w)), dtype)
    act = activation if activation is not None else (lambda v: v)

    def layer(z: Array, bn: tuple[Array, ...] | None) -> tuple[Array, Any]:
        """BatchNorm (and its running statistics) and activation of one hidden pre-activation."""
        if not batch_norm:
            return act(z), None
        scale, bias, mean, var = bn
        if train:
            y, bmean, bvar = batch_norm_train(z, scale, bias, bn_epsilon, dtype)
            return act(y), updated_running_stats(mean, var, bmean, bvar, n, bn_momentum, unbiased_running_var)
        return act(normalize(z, mean, var, scale, bias, bn_epsilon, dtype)), None

    def segment_product(k: int, kern: Array, bias: Array) -> Array:
        """Layer ``k``'s input-segment product (off the sequential path) plus its bias."""
        seg = _segment(x, plan, plan.starts[k])
        if masks is not None:
            seg = seg * masks[k, :, :s]
        return seg @ _kernel_operand(kern[:s]) + bias.astype(dtype)

    def first_layer() -> tuple[Array, Any]:
        kern0, bias0, bn0 = _layer_params(params, batch_stats, plan, 0, batch_norm)
        return layer(segment_product(0, kern0.astype(dtype), bias0), bn0)

    news = None
    if (
        train and batch_norm and activation is nn.relu and L <= SCAN_UNROLL_MAX + 1
        and fused_chain.applies(n, w, L, dtype)
    ):
        # The sequential part as one kernel a pass on one GPU (spinal_jax.fused_chain).
        hcat, new0, news = _fused_hidden(
            params, batch_stats, x, plan, masks, out_mask, dtype, bn_epsilon, bn_momentum, unbiased_running_var
        )
    elif L - 1 <= SCAN_UNROLL_MAX:
        # Written out: only h @ kernel[s:] is sequential.
        h0, new0 = first_layer()
        hs_list, news_list = [h0], []
        for k in range(1, L):
            kern, bias, bn = _layer_params(params, batch_stats, plan, k, batch_norm)
            kern = kern.astype(dtype)
            h = hs_list[-1] if masks is None else hs_list[-1] * masks[k, :, s:]
            h, new = layer(segment_product(k, kern, bias) + h @ _kernel_operand(kern[s:]), bn)
            hs_list.append(h)
            news_list.append(new)
        if out_mask is not None:
            hs_list = [hk * out_mask[k] for k, hk in enumerate(hs_list)]
        hcat = jnp.concatenate(hs_list, axis=1) if L > 1 else h0  # (n, L*w), layer order
        if batch_norm and train and L > 1:
            news = tuple([nw[i] for nw in news_list] for i in range(2))
            if stacked:
                news = tuple(jnp.stack(leaves) for leaves in news)
    else:
        h0, new0 = first_layer()
        kern, bias, bn = _rest_layers(params, batch_stats, plan, batch_norm)
        kern = kern.astype(dtype)
        k_seg = kern[:, :s]
        # Input-segment projections of layers 1..L-1 (off the sequential path): one batched matmul
        # per distinct segment against the segment rows of the kernels of the layers reading it.
        parts, order = [], []
        for start, users in plan.groups:
            rest = tuple(u - 1 for u in users if u > 0)
            if not rest:
                continue
            seg = _segment(x, plan, start)
            kg = _take_layers(k_seg, rest)
            if masks is None:
                parts.append(jnp.einsum("ns,usw->unw", seg, _kernel_operand(kg)))
            else:
                seg_masked = seg[None] * _take_layers(masks[1:, :, :s], rest)
                parts.append(jnp.einsum("uns,usw->unw", seg_masked, _kernel_operand(kg)))
            order.extend(rest)
        proj = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)
        if order != sorted(order):
            proj = proj[np.argsort(order)]  # back to layer order
        xs: dict[str, Any] = {"proj": proj + bias.astype(dtype)[:, None, :], "kernel": _kernel_operand(kern[:, s:])}
        if masks is not None:
            xs["mask"] = masks[1:, :, s:]
        if batch_norm:
            xs["bn"] = bn

        def step(h, inp):
            if "mask" in inp:
                h = h * inp["mask"]
            # The per-iteration kernel slice is materialised: fused into the product it makes a
            # Triton GEMM that the GPU compiler autotunes at length (compile time, PERF_NOTES.md).
            h_new, new = layer(inp["proj"] + h @ _kernel_operand(inp["kernel"]), inp.get("bn"))
            return h_new, (h_new, new)

        _, (hs, news) = jax.lax.scan(step, h0, xs)  # hs: (L-1, n, w)
        if out_mask is not None:
            h0, hs = h0 * out_mask[0], hs * out_mask[1:]
        hcat = jnp.concatenate([h0, jnp.transpose(hs, (1, 0, 2)).reshape(n, (L - 1) * w)], axis=1)
    y = _output(params, hcat, dtype)
    y = y.reshape(*lead, y.shape[-1])

    stats_out = None
    if batch_norm and train:
        stats_out = {"bn_0": {"mean": new0[0], "var": new0[1]}}
        if L > 1 and stacked:
            stats_out["bn_stack"] = {"mean": news[0], "var": news[1]}
        elif L > 1:
            stats_out.update(
                {f"bn_{k}": {"mean": news[0][k - 1], "var": news[1][k - 1]} for k in range(1, L)}
            )
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
      stack_layers: store hidden layers 1..L-1 as one stacked entry (see below) instead of one
        entry per layer, so that the program size, hence compile time, does not grow with depth.
      dtype: compute dtype (default: promoted from input and params); param_dtype: of the params.

    Parameters (default, per-layer form): ``hidden_k`` ``{"kernel": (s [+ w], w), "bias": (w,)}``
    for k < L, ``output`` ``{"kernel": (L*w, features), "bias"}`` and, with ``batch_norm``, params
    ``bn_k`` ``{"scale", "bias"}`` and batch_stats ``bn_k`` ``{"mean", "var"}``.

    ``stack_layers=True`` (stacked form, L > 1): ``hidden_0``, ``bn_0`` and ``output`` as above;
    layers 1..L-1 are the same numbers stacked along a new axis 0: ``hidden_stack``
    ``{"kernel": (L-1, s+w, w), "bias": (L-1, w)}`` and ``bn_stack`` (params ``scale``/``bias``,
    batch_stats ``mean``/``var``, each (L-1, w)); ``hidden_stack[...][i]`` is ``hidden_{i+1}``.
    ``spinal_jax.reference.unstack_layers`` / ``restack_layers`` convert between the two forms.
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
    stack_layers: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _out_rate(self) -> float:
        return self.dropout_rate if self.output_dropout_rate is None else self.output_dropout_rate

    def _param(self, name: str, fan_in: int, shape: tuple[int, int], count: int | None = None) -> dict[str, Array]:
        """Dense params ``name``; ``count`` stacks that many independently drawn sets along axis 0."""
        if self.has_variable("params", name):
            # Existing parameters: skip Flax's per-parameter shape re-derivation (eval_shape), which
            # would make tracing deep stacks slow; shapes are checked in __call__.
            return self.get_variable("params", name)
        kinit, binit = kernel_and_bias_init(self.init_scheme, fan_in)
        if self.zero_bias:
            binit = nn.initializers.zeros_init()

        def one(key):
            k1, k2 = jax.random.split(key)
            return {
                "kernel": kinit(k1, shape, self.param_dtype),
                "bias": binit(k2, (shape[1],), self.param_dtype),
            }

        if count is None:
            return self.param(name, one)
        return self.param(name, lambda key: jax.vmap(one)(jax.random.split(key, count)))

    def _bn(self, name: str, lead: tuple[int, ...]) -> tuple[dict[str, Array], Any]:
        """BatchNorm params and running-statistics variable ``name`` of shape ``lead + (w,)``."""
        shape = (*lead, self.layer_width)
        if self.has_variable("params", name):
            p = self.get_variable("params", name)
        else:
            p = self.param(
                name,
                lambda _key: {
                    "scale": jnp.ones(shape, self.param_dtype),
                    "bias": jnp.zeros(shape, self.param_dtype),
                },
            )
        stats = self.variable(
            "batch_stats",
            name,
            lambda: {"mean": jnp.zeros(shape, jnp.float32), "var": jnp.ones(shape, jnp.float32)},
        )
        return p, stats

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
        L, w = self.num_layers, plan.layer_width
        wants = {"hidden_0": (plan.segment_size, w)}
        if self.stack_layers and L > 1:
            wants["hidden_stack"] = (L - 1, plan.segment_size + w, w)
        else:
            wants.update({f"hidden_{k}": (plan.hidden_in_features(k), w) for k in range(1, L)})
        for name, want in wants.items():
            have = tuple(params[name]["kernel"].shape) if name in params else None
            if have != want:
                raise ValueError(
                    f"params[{name!r}]['kernel'] has shape {have}, expected {want} "
                    f"(stack_layers={self.stack_layers})"
                )

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
        L, s, w = self.num_layers, plan.segment_size, self.layer_width
        params: dict[str, Any] = {"hidden_0": self._param("hidden_0", s, (s, w))}
        stats_vars = {}
        if self.batch_norm:
            params["bn_0"], stats_vars["bn_0"] = self._bn("bn_0", ())
        if self.stack_layers and L > 1:
            params["hidden_stack"] = self._param("hidden_stack", s + w, (s + w, w), count=L - 1)
            if self.batch_norm:
                params["bn_stack"], stats_vars["bn_stack"] = self._bn("bn_stack", (L - 1,))
        else:
            for k in range(1, L):
                params[f"hidden_{k}"] = self._param(f"hidden_{k}", s + w, (s + w, w))
                if self.batch_norm:
                    params[f"bn_{k}"], stats_vars[f"bn_{k}"] = self._bn(f"bn_{k}", ())
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
