"""Benchmark SpinalDense forward+backward against a naive spinal head and a plain Dense head.

Usage (GPU):  python experiments/bench_spinal_dense.py [--out experiments/results/spinal_dense_benchmark.json]
Smoke test:   python experiments/bench_spinal_dense.py --quick --out /tmp/b.json   (CPU, seconds)

Timing: jit-compiled value_and_grad, warm-up excluded, ``block_until_ready``, median of many reps.
Compile time: lowering + XLA compilation of forward+backward at several depths, for both parameter
forms of SpinalDense: per-layer (default) and ``stack_layers=True``, each model in a fresh process
(``--quick``: in this one); the compile-time target (L=256 within 3x of L=4) is evaluated on the stacked form. Writes JSON and a Markdown table next to
it (same stem, ``.md``), atomically.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from spinal_jax import SpinalDense
from spinal_jax.files import write_atomic


class NaiveSpinal(nn.Module):
    """Textbook implementation: a Python loop of concatenate + Dense per layer."""

    features: int
    layer_width: int
    num_layers: int

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        s = int(np.round(d / 2))
        outs, prev = [], None
        for k in range(self.num_layers):
            seg = x[..., (k % 2) * s : (k % 2) * s + s]
            inp = seg if prev is None else jnp.concatenate([seg, prev], axis=-1)
            prev = nn.relu(nn.Dense(self.layer_width)(inp))
            outs.append(prev)
        return nn.Dense(self.features)(jnp.concatenate(outs, axis=-1))


class PlainHead(nn.Module):
    """Dense -> ReLU -> Dense with about the same number of parameters."""

    hidden: int
    features: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.features)(nn.relu(nn.Dense(self.hidden)(x)))


def n_params(tree) -> int:
    return int(sum(a.size for a in jax.tree_util.tree_leaves(tree)))


def step_fn(model):
    def loss(params, x, y):
        return jnp.mean((model.apply({"params": params}, x) - y) ** 2)

    return jax.jit(jax.value_and_grad(loss))


def time_model(model, d, batch, features, reps, key):
    kx, ky, kp = jax.random.split(key, 3)
    x = jax.random.normal(kx, (batch, d))
    y = jax.random.normal(ky, (batch, features))
    params = jax.jit(model.init)(kp, x)["params"]
    f = step_fn(model)
    jax.block_until_ready(f(params, x, y))  # compile + warm-up
    for _ in range(3):
        jax.block_until_ready(f(params, x, y))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f(params, x, y))
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, n_params(params)


def profile_model(model, d, batch, features, key, steps: int = 20) -> dict:
    """Kernel table (``kernel_profile.kernel_table``) of ``steps`` forward+backward calls."""
    from kernel_profile import kernel_table

    kx, ky, kp = jax.random.split(key, 3)
    x = jax.random.normal(kx, (batch, d))
    y = jax.random.normal(ky, (batch, features))
    params = jax.jit(model.init)(kp, x)["params"]
    f = step_fn(model)
    jax.block_until_ready(f(params, x, y))
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(steps):
            out = f(params, x, y)
        jax.block_until_ready(out)
        jax.profiler.stop_trace()
        return kernel_table(trace_dir, steps)


def compile_time(model, d, batch, features, key):
    x = jnp.zeros((batch, d))
    y = jnp.zeros((batch, features))
    params = jax.eval_shape(model.init, key, x)["params"]
    t = time.perf_counter()
    lowered = step_fn(model).lower(params, x, y)
    t_lower = time.perf_counter() - t
    lowered.compile()
    return time.perf_counter() - t, t_lower


_FORMS = {
    "stacked": lambda L, w, f: SpinalDense(f, w, L, stack_layers=True),
    "spinal": lambda L, w, f: SpinalDense(f, w, L),
    "naive": lambda L, w, f: NaiveSpinal(f, w, L),
}


def compile_time_fresh(form: str, L: int, d: int, w: int, batch: int, features: int) -> tuple[float, float]:
    """``compile_time`` of one model in a fresh Python process, after an unrelated warm-up compile there:
    in one process XLA's GPU autotuner caches its results by kernel, so a model compiled after the timing
    rows (the same shapes at L=4) or after a shallower one reuses the autotuning and compiles faster."""
    out = subprocess.run(
        [sys.executable, __file__, "--compile-one", form, str(L), str(d), str(w), str(batch), str(features)],
        check=True, capture_output=True, text=True,
    )
    seconds, lower = json.loads(out.stdout.strip().splitlines()[-1])
    return seconds, lower


def _compile_one(form: str, L: int, d: int, w: int, batch: int, features: int) -> None:
    warm = jax.jit(lambda a, b: jnp.tanh(a @ b).sum())  # CUDA, cuBLAS and compiler start-up
    jax.block_until_ready(warm(jnp.ones((3, 5)), jnp.ones((5, 2))))
    print(json.dumps(compile_time(_FORMS[form](L, w, features), d, batch, features, jax.random.key(0))))


def plain_hidden_for(n_target: int, d: int, features: int) -> int:
    return max(1, round((n_target - features) / (d + 1 + features)))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="experiments/results/spinal_dense_benchmark.json")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few reps (CPU smoke test)")
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--compile-only", action="store_true", help="only the compile-time rows")
    ap.add_argument("--compile-one", nargs=6, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help="also store a kernel table of each model at the largest size")
    args = ap.parse_args(argv)
    if args.compile_one:
        form, *nums = args.compile_one
        _compile_one(form, *map(int, nums))
        return {}
    features = 10
    if args.quick:
        sizes = [dict(d=32, w=8, L=4, batch=16)]
        depths, reps = [2, 4], 3
    else:
        sizes = [dict(d=256, w=128, L=4, batch=100), dict(d=4096, w=512, L=8, batch=4096)]
        depths, reps = [4, 32, 256], args.reps
    key = jax.random.key(0)
    rows = []
    profiles = {}
    for sz in [] if args.compile_only else sizes:
        spinal = SpinalDense(features, sz["w"], sz["L"])
        t_sp, n_sp = time_model(spinal, sz["d"], sz["batch"], features, reps, key)
        stacked = SpinalDense(features, sz["w"], sz["L"], stack_layers=True)
        t_st, n_st = time_model(stacked, sz["d"], sz["batch"], features, reps, key)
        t_nv, n_nv = time_model(NaiveSpinal(features, sz["w"], sz["L"]), sz["d"], sz["batch"], features, reps, key)
        plain = PlainHead(plain_hidden_for(n_sp, sz["d"], features), features)
        t_pl, n_pl = time_model(plain, sz["d"], sz["batch"], features, reps, key)
        assert n_sp == n_nv == n_st, (n_sp, n_nv, n_st)
        rows.append(dict(**sz, spinal_ms=t_sp, spinal_stacked_ms=t_st, naive_ms=t_nv, plain_ms=t_pl,
                         spinal_params=n_sp, plain_params=n_pl, speedup_vs_naive=t_nv / t_sp,
                         stacked_speedup_vs_naive=t_nv / t_st))
    if args.profile and not args.compile_only:
        sz = sizes[-1]
        for name, model in (("spinal", SpinalDense(features, sz["w"], sz["L"])),
                            ("naive", NaiveSpinal(features, sz["w"], sz["L"])),
                            ("plain", PlainHead(plain_hidden_for(rows[-1]["spinal_params"], sz["d"], features), features))):
            print(f"profile {name}:", flush=True)
            profiles[name] = profile_model(model, sz["d"], sz["batch"], features, key)
    comp = []
    d0, w0, b0 = (32, 8, 16) if args.quick else (256, 128, 100)
    def compile_form(form: str, L: int) -> tuple[float, float]:
        if args.quick:  # in this process (CPU smoke test)
            return compile_time(_FORMS[form](L, w0, features), d0, b0, features, key)
        return compile_time_fresh(form, L, d0, w0, b0, features)

    for L in depths:
        st_s, st_lower = compile_form("stacked", L)
        sp_s, sp_lower = compile_form("spinal", L)
        nv_s, nv_lower = compile_form("naive", L)
        comp.append(dict(L=L, stacked_s=st_s, stacked_lower_s=st_lower, spinal_s=sp_s,
                         spinal_lower_s=sp_lower, naive_s=nv_s, naive_lower_s=nv_lower))
    dev = jax.devices()[0]
    result = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        device=f"{dev.platform}: {getattr(dev, 'device_kind', '')}", host=platform.node(),
        versions=dict(python=platform.python_version(), jax=jax.__version__,
                      flax=__import__("flax").__version__, numpy=np.__version__),
        matmul_precision=str(jax.config.jax_default_matmul_precision), quick=args.quick,
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        forward_backward=rows, compile=comp, profiles=profiles,
        targets=dict(
            compile_form="stack_layers=True",
            compile_ratio_deepest_vs_shallowest=comp[-1]["stacked_s"] / comp[0]["stacked_s"],
            compile_ratio_per_layer_form=comp[-1]["spinal_s"] / comp[0]["spinal_s"],
            compile_ratio_target=3.0,
            compile_met=comp[-1]["stacked_s"] / comp[0]["stacked_s"] <= 3.0,
        ),
    )
    if rows:
        result["targets"].update(speedup_vs_naive_at_largest=rows[-1]["speedup_vs_naive"], speedup_target=1.3,
                                 speedup_met=rows[-1]["speedup_vs_naive"] >= 1.3)
    out = Path(args.out)
    write_atomic(out, json.dumps(result, indent=2) + "\n")
    md = [f"# SpinalDense benchmark ({result['date']})", "",
          f"Device: {result['device']}; versions: {result['versions']}; command: `{result['command']}`"]
    if rows:
        md += ["", "Forward+backward (value_and_grad w.r.t. params), median ms:", "",
               "| D | w | L | batch | SpinalDense ms | SpinalDense stacked ms | naive ms | plain Dense ms "
               "| speed-up vs naive (per-layer / stacked) | params spinal / plain |",
               "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        md += [f"| {r['d']} | {r['w']} | {r['L']} | {r['batch']} | {r['spinal_ms']:.3f} | {r['spinal_stacked_ms']:.3f} | "
               f"{r['naive_ms']:.3f} | {r['plain_ms']:.3f} | {r['speedup_vs_naive']:.2f}x / "
               f"{r['stacked_speedup_vs_naive']:.2f}x | {r['spinal_params']:,} / {r['plain_params']:,} |" for r in rows]
    md += ["", f"Compile time (lower + compile of value_and_grad, s; D={d0}, w={w0}, batch {b0}; "
           f"{'in this process' if args.quick else 'each in a fresh process'}):", "",
           "| L | SpinalDense stack_layers=True | SpinalDense per-layer (default) | naive |",
           "|---:|---:|---:|---:|"]
    md += [f"| {c['L']} | {c['stacked_s']:.2f} | {c['spinal_s']:.2f} | {c['naive_s']:.2f} |" for c in comp]
    t = result["targets"]
    line = "Targets: "
    if rows:
        line += (f"speed-up vs naive at the largest size {t['speedup_vs_naive_at_largest']:.2f}x "
                 f"(target >= 1.3: {'met' if t['speedup_met'] else 'NOT met'}); ")
    md += ["", line + f"compile ratio deepest/shallowest for stack_layers=True "
           f"{t['compile_ratio_deepest_vs_shallowest']:.2f} (target <= 3: {'met' if t['compile_met'] else 'NOT met'}; "
           f"per-layer form {t['compile_ratio_per_layer_form']:.2f})."]
    write_atomic(out.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
