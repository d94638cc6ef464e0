"""experiments/kernel_profile.py: kernels charged to JAX name scopes through the compiled program's HLO."""

from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _kernel_profile():
    spec = importlib.util.spec_from_file_location("kernel_profile", os.path.join(ROOT, "experiments", "kernel_profile.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hlo_scopes_and_scope_totals_of_a_compiled_loop():
    """Instructions inside a scan's body get the JAX scope they were traced in, the loop's prefix dropped;
    kernels named after them are summed by scope, kernels without an instruction under ``NO_SCOPE``."""
    kp = _kernel_profile()

    def body(carry, x):
        with jax.named_scope("head"):
            y = jnp.tanh(carry * x + 1.0)
        with jax.named_scope("tail"):
            return jnp.sin(y) * 2.0, y.sum()

    def run(c, xs):
        return jax.lax.scan(body, c, xs)

    text = jax.jit(run).lower(jnp.ones(8), jnp.ones((5, 8))).compile().as_text()
    scopes = kp.hlo_scopes(text)
    heads = [k for k, v in scopes.items() if v.startswith("head/")]
    tails = [k for k, v in scopes.items() if v.startswith("tail/")]
    assert heads and tails, scopes
    kernels = {heads[0]: [1.0, 3.0], tails[0]: [2.0, 5.0], "sm90_xmma_gemm_f32": [1.0, 7.0]}
    totals = kp.scope_totals(kernels, scopes, depth=1)
    assert totals == {kp.NO_SCOPE: [1.0, 7.0], "tail": [2.0, 5.0], "head": [1.0, 3.0]}
    assert list(totals) == [kp.NO_SCOPE, "tail", "head"]  # largest first
