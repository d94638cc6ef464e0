"""On the GPU: ``fused_chain``'s compiled Triton programs (a kernel a layer) against its XLA form, and a
SpinalDense V3 head's training step with the fused chain against its unfused chain (the VGG-5 head's shapes:
batch 100, 256 features, width 128, 4 layers, dropout 0.5; the running statistics updated as the library
does, or, in ``check_head_step_kernel_running_stats``, by the chain's kernels), in float32 and bfloat16.
Each side's error is measured against float32 at "highest" precision, and the kernel side's must be at most
twice the XLA side's (see ``ERROR_FLOOR``). Writes the figures as JSON (``--out``) and exits 1 where one is
over; ``--checks`` runs some of the checks.

    PYTHONPATH=. python experiments/check_fused_chain_gpu.py --out fused_chain_gpu_check.json
    PYTHONPATH=. python experiments/check_fused_chain_gpu.py --checks check_head_step --out head_step.json
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from spinal_jax import fused_chain
from spinal_jax.models import heads

# Errors are measured against the float32 computation at "highest" matmul precision (no TF32); an
# error below one unit of rounding of the compute's matmul inputs (bfloat16: 2^-8; float32, which the
# GPU multiplies in TF32: 2^-11) counts as that unit. The kernel path passes when its error is at most
# RATIO_LIMIT times the XLA path's.
ERROR_FLOOR = {"float32": 2.0**-11, "bfloat16": 2.0**-8}
RATIO_LIMIT = 2.0


def _max_rel(a, b, floor: float = 0.0) -> float:
    """Largest difference over the largest value of ``b`` (or ``floor``, if larger)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), floor, 1e-30))


def _chain_args(dtype):
    L, n, w = 4, 100, 128
    ks = jax.random.split(jax.random.PRNGKey(0), 8)
    proj = (jax.random.normal(ks[0], (L, n, w)) + 0.5).astype(dtype)
    hmask = (jax.random.bernoulli(ks[1], 0.5, (L - 1, n, w)) * 2.0).astype(dtype)
    kernels = (jax.random.normal(ks[2], (L - 1, w, w)) / np.sqrt(w)).astype(dtype)
    scale = jax.random.uniform(ks[3], (L, w), minval=0.5, maxval=1.5)
    bias = 0.1 * jax.random.normal(ks[4], (L, w))
    cots = (jax.random.normal(ks[5], (n, L * w)).astype(dtype), 0.1 * jax.random.normal(ks[6], (L, w)),
            0.1 * jax.random.normal(ks[7], (L, w)))
    return (proj, hmask, kernels, scale, bias), cots


def _ratios(got: dict, base: dict, ref: dict, floor: float, floors: dict | None = None) -> dict[str, float]:
    """``{name: error of got / max(error of base, floor)}``, errors against ``ref`` (``floors``: per name)."""
    floors = floors or {}
    return {name: _max_rel(got[name], ref[name], floors.get(name, 0.0))
            / max(_max_rel(base[name], ref[name], floors.get(name, 0.0)), floor) for name in ref}


def check_kernels(dtype) -> dict[str, float]:
    """The compiled programs' outputs against the XLA form's, both measured against the XLA form at
    "highest" precision; the backward passes all run at the reference forward's residuals."""
    args, cots = _chain_args(dtype)
    hmask, kernels, scale = args[1:4]

    def forward(fn):
        out = jax.jit(lambda *a: fn(*a, 1e-5))(*args)  # a new trace for each call
        return dict(zip(("hcat", "z", "mean", "var"), out, strict=True))

    def backward(fn, fwd):
        out = jax.jit(lambda *a: fn(*a, 1e-5))(
            fwd["hcat"], fwd["z"], hmask, kernels, scale, fwd["mean"], fwd["var"], *cots)
        return dict(zip(("dz", "dscale", "dbias"), out, strict=True))

    with jax.default_matmul_precision("highest"):
        ref = forward(fused_chain.xla_forward)
        ref |= backward(fused_chain.xla_backward, ref)
    got = forward(fused_chain.pallas_forward) | backward(fused_chain.pallas_backward, ref)
    base = forward(fused_chain.xla_forward) | backward(fused_chain.xla_backward, ref)
    return _ratios(got, base, ref, ERROR_FLOOR[jnp.dtype(dtype).name])


def _head_step(dtype, fused: bool):
    """Outputs, gradients (parameters and input) and running statistics of one training step of the
    VGG-5's spinal head (same parameters, input and dropout masks for every call)."""
    model = heads.spinal_head("v3", 10, 128, dtype=dtype, name=None)
    x = jax.random.normal(jax.random.PRNGKey(1), (100, 256)) + 0.3
    variables = model.init(jax.random.PRNGKey(2), x)

    def step(params, x):
        def loss(params, x):
            y, new = model.apply({**variables, "params": params}, x, train=True,
                                 rngs={"dropout": jax.random.PRNGKey(3)}, mutable=["batch_stats"])
            return jnp.sum(jnp.sin(y.astype(jnp.float32))), (y, new)

        (_, aux), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
        return aux, grads

    fused_chain.ENABLED = fused
    try:
        assert fused_chain.applies(100, 128, 4, dtype) == fused
        return jax.jit(lambda *a: step(*a))(variables["params"], x)  # a new trace for each setting
    finally:
        fused_chain.ENABLED = True


def check_head_step(dtype) -> dict[str, float]:
    """Each output's error against the float32 unfused step at "highest" precision, fused chain over
    unfused chain in ``dtype`` (``{name: fused error / max(unfused error, ERROR_FLOOR)}``)."""
    with jax.default_matmul_precision("highest"):
        reference = _head_step(jnp.float32, False)
    fused, unfused = _head_step(dtype, True), _head_step(dtype, False)
    named = [{jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(t)}
             for t in (fused, unfused, reference)]
    # The hidden Dense biases before BatchNorm have gradient 0 in exact arithmetic (round-off): their
    # errors are measured against 1e-3 of the largest gradient.
    floor = 1e-3 * max(float(np.max(np.abs(np.asarray(b, np.float32)))) for b in jax.tree_util.tree_leaves(reference[1]))
    floors = {name: floor for name in named[2] if "hidden" in name and "bias" in name}
    return _ratios(*named, ERROR_FLOOR[jnp.dtype(dtype).name], floors)


def check_head_step_kernel_running_stats(dtype) -> dict[str, float]:
    """``check_head_step`` with the running statistics updated in the chain's kernels (``UPDATE_RUNNING_STATS``)."""
    saved, fused_chain.UPDATE_RUNNING_STATS = fused_chain.UPDATE_RUNNING_STATS, True
    try:
        return check_head_step(dtype)
    finally:
        fused_chain.UPDATE_RUNNING_STATS = saved


CHECKS = (check_kernels, check_head_step, check_head_step_kernel_running_stats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--checks", default=",".join(c.__name__ for c in CHECKS),
                        help="comma-separated checks to run (default: all)")
    args = parser.parse_args()
    by_name = {c.__name__: c for c in CHECKS}
    unknown = sorted(set(args.checks.split(",")) - set(by_name))
    if unknown:
        parser.error(f"unknown checks {unknown}; choose from {sorted(by_name)}")
    checks = [by_name[name] for name in args.checks.split(",")]
    report = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "error_floor": ERROR_FLOOR,
              "ratio_limit": RATIO_LIMIT, "columns": fused_chain.COLUMNS, "num_warps": fused_chain._NUM_WARPS,
              "update_running_stats": fused_chain.UPDATE_RUNNING_STATS, "checks": {}}
    failed = []
    for dtype in (jnp.float32, jnp.bfloat16):
        name = jnp.dtype(dtype).name
        for check in checks:
            diffs = check(dtype)
            worst = max(diffs.values())
            report["checks"][f"{check.__name__}.{name}"] = {"worst": worst, "limit": RATIO_LIMIT,
                                                             "by_output": diffs}
            print(f"{check.__name__} {name}: worst {worst:.2e} (limit {RATIO_LIMIT})", flush=True)
            if not worst <= RATIO_LIMIT:
                failed.append(f"{check.__name__}.{name}")
    report["failed"] = failed
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
