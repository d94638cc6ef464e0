"""fused_chain: the kernels (interpret mode here) against the XLA form, the hand-written gradient against
autodiff, the Triton lowering for CUDA, and SpinalDense with the fused chain against its unfused chain."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spinal_jax import fused_chain, layers
from spinal_jax.models import heads


def _chain_inputs(key, L, n, w, dtype, masked=True):
    ks = jax.random.split(key, 6)
    proj = (jax.random.normal(ks[0], (L, n, w)) + 0.5).astype(dtype)
    hmask = None
    if masked:
        hmask = (jax.random.bernoulli(ks[1], 0.5, (L - 1, n, w)) * 2.0).astype(dtype)
    kernels = (jax.random.normal(ks[2], (L - 1, w, w)) / np.sqrt(w)).astype(dtype)
    scale = jax.random.uniform(ks[3], (L, w), minval=0.5, maxval=1.5)
    bias = 0.1 * jax.random.normal(ks[4], (L, w))
    return proj, hmask, kernels, scale, bias


def _running(key, L, w, stacked):
    """Stored running statistics (means, positive variances) in the per-layer or the stacked layout, and the
    ``RunningUpdate`` saying where each layer's are (PyTorch's momentum and unbiased variance)."""
    shapes = [(w,), (w,)] + ([(L - 1, w)] * 2 if stacked else [(w,)] * (2 * (L - 1)))
    ks = jax.random.split(key, len(shapes))
    running = tuple(jax.random.normal(k, sh) if i % 2 == 0 else jax.random.uniform(k, sh, minval=0.5, maxval=2.0)
                    for i, (k, sh) in enumerate(zip(ks, shapes, strict=True)))
    layout = tuple((0, 1, -1) if k == 0 else (2, 3, k - 1) if stacked else (2 * k, 2 * k + 1, -1) for k in range(L))
    return running, fused_chain.RunningUpdate(layout, 0.9, True)


def _cotangents(key, L, n, w, dtype):
    ks = jax.random.split(key, 3)
    return (jax.random.normal(ks[0], (n, L * w)).astype(dtype),
            0.1 * jax.random.normal(ks[1], (L, w)), 0.1 * jax.random.normal(ks[2], (L, w)))


def _vjp(fn, args, cots):
    out, pullback = jax.vjp(fn, *args)
    return out, pullback(cots)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(("L", "n", "w", "masked"), [(4, 100, 128, True), (3, 37, 32, False), (2, 16, 16, True)])
def test_pallas_kernels_equal_the_xla_form(L, n, w, masked, dtype):
    """Forward outputs (hidden outputs, pre-activations, statistics, with ``update`` the running statistics
    updated, per layer or stacked) and the backward's outputs of the Pallas programs (a kernel a layer, one
    program per ``COLUMNS`` columns) equal the XLA form's, the rows past ``n`` (to the block's power of two)
    masked out."""
    eps = 1e-5
    proj, hmask, kernels, scale, bias = _chain_inputs(jax.random.PRNGKey(0), L, n, w, dtype, masked)
    running, update = _running(jax.random.PRNGKey(3), L, w, stacked=L == 3)
    want = fused_chain.xla_forward(proj, hmask, kernels, scale, bias, eps, running=running, update=update)
    got = fused_chain.pallas_forward(proj, hmask, kernels, scale, bias, eps, running=running, update=update,
                                     interpret=True)
    assert len(got) == 4 + len(running)
    moved = fused_chain.xla_running_update(running, got[2], got[3], n, update)
    assert not np.allclose(moved[0], running[0])  # the update moves them
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol, atol=tol)
    for a, b in zip(got[-len(running):], moved, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    hcat, z, mean, var = want[:4]
    dh, dmean, dvar = _cotangents(jax.random.PRNGKey(1), L, n, w, dtype)
    args = (hcat, z, hmask, kernels, scale, mean, var, dh, dmean, dvar, eps)
    want = fused_chain.xla_backward(*args)
    got = fused_chain.pallas_backward(*args, interpret=True)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        scale_ = float(np.max(np.abs(np.asarray(b, np.float32)))) + 1.0
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol, atol=tol * scale_)


@pytest.mark.parametrize("masked", [True, False])
def test_custom_gradient_equals_autodiff_float64(masked):
    """In float64 (the XLA form) the hand-written VJP and autodiff of the forward agree to 1e-10 for
    every input (the dropout mask included), cotangents on all three outputs."""
    L, n, w = 3, 12, 8
    with jax.enable_x64(True):
        args = _chain_inputs(jax.random.PRNGKey(2), L, n, w, jnp.float64, masked)
        args = tuple(None if a is None else a.astype(jnp.float64) for a in args)
        cots = tuple(c.astype(jnp.float64) for c in _cotangents(jax.random.PRNGKey(3), L, n, w, jnp.float64))

        def unfused(proj, hmask, kernels, scale, bias):
            hcat, _, mean, var = fused_chain.xla_forward(proj, hmask, kernels, scale, bias, 1e-5)
            return hcat, mean, var

        out, custom = _vjp(lambda *a: fused_chain.fused_chain(*a, 1e-5), args, cots)
        ref_out, auto = _vjp(unfused, args, cots)
        for a, b in zip(out, ref_out, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        for a, b in zip(custom, auto, strict=True):
            if b is None:
                assert a is None
                continue
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_kernels_lower_to_triton_for_cuda():
    """The forward and the gradient (dropout mask on; the gradient with the running statistics updated in
    the kernels) lower for CUDA from this CPU machine (the Pallas lowering; compiling the Triton IR needs the
    GPU): each pass one Triton call a layer; the running statistics go in and out of the forward's calls as
    aliased buffers."""
    L, n, w = 4, 100, 128
    proj, hmask, kernels, scale, bias = _chain_inputs(jax.random.PRNGKey(0), L, n, w, jnp.bfloat16)

    def loss(proj, kernels, scale, bias):
        hcat, mean, var = fused_chain.fused_chain(proj, hmask, kernels, scale, bias, 1e-5)
        return jnp.sum(hcat.astype(jnp.float32) ** 2) + jnp.sum(mean) + jnp.sum(var)

    def lowered(fn, **kwargs):
        return jax.jit(fn, **kwargs).trace(proj, kernels, scale, bias).lower(lowering_platforms=("cuda",)).as_text()

    forward = lowered(loss)
    assert forward.count("__gpu$xla.gpu.triton") == L
    running, update = _running(jax.random.PRNGKey(2), L, w, stacked=False)

    def loss_and_running(proj, kernels, scale, bias):
        hcat, _, _, new = fused_chain.fused_chain(proj, hmask, kernels, scale, bias, 1e-5, running, update)
        return jnp.sum(hcat.astype(jnp.float32) ** 2), new

    aliases = lowered(loss_and_running).count("output_operand_alias<") - forward.count("output_operand_alias<")
    assert aliases == len(running) * L  # every forward call updates them in place
    both = lowered(jax.grad(loss_and_running, argnums=(0, 1, 2, 3), has_aux=True))
    assert both.count("__gpu$xla.gpu.triton") == 2 * L


def test_dispatch_rules():
    """Off the GPU SpinalDense keeps its XLA chain; the shape rules hold."""
    assert not fused_chain.applies(100, 128, 4, jnp.float32)  # this machine has no GPU
    assert fused_chain._block_rows(100) == 128 and fused_chain._block_rows(3) == 16


def _v3_head(stack_layers, weight_sharing=None):
    return layers.SpinalDense(
        features=10, layer_width=32, num_layers=4, activation=jax.nn.relu, dropout_rate=0.5,
        batch_norm=True, unbiased_running_var=True, init_scheme="torch",
        stack_layers=stack_layers, weight_sharing=weight_sharing,
    )


@pytest.mark.parametrize(("update_running_stats", "one_dropout_draw"), [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize(("stack_layers", "weight_sharing"), [(False, None), (True, None), (False, (0, 1, 2, 1))])
def test_spinal_dense_fused_equals_unfused(monkeypatch, stack_layers, weight_sharing, update_running_stats,
                                           one_dropout_draw):
    """A V3 head (dropout, BatchNorm, ReLU) trained one step through the fused chain (its XLA form
    here; the running statistics updated by the chain or after it; the dropout masks drawn apart or at once)
    gives the unfused chain's outputs, parameter gradients, input gradient and running statistics, with the
    same dropout masks."""
    assert heads.DEFAULT_DROPOUT["v3"] == 0.5
    monkeypatch.setattr(fused_chain, "UPDATE_RUNNING_STATS", update_running_stats)
    monkeypatch.setattr(layers, "ONE_DROPOUT_DRAW", one_dropout_draw)
    model = _v3_head(stack_layers, weight_sharing)
    x = jax.random.normal(jax.random.PRNGKey(4), (50, 64)) + 0.3
    variables = model.init(jax.random.PRNGKey(5), x)
    rngs = {"dropout": jax.random.PRNGKey(6)}

    def run():
        def loss(params, x):
            y, new = model.apply({**variables, "params": params}, x, train=True, rngs=rngs, mutable=["batch_stats"])
            return jnp.sum(jnp.sin(y)), (y, new)

        (_, (y, new)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(variables["params"], x)
        return y, new, grads

    calls = []
    monkeypatch.setattr(fused_chain, "applies", lambda *a: calls.append(a) or False)
    unfused = run()
    monkeypatch.setattr(fused_chain, "applies", lambda *a: calls.append(a) or True)
    fused = run()
    assert calls[-1] == (50, 32, 4, jnp.float32)
    for a, b in zip(jax.tree_util.tree_leaves(fused), jax.tree_util.tree_leaves(unfused), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
