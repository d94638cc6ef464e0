"""Kernel time and agreement of BatchNorm's column sums on the VGG-5's activation shapes (batch 100):
``spinal_jax.column_sums``' Pallas kernel (+ XLA's sum of its partial rows) against XLA's reduction.

The sums BatchNorm takes: the forward's ``sum(x - k)``, ``sum((x - k)^2)`` and the backward's
``sum(g)``, ``sum(g * xhat)`` (``g`` masked by the ReLU after the BatchNorm in ``backward_relu``). Each is called ``--calls`` times under ``jax.profiler`` and its kernels
are summed per call (``kernel_profile``); the largest difference to a float64 sum is recorded beside.

    PYTHONPATH=.:experiments python experiments/bench_column_sums.py --out column_sums.jsonl
"""

from __future__ import annotations

import argparse
import json
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from kernel_profile import kernel_table

from spinal_jax import column_sums, normalization

SHAPES = ((100, 28, 28, 64), (100, 14, 14, 128), (100, 7, 7, 256), (100, 3, 3, 256))
PATHS = {"xla": column_sums.xla_column_sums, "pallas": column_sums.pallas_column_sums}


def kernel_microseconds(fn, args, calls: int) -> tuple[float, float]:
    """(GPU kernel microseconds, kernels) per call of the jitted ``fn``."""
    jax.block_until_ready(fn(*args))
    with tempfile.TemporaryDirectory() as trace:
        jax.profiler.start_trace(trace)
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        jax.profiler.stop_trace()
        table = kernel_table(trace, calls, top=0)
    return sum(v[1] for v in table.values()), sum(v[0] for v in table.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--out", default="column_sums.jsonl")
    args = parser.parse_args()
    key = jax.random.PRNGKey(0)
    rows = []
    for shape in SHAPES:
        for dtype in (jnp.bfloat16, jnp.float32):
            x = (jax.random.normal(key, shape) * 2 + 1).astype(dtype).reshape(-1, shape[-1])
            g = jax.random.normal(jax.random.fold_in(key, 1), x.shape).astype(dtype)
            mean, inv = jnp.full(shape[-1], 1.0), jnp.full(shape[-1], 0.5)
            cases = {
                "forward": (normalization._shifted_sums, [x], [x[0].astype(jnp.float32)]),
                "backward": (normalization._gradient_sums, [g, x], [mean, inv]),
                "backward_relu": (normalization._gradient_sums, [g, x], [mean, inv, inv * 1.5, jnp.full(shape[-1], -0.25)]),
            }
            for case, (fn, arrays, vectors) in cases.items():
                exact = [np.sum(np.asarray(v, np.float64), axis=0) for v in fn(arrays, vectors)]
                for path, sums in PATHS.items():
                    run = jax.jit(lambda a, v, sums=sums, fn=fn: sums(fn, a, v))
                    got = run(arrays, vectors)
                    err = max(float(np.max(np.abs(np.asarray(o, np.float64) - e)) / (np.max(np.abs(e)) + 1e-30))
                              for o, e in zip(got, exact, strict=True))
                    us, kernels = kernel_microseconds(run, (arrays, vectors), args.calls)
                    rows.append({"shape": shape, "dtype": jnp.dtype(dtype).name, "case": case, "path": path,
                                 "us": round(us, 2), "kernels": round(kernels, 2), "max_rel_err": err,
                                 "device": jax.devices()[0].device_kind, "jax": jax.__version__})
                    print(rows[-1], flush=True)
    with open(args.out, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
