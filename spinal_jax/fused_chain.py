"""The sequential part of a SpinalDense chain with BatchNorm and ReLU (the V3 head) in one kernel a layer.

Hidden layer ``k`` of such a chain computes ``h_k = relu(BN(p_k + (h_{k-1} * m_k) @ K_k))``: ``p_k`` the
input-segment product plus bias (no dependence on the chain, computed by the caller for all layers at
once), ``m_k`` the dropout multiplier on ``h_{k-1}`` and ``K_k`` the rows of layer ``k``'s kernel that read
``h_{k-1}``. In XLA ops each layer is several small kernels (a GEMM and its split-K reduction,
BatchNorm's sums, the normalisation), which the chain makes run one after another. ``fused_chain`` runs
each layer's forward (product, batch statistics, normalisation, ReLU) and backward (the gradient arriving
through the next layer's product, ReLU's and BatchNorm's gradients) in Pallas (Triton) on one CUDA GPU.
BatchNorm is per column, so a layer is one program per ``COLUMNS`` columns, each holding all rows of the
batch: the statistics are exact two-pass sums in registers. A layer needs all columns of the layer before
it, so each pass is one kernel a layer. The kernels' gradients and everything off the chain stay with XLA
(batched GEMMs over the layers). Given the stored running statistics, the forward kernels also update them
in place (``UPDATE_RUNNING_STATS``), so that no small XLA kernel a layer and statistic does it after the
chain. Elsewhere (CPU, other GPUs) the same function runs as XLA ops; the tests run the kernels in
interpret mode against them.

``experiments/results/PERF_NOTES.md`` has the measurements (rounds 6 and 19 to 23), also of the forms that
were measured on an H100 and removed again: the whole chain as one program on one SM (round 6: slower than
XLA), each pass as one kernel whose programs wait for each other between layers (round 19: slower), the
output Dense's dropout mask applied inside the kernels (round 21: no gain), the layers without a product
inside their neighbours' kernels (round 22: no gain; the last three are in commit ec58784) and the
parameters read where they are stored (round 23: slower; commit ba045bd).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from spinal_jax.normalization import batch_norm_input_gradient, stats_dtype, updated_running_stats

#: ``False`` turns the kernel path off everywhere (``SpinalDense`` then runs its chain as XLA ops).
ENABLED = True
#: a batch of at most this many rows is one block of the kernel.
MAX_ROWS = 128
#: columns of one program: each layer's pass is ``width / COLUMNS`` programs (BatchNorm is per column).
COLUMNS = 32
_NUM_WARPS = 4
#: ``SpinalDense`` hands its stored running statistics to ``fused_chain`` (``running``, ``update``), whose
#: forward kernels update them in place (aliased buffers), instead of one XLA kernel a layer and statistic
#: after the chain (8 for the VGG-5 head, ~9.5 µs a step on an H100: PERF_NOTES.md, round 22). On since round
#: 23 (the bf16 SpinalVGG epoch 6 ms shorter on an H100).
UPDATE_RUNNING_STATS = True

Array = jax.Array
_F32 = jnp.float32


class RunningUpdate(NamedTuple):
    """Where each layer's running statistics are in ``fused_chain``'s ``running`` arrays, and how they move.

    ``layout[k]`` = (index of layer ``k``'s running mean in ``running``, index of its running variance, row of
    them in those arrays, or -1 when they are ``(w,)`` arrays of their own); ``momentum`` is Flax's (weight of
    the old value), ``unbiased`` as ``normalization.updated_running_stats``' ``unbiased_running_var``."""

    layout: tuple[tuple[int, int, int], ...]
    momentum: float
    unbiased: bool


def xla_running_update(running: tuple[Array, ...], mean: Array, var: Array, rows: int,
                       update: RunningUpdate) -> tuple[Array, ...]:
    """``running`` with each layer's statistics moved towards its batch ``mean`` and ``var`` (L, w), as XLA ops."""
    new = list(running)
    for k, (mi, vi, row) in enumerate(update.layout):
        old = [running[i] if row < 0 else running[i][row] for i in (mi, vi)]
        moved = updated_running_stats(*old, mean[k], var[k], rows, update.momentum, update.unbiased)
        for i, value in zip((mi, vi), moved, strict=True):
            new[i] = value if row < 0 else new[i].at[row].set(value)
    return tuple(new)


def applies(rows: int, width: int, num_layers: int, dtype: Any) -> bool:
    """Whether ``SpinalDense`` takes the fused chain: one GPU in the process, 2..``MAX_ROWS`` rows, a
    power-of-two width from 16 to 128, at least two layers, and float32 or 16-bit compute."""
    return (
        ENABLED
        and jax.default_backend() == "gpu"
        and jax.device_count() == 1
        and 1 < rows <= MAX_ROWS
        and 16 <= width <= 128
        and width & (width - 1) == 0
        and num_layers >= 2
        and jnp.dtype(dtype) in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    )


def _block_rows(rows: int) -> int:
    return max(16, 1 << (rows - 1).bit_length())


# --- the XLA form (reference, and the path off CUDA) -------------------------------------------------


def _normalized(z: Array, rows: int, epsilon: float) -> tuple[Array, Array, Array, Array]:
    """Centred ``z`` (float32 or float64), batch mean, biased variance and ``1 / sqrt(var + eps)``."""
    zf = z.astype(stats_dtype(z.dtype))
    mean = jnp.sum(zf, axis=0) / rows
    centred = zf - mean
    var = jnp.sum(centred * centred, axis=0) / rows
    return centred, mean, var, jax.lax.rsqrt(var + epsilon)


def xla_forward(proj: Array, hmask: Array | None, kernels: Array, scale: Array, bias: Array,
                epsilon: float, *, running: tuple[Array, ...] = (),
                update: RunningUpdate | None = None) -> tuple[Array, ...]:
    """``(hcat (n, L*w), z (L, n, w), mean (L, w), var (L, w))``: the chain as XLA ops; with ``update``,
    then the ``running`` arrays updated (``xla_running_update``)."""
    L, n, _ = proj.shape
    dtype, acc = proj.dtype, stats_dtype(proj.dtype)
    hs, zs, means, variances = [], [], [], []
    for k in range(L):
        z = proj[k].astype(acc)
        if k:
            hm = hs[-1] if hmask is None else hs[-1] * hmask[k - 1]
            z = z + jnp.dot(hm, kernels[k - 1], preferred_element_type=acc)
        z = z.astype(dtype)
        centred, mean, var, inv = _normalized(z, n, epsilon)
        y = centred * (inv * scale[k].astype(acc)) + bias[k].astype(acc)
        hs.append(jax.nn.relu(y).astype(dtype))
        zs.append(z)
        means.append(mean)
        variances.append(var)
    out = (jnp.concatenate(hs, axis=1), jnp.stack(zs), jnp.stack(means), jnp.stack(variances))
    if update is not None:
        out += xla_running_update(running, out[2], out[3], n, update)
    return out


def _bn_backward(g: Array, centred: Array, inv: Array, scale: Array, dmean: Array, dvar: Array,
                 rows: int) -> tuple[Array, Array, Array]:
    """BatchNorm's input gradient, ``sum(g * xhat)`` and ``sum(g)`` for the output gradient ``g``."""
    sum_g = jnp.sum(g, axis=0)
    sum_gx = jnp.sum(g * (centred * inv), axis=0)
    dz = batch_norm_input_gradient(g, centred, inv, scale.astype(g.dtype), sum_g, sum_gx, dmean, dvar, rows)
    return dz, sum_gx, sum_g


def xla_backward(hcat: Array, z: Array, hmask: Array | None, kernels: Array, scale: Array,
                 mean: Array, var: Array, dhcat: Array, dmean: Array, dvar: Array,
                 epsilon: float) -> tuple[Array, Array, Array]:
    """``(dz (L, n, w), dscale (L, w), dbias (L, w))``: the chain's backward as XLA ops (``dhcat``: the
    gradient of the hidden outputs)."""
    L, n, w = z.shape
    acc = stats_dtype(z.dtype)
    dzs, dscales, dbiases = [None] * L, [None] * L, [None] * L
    carry = None
    for k in reversed(range(L)):
        g = dhcat[:, k * w:(k + 1) * w].astype(acc)
        if carry is not None:
            g = g + carry
        g = jnp.where(hcat[:, k * w:(k + 1) * w] > 0, g, 0.0)
        centred = z[k].astype(acc) - mean[k]
        dz, dscales[k], dbiases[k] = _bn_backward(
            g, centred, jax.lax.rsqrt(var[k] + epsilon), scale[k], dmean[k], dvar[k], n
        )
        dzs[k] = dz.astype(z.dtype)
        if k:
            carry = jnp.dot(dzs[k], kernels[k - 1].T, preferred_element_type=acc)
            if hmask is not None:
                carry = carry * hmask[k - 1].astype(acc)
    return jnp.stack(dzs), jnp.stack(dscales), jnp.stack(dbiases)


# --- the Pallas (Triton) form --------------------------------------------------------------------------


def _index(k: int) -> Array:
    """A static layer index as an int32 scalar (Pallas' interpret mode does not take Python ints in ref indices)."""
    return jnp.int32(k)


def _rows_inside(block: int, rows: int, width: int) -> Array:
    return jnp.broadcast_to((jnp.arange(block) < rows)[:, None], (block, width))


def _pass(layer_body, order: range, fixed: list, outputs: tuple, width: int, interpret: bool,
          initial: tuple = ()) -> tuple:
    """Run the layers in ``order``, one ``pallas_call`` a layer of one program per ``COLUMNS`` columns, the
    chain's outputs so far carried from call to call as aliased buffers. ``initial``: the arrays that the
    last ``len(initial)`` outputs start from (updated in place).

    ``layer_body(k, first, count, in_refs, out_refs)`` computes and stores columns ``first .. first+count-1``
    of layer ``k``."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    cb = min(COLUMNS, width)
    nin, nout, ninit = len(fixed), len(outputs), len(initial)
    buffers, aliases = tuple(initial), {nin + i: nout - ninit + i for i in range(ninit)}
    for k in order:
        def kernel(*refs, k=k):  # refs: the fixed operands, the carried buffers, the outputs (aliased to them)
            layer_body(k, pl.program_id(0) * cb, cb, refs[:nin], refs[-nout:])

        operands = [*fixed, *buffers]
        buffers = pl.pallas_call(
            kernel,
            out_shape=outputs,
            grid=(width // cb,),
            in_specs=[pl.BlockSpec(memory_space=pl.ANY)] * len(operands),
            out_specs=[pl.BlockSpec(memory_space=pl.ANY)] * nout,
            input_output_aliases=aliases,
            compiler_params=plgpu.CompilerParams(num_warps=_NUM_WARPS),
            interpret=interpret,
        )(*operands)
        aliases = {nin + i: i for i in range(nout)}
    return tuple(buffers)


def pallas_forward(proj: Array, hmask: Array | None, kernels: Array, scale: Array, bias: Array,
                   epsilon: float, *, running: tuple[Array, ...] = (), update: RunningUpdate | None = None,
                   interpret: bool = False) -> tuple[Array, ...]:
    """``xla_forward`` as Pallas programs, one kernel a layer (``interpret=True`` runs them on any backend,
    for tests)."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    L, n, w = proj.shape
    dtype = proj.dtype
    block = _block_rows(n)
    masked = hmask is not None
    outputs = (
        jax.ShapeDtypeStruct((n, L * w), dtype),
        jax.ShapeDtypeStruct((L, n, w), dtype),
        jax.ShapeDtypeStruct((L, w), _F32),
        jax.ShapeDtypeStruct((L, w), _F32),
    )
    running = running if update is not None else ()
    outputs += tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in running)

    def layer(k: int, first, cb: int, in_refs, out_refs) -> None:
        proj_ref, *in_refs = in_refs
        mask_ref = in_refs.pop(0) if masked else None
        kern_ref, scale_ref, bias_ref = in_refs
        hcat_ref, z_ref, mean_ref, var_ref, *running_refs = out_refs
        cols, rows = pl.ds(first, cb), pl.ds(0, block)
        inside = _rows_inside(block, n, cb)
        z = plgpu.load(proj_ref.at[_index(k), rows, cols], mask=inside, other=0).astype(_F32)
        if k:
            whole = _rows_inside(block, n, w)
            hm = plgpu.load(hcat_ref.at[rows, pl.ds((k - 1) * w, w)], mask=whole, other=0)
            if masked:
                hm = hm * plgpu.load(mask_ref.at[_index(k - 1), rows, :], mask=whole, other=0)
            z = z + jnp.dot(hm, kern_ref.at[_index(k - 1), :, cols][...], preferred_element_type=_F32)
        z = z.astype(dtype)
        plgpu.store(z_ref.at[_index(k), rows, cols], z, mask=inside)
        zf = z.astype(_F32)  # 0 in the rows past n
        mean = jnp.sum(zf, axis=0) / n
        centred = jnp.where(inside, zf - mean[None, :], 0.0)
        var = jnp.sum(centred * centred, axis=0) / n
        gain = jax.lax.rsqrt(var + epsilon) * scale_ref.at[_index(k), cols][...].astype(_F32)
        y = centred * gain[None, :] + bias_ref.at[_index(k), cols][...].astype(_F32)[None, :]
        h = jnp.where(inside, jnp.maximum(y, 0.0), 0.0).astype(dtype)
        plgpu.store(hcat_ref.at[rows, pl.ds(k * w + first, cb)], h, mask=inside)
        mean_ref.at[_index(k), cols][...] = mean
        var_ref.at[_index(k), cols][...] = var
        if running_refs:  # this layer's running statistics, read and written in place
            mi, vi, row = update.layout[k]
            stored_stats = [running_refs[i].at[cols] if row < 0 else running_refs[i].at[_index(row), cols]
                            for i in (mi, vi)]
            moved = updated_running_stats(*(ref[...] for ref in stored_stats), mean, var, n, update.momentum,
                                          update.unbiased)
            for ref, value in zip(stored_stats, moved, strict=True):
                ref[...] = value.astype(ref.dtype)

    fixed = [proj] + ([hmask] if masked else []) + [kernels, scale, bias]
    return _pass(layer, range(L), fixed, outputs, w, interpret, tuple(running))


def pallas_backward(hcat: Array, z: Array, hmask: Array | None, kernels: Array, scale: Array,
                    mean: Array, var: Array, dhcat: Array, dmean: Array, dvar: Array,
                    epsilon: float, *, interpret: bool = False) -> tuple[Array, Array, Array]:
    """``xla_backward`` as Pallas programs, one kernel a layer (``interpret`` as for ``pallas_forward``)."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    L, n, w = z.shape
    block = _block_rows(n)
    masked = hmask is not None
    outputs = (
        jax.ShapeDtypeStruct((L, n, w), z.dtype),
        jax.ShapeDtypeStruct((L, w), _F32),
        jax.ShapeDtypeStruct((L, w), _F32),
    )

    def layer(k: int, first, cb: int, in_refs, out_refs) -> None:
        h_ref, z_ref, *in_refs = in_refs
        mask_ref = in_refs.pop(0) if masked else None
        kern_ref, scale_ref, mean_ref, var_ref, dh_ref, dmean_ref, dvar_ref = in_refs
        dz_ref, dscale_ref, dbias_ref = out_refs
        cols, rows = pl.ds(first, cb), pl.ds(0, block)
        inside = _rows_inside(block, n, cb)
        in_hcat = (rows, pl.ds(k * w + first, cb))
        g = plgpu.load(dh_ref.at[in_hcat], mask=inside, other=0).astype(_F32)
        if k < L - 1:  # the gradient from layer k + 1 through its input h_k
            whole = _rows_inside(block, n, w)
            dz_next = plgpu.load(dz_ref.at[_index(k + 1), rows, :], mask=whole, other=0)
            g = g + jax.lax.dot_general(
                dz_next, kern_ref.at[_index(k), cols, :][...], (((1,), (1,)), ((), ())),
                preferred_element_type=_F32,
            ) * (1.0 if not masked else
                 plgpu.load(mask_ref.at[_index(k), rows, cols], mask=inside, other=0).astype(_F32))
        h = plgpu.load(h_ref.at[in_hcat], mask=inside, other=0)
        g = jnp.where(h > 0, g, 0.0)
        zf = plgpu.load(z_ref.at[_index(k), rows, cols], mask=inside, other=0).astype(_F32)
        centred = jnp.where(inside, zf - mean_ref.at[_index(k), cols][...][None, :], 0.0)
        inv = jax.lax.rsqrt(var_ref.at[_index(k), cols][...] + epsilon)
        sum_g = jnp.sum(g, axis=0)
        sum_gx = jnp.sum(g * (centred * inv[None, :]), axis=0)
        dz = batch_norm_input_gradient(
            g, centred, inv[None, :], scale_ref.at[_index(k), cols][...].astype(_F32)[None, :],
            sum_g[None, :], sum_gx[None, :], dmean_ref.at[_index(k), cols][...][None, :],
            dvar_ref.at[_index(k), cols][...][None, :], n,
        )
        dz = jnp.where(inside, dz, 0.0).astype(z.dtype)
        plgpu.store(dz_ref.at[_index(k), rows, cols], dz, mask=inside)
        dscale_ref.at[_index(k), cols][...] = sum_gx
        dbias_ref.at[_index(k), cols][...] = sum_g

    fixed = [hcat, z] + ([hmask] if masked else []) + [kernels, scale, mean, var, dhcat, dmean, dvar]
    return _pass(layer, range(L - 1, -1, -1), fixed, outputs, w, interpret)


# --- the differentiable function --------------------------------------------------------------------


def _on_platform(pallas_fn, xla_fn, args: tuple, epsilon: float, **keyword_arrays):
    """``pallas_fn`` on CUDA GPUs, ``xla_fn`` elsewhere (chosen when lowering); ``keyword_arrays``: arrays
    (or tuples of them, or ``None``) passed by keyword, static keywords bound with ``functools.partial``."""
    names = list(keyword_arrays)

    def run(fn):
        return lambda *a: fn(*a[:len(args)], epsilon, **dict(zip(names, a[len(args):], strict=True)))

    return jax.lax.platform_dependent(*args, *keyword_arrays.values(), cuda=run(pallas_fn), default=run(xla_fn))


def fused_chain(proj: Array, hmask: Array | None, kernels: Array, scale: Array, bias: Array,
                epsilon: float, running: tuple[Array, ...] = (), update: RunningUpdate | None = None) -> tuple:
    """The chain's hidden outputs ``hcat`` (n, L*w) in layer order, batch means and biased variances (L, w),
    and with ``update`` the ``running`` statistics updated.

    ``proj`` (L, n, w): each layer's input-segment product plus bias, in the compute dtype; ``hmask``
    (L-1, n, w) or ``None``: dropout multipliers on ``h_0 .. h_{L-2}``; ``kernels`` (L-1, w, w): the
    ``h``-rows of layers 1..L-1's kernels, in the compute dtype; ``scale``, ``bias`` (L, w): BatchNorm's;
    ``running``: the stored running statistics, where ``update`` (``RunningUpdate``) says (``SpinalDense``
    passes them when ``UPDATE_RUNNING_STATS``; no gradient flows into or out of them).
    On one CUDA GPU (shapes: see ``applies``) each layer's forward and backward are a Pallas kernel;
    elsewhere XLA ops.
    """
    hcat, mean, var, new_running = _chain(proj, hmask, kernels, scale, bias, tuple(running), epsilon, update)
    return (hcat, mean, var) if update is None else (hcat, mean, var, new_running)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _chain(proj, hmask, kernels, scale, bias, running, epsilon, update):
    return _chain_fwd(proj, hmask, kernels, scale, bias, running, epsilon, update)[0]


def _chain_fwd(proj, hmask, kernels, scale, bias, running, epsilon, update):
    forward = functools.partial(pallas_forward, update=update), functools.partial(xla_forward, update=update)
    hcat, z, mean, var, *new_running = _on_platform(*forward, (proj, hmask, kernels, scale, bias), epsilon,
                                                    running=running)
    residuals = (hcat, z, hmask, kernels, scale, bias, mean, var)
    return (hcat, mean, var, tuple(new_running)), residuals


def _chain_bwd(epsilon, update, res, cotangents):
    hcat, z, hmask, kernels, scale, bias, mean, var = res
    dhcat, dmean, dvar, _ = cotangents
    args = (hcat, z, hmask, kernels, scale, mean, var, dhcat.astype(hcat.dtype), dmean, dvar)
    dz, dscale, dbias = _on_platform(pallas_backward, xla_backward, args, epsilon)
    L, n, w = z.shape
    h_in = hcat[:, : (L - 1) * w].reshape(n, L - 1, w).transpose(1, 0, 2)  # h_0 .. h_{L-2}, (L-1, n, w)
    h_read = h_in if hmask is None else h_in * hmask
    acc = stats_dtype(z.dtype)
    dkernels = jnp.einsum("lnv,lnw->lvw", h_read, dz[1:], preferred_element_type=acc)
    # The mask's gradient is unused in training (the mask comes from random bits): XLA drops it.
    dhmask = None
    if hmask is not None:
        dhmask = (jnp.einsum("lnw,lvw->lnv", dz[1:], kernels, preferred_element_type=acc) * h_in).astype(hmask.dtype)
    # None: no gradient for the running statistics (and none kept alive for it, so they update in place).
    return (dz, dhmask, dkernels.astype(kernels.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype), None)


_chain.defvjp(_chain_fwd, _chain_bwd)
