"""On the GPU: the convolutional models' loss and gradients with ``steps.GPU_COMPILER_OPTIONS`` (cuDNN's fused
convolution graphs, the library's default on GPUs for ``steps.GPU_COMPILER_OPTIONS_MODELS``) against the same
functions compiled without them.

For each config (random inputs of its model's input shape and batch size, the library's model at its
initial parameters, train mode, one fixed dropout key), ``jax.value_and_grad`` of the cross-entropy is
compiled three ways, each with and without the options:

- ``highest``: float32 with ``jax_default_matmul_precision="highest"`` (no TF32): both must agree to
  ``--rtol`` (the worst leaf's relative L2 difference, ``worst_relative``; convolution algorithms differ
  only in the order of their float32 sums);
- ``fp32`` (TF32 allowed, the library's fp32 on GPUs) and ``bf16`` (the config's ``precision=bf16``
  model): each must be no further from the ``highest`` gradients than the unfused version is, times
  ``--slack``;

and the median time of one call (``--reps`` after a warm-up) is recorded for each, as a first look at
which models the option speeds up or slows down (the training step's own timing is
``bench_vgg5_step.py``'s). Writes JSON and a Markdown table (``--out``, atomically after every case, so a
run stopped by its timeout keeps the cases it finished); exits 1 where a check fails.

    PYTHONPATH=. python experiments/check_conv_fusion_gpu.py --out experiments/results/conv_fusion_gpu_check.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import sys
import time

import check_train_epoch  # noqa: F401  (registers spinal_jax.configs in a bare checkout)
import jax
import jax.numpy as jnp
import numpy as np
import optax

from spinal_jax.files import write_atomic
from spinal_jax.train import apply_overrides, load_config, loop, steps

CASES = (
    ("fashion_mnist_vgg5", "spinal"),
    ("fashion_mnist_vgg5", "default"),
    ("cifar10_resnet18", "spinal"),
    ("mnist_cnn", "spinal"),
    ("cifar10_cnn", "spinal"),
    ("mnist_arch2", "spinal"),
    ("cifar10_vgg19_bn", "spinal"),
)


def gradient_function(config_name: str, head: str, precision: str, fused: bool):
    """A jitted ``(params, batch_stats, x, y, key) -> (loss, grads)`` and its arguments."""
    config = apply_overrides(load_config(config_name), {"head": head, "precision": "bf16" if precision == "bf16" else "fp32"})
    model = loop._build_model(config, 10)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((config.batch_size, *model.input_shape)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, config.batch_size), jnp.int32)
    variables = jax.jit(lambda k: model.init(k, x[:1], train=False))(jax.random.PRNGKey(0))

    def loss_and_grads(params, batch_stats, x, y, key):
        def loss_fn(p):
            logits, _ = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                    rngs={"dropout": key}, mutable=["batch_stats"])
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y))

        return jax.value_and_grad(loss_fn)(params)

    options = dict(steps.GPU_COMPILER_OPTIONS) if fused else {}
    fn = jax.jit(loss_and_grads, compiler_options=options)
    return fn, (variables["params"], variables.get("batch_stats", {}), x, y, jax.random.PRNGKey(1))


def run(config_name: str, head: str, precision: str, fused: bool, reps: int) -> tuple[np.ndarray, list, float]:
    """``(loss, gradient leaves, median seconds a call)``."""
    fn, args = gradient_function(config_name, head, precision, fused)
    with jax.default_matmul_precision("highest") if precision == "highest" else contextlib.nullcontext():
        loss, grads = jax.block_until_ready(fn(*args))
        seconds = []
        for _ in range(reps):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            seconds.append(time.perf_counter() - t0)
    return np.asarray(loss, np.float64), [np.asarray(g, np.float64) for g in jax.tree.leaves(grads)], statistics.median(seconds)


def worst_relative(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Max over leaves of ``||a - b|| / ||b||`` (L2), over the leaves whose ``||b||`` is at least
    ``1e-4`` of the largest: the rest (e.g. biases right before BatchNorm, whose gradient is zero up to
    round-off) carry no signal to compare."""
    norms = [float(np.linalg.norm(y)) for y in b]
    floor = 1e-4 * max(norms)
    return max(float(np.linalg.norm(x - y)) / n for x, y, n in zip(a, b, norms, strict=True) if n >= floor)


def render_markdown(table: dict) -> str:
    lines = [
        "# cuDNN fused convolution graphs (`steps.GPU_COMPILER_OPTIONS`): gradients and call time, on against off",
        "",
        f"{table['device']}, jax {table['jax']}, {table['date']}. Command: `{table['command']}`",
        *[f"Also: {r['date']}, `{r['command']}` ({r['note']})" for r in table.get("more_runs", [])],
        "",
        "Loss and gradients of one train-mode batch at the initial parameters (`value_and_grad`, random inputs).",
        "`highest`: float32 without TF32, on vs off (worst leaf's \\|diff\\| / \\|grad\\|, L2). `fp32` (TF32) / `bf16`:",
        "each version's distance from the `highest` gradients of the unfused version.",
        "",
        "| config | head | batch | highest: on vs off | fp32: off / on vs exact | bf16: off / on vs exact "
        "| ms a call fp32 off / on | ms a call bf16 off / on | ok |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in table["results"]:
        lines.append(
            f"| {r['config']}{'²' if 'run' in r else ''} | {r['head']} | {r['batch_size']} | {r['highest_on_vs_off']:.1e} "
            f"| {r['fp32_off_error']:.1e} / {r['fp32_on_error']:.1e} | {r['bf16_off_error']:.1e} / {r['bf16_on_error']:.1e} "
            f"| {1e3 * r['seconds']['fp32_off']:.2f} / {1e3 * r['seconds']['fp32_on']:.2f} "
            f"| {1e3 * r['seconds']['bf16_off']:.2f} / {1e3 * r['seconds']['bf16_on']:.2f} | {'yes' if r['ok'] else 'NO'} |"
        )
    lines += ["", f"All checks passed: {table['all_ok']}.", ""]
    return "\n".join(lines)


def write(table: dict, out: str) -> None:
    """``out`` (JSON) and its Markdown rendering beside it, each written atomically."""
    md = os.path.splitext(out)[0] + ".md"
    for path, text in ((out, json.dumps(table, indent=1)), (md, render_markdown(table))):
        write_atomic(path, text)


def check_case(config_name: str, head: str, reps: int, rtol: float, slack: float) -> dict:
    """One config and head: the three precisions with and without the options, compared."""
    out = {(p, fused): run(config_name, head, p, fused, reps) for p in ("highest", "fp32", "bf16") for fused in (False, True)}
    exact = out["highest", False]
    r = {
        "config": config_name, "head": head, "batch_size": load_config(config_name).batch_size,
        "loss": {f"{p}_{'on' if f else 'off'}": float(v[0]) for (p, f), v in out.items()},
        "seconds": {f"{p}_{'on' if f else 'off'}": v[2] for (p, f), v in out.items()},
        "highest_on_vs_off": worst_relative(out["highest", True][1], exact[1]),
    }
    for p in ("fp32", "bf16"):
        r[f"{p}_off_error"] = worst_relative(out[p, False][1], exact[1])
        r[f"{p}_on_error"] = worst_relative(out[p, True][1], exact[1])
    r["ok"] = bool(r["highest_on_vs_off"] <= rtol and all(
        r[f"{p}_on_error"] <= slack * r[f"{p}_off_error"] + rtol for p in ("fp32", "bf16")))
    return r


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="conv_fusion_gpu_check.json")
    parser.add_argument("--cases", default=",".join(f"{c}:{h}" for c, h in CASES), help="config:head,...")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--slack", type=float, default=2.0)
    parser.add_argument("--budget-seconds", type=float, default=1e9, help="stop starting new cases after this")
    args = parser.parse_args()
    if jax.default_backend() != "gpu":
        raise SystemExit("this check needs a GPU (the options are XLA's GPU options)")
    start = time.perf_counter()
    table = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": jax.devices()[0].device_kind, "jax": jax.__version__,
        "compiler_options": steps.GPU_COMPILER_OPTIONS,
        "command": "python experiments/check_conv_fusion_gpu.py " + " ".join(sys.argv[1:]),
        "rtol": args.rtol, "slack": args.slack, "results": [], "all_ok": False,
    }
    for case in args.cases.split(","):
        if time.perf_counter() - start > args.budget_seconds:
            print("budget spent: stopping before", case, flush=True)
            break
        config_name, head = case.split(":")
        table["results"].append(check_case(config_name, head, args.reps, args.rtol, args.slack))
        table["all_ok"] = all(r["ok"] for r in table["results"])
        print(json.dumps(table["results"][-1]), flush=True)
        write(table, args.out)
    return 0 if table["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
