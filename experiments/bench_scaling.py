"""Data-parallel scaling benchmark: training throughput on 1..N devices (spinal_jax.parallel).

Two regimes per model: a fixed *per-device* batch (weak scaling: the global batch grows with the
device count) and a fixed *global* batch (strong scaling: the per-device batch shrinks). Each
point runs the trainer's own jitted ``train_chunk`` (``spinal_jax.train.steps.StepFunctions``: a
``lax.scan`` of steps gathering batches from a device-resident uint8 pool, as ``spinal-jax train``
does) over a ``data`` mesh of that many devices, and reports steps/s, images/s, the speed-up and the
scaling efficiency ``images/s(n) / (n * images/s(1))`` against one device of the same regime.

Models: ``vgg5`` (and the small ``mnist_cnn``) on Fashion-MNIST (the array cache of ``spinal_jax.data.load_arrays`` when present,
otherwise synthetic 28x28 images) and ``wide_resnet101_2`` on synthetic 224 px images.

    python experiments/bench_scaling.py --out experiments/results/scaling_h200x8
    python experiments/bench_scaling.py --quick --out /tmp/scaling   # CPU smoke test

Several hosts: start one copy per host with ``--coordinator-address/--num-processes/--process-id``
(or the JAX_* variables); process 0 writes the results. Writes ``<out>/scaling.json`` and
``<out>/scaling.md`` (machine, versions, date, command).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from spinal_jax import parallel
from spinal_jax.files import write_atomic

# model -> (dataset for the pool, image shape, default per-device batch, default global batch)
MODELS: dict[str, tuple[str | None, tuple[int, int, int], int, int]] = {
    "vgg5": ("fashion_mnist", (28, 28, 1), 256, 1024),
    "wide_resnet101_2": (None, (224, 224, 3), 32, 256),
    # Small: the default of --quick (a CPU smoke test of the whole script).
    "mnist_cnn": ("fashion_mnist", (28, 28, 1), 64, 256),
}
DEFAULT_MODELS = ("vgg5", "wide_resnet101_2")
MODES = ("per_device", "global")
POOL_SIZE = 4096  # images held on the device for the synthetic pools


@dataclasses.dataclass
class Point:
    """One measurement (or the reason there is none)."""

    model: str
    mode: str
    devices: int
    global_batch: int
    per_device_batch: int
    steps_per_s: float | None = None
    images_per_s: float | None = None
    compile_s: float | None = None
    speedup: float | None = None
    efficiency: float | None = None
    data: str = ""
    error: str = ""


def _device_counts(spec: str | None, available: int) -> list[int]:
    if spec:
        counts = sorted({int(c) for c in spec.split(",")})
    else:
        counts = sorted({*(2**k for k in range(available.bit_length()) if 2**k <= available), available})
    bad = [c for c in counts if c < 1 or c > available]
    if bad:
        raise ValueError(f"--devices {spec}: {bad} not in 1..{available} (the devices present)")
    if 1 not in counts:
        raise ValueError("--devices must include 1: efficiency is measured against one device")
    return counts


def _pool(model: str, quick: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 NHWC images and int32 labels held on the device, and where they come from."""
    dataset, shape, _, _ = MODELS[model]
    if dataset is not None and not quick:
        try:
            from spinal_jax import data

            images, labels = data.load_arrays(dataset, "train")
            return images, labels, f"{dataset} train ({len(images)} images, array cache)"
        except Exception as err:  # no cache/TFDS here: fall back, and say so in the results
            reason = f"{type(err).__name__}"
    else:
        reason = "quick" if dataset is not None else "synthetic by design"
    n = 256 if quick else POOL_SIZE
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    labels = rng.integers(0, 10, (n,), dtype=np.int32)
    return images, labels, f"synthetic {shape[0]}x{shape[1]}x{shape[2]} ({reason})"


def _put(x: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    """A replicated global array from a host array every process holds in full."""
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def measure(
    model_name: str,
    mesh: jax.sharding.Mesh,
    global_batch: int,
    pool: tuple[np.ndarray, np.ndarray],
    *,
    steps: int,
    repeats: int,
    precision: str,
    fsdp: bool,
    seed: int = 0,
) -> tuple[float, float]:
    """(steps/s, compile+first-chunk seconds) of ``model_name`` on ``mesh`` at ``global_batch``."""
    from spinal_jax import models
    from spinal_jax.train.state import create_train_state
    from spinal_jax.train.steps import StepFunctions

    parallel.check_batch_size(global_batch, mesh, name="global batch")
    overrides = {"dtype": jnp.bfloat16} if precision == "bf16" else {}
    model = models.get(model_name, 10, "spinal", **overrides)
    tx = optax.sgd(0.01, momentum=0.9)
    images, labels = pool
    state = create_train_state(
        model, tx, jnp.zeros((1, *images.shape[1:]), jnp.float32),
        jax.random.PRNGKey(seed), jax.random.PRNGKey(seed + 1),
    )
    state_sh = parallel.state_shardings(mesh, state, fsdp=fsdp)
    state = jax.device_put(state, state_sh)
    fns = StepFunctions(batch_sharding=parallel.batch_sharding(mesh), state_sharding=state_sh)
    replicated = parallel.replicated(mesh)
    x, y = _put(images, replicated), _put(labels, replicated)
    rng = np.random.default_rng(seed)
    chunks = [
        _put(rng.integers(0, len(images), (steps, global_batch), dtype=np.int32), replicated)
        for _ in range(repeats + 1)
    ]
    start = time.perf_counter()
    state, sums = fns.train_chunk(state, x, y, chunks[0])
    jax.block_until_ready((state, sums))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for idx in chunks[1:]:
        state, sums = fns.train_chunk(state, x, y, idx)
    jax.block_until_ready((state, sums))
    elapsed = time.perf_counter() - start
    loss = float(np.asarray(sums["loss"].addressable_data(0)))
    if not np.isfinite(loss):
        raise FloatingPointError(f"loss became {loss}")
    return steps * repeats / elapsed, compile_s


def run(args: argparse.Namespace) -> dict[str, Any]:
    """All points of the benchmark; returns the JSON record."""
    available = jax.device_count()
    counts = _device_counts(args.devices, available)
    points: list[Point] = []
    for name in args.models:
        _, _, per_device_default, global_default = MODELS[name]
        images, labels, source = _pool(name, args.quick)
        per_device = args.per_device_batch or (4 if args.quick else per_device_default)
        global_batch = args.global_batch or (8 if args.quick else global_default)
        for mode in args.modes:
            base: float | None = None
            for n in counts:
                gb = per_device * n if mode == "per_device" else global_batch
                point = Point(name, mode, n, gb, gb // n if gb % n == 0 else 0, data=source)
                points.append(point)
                if gb % n:
                    point.error = f"global batch {gb} does not divide over {n} devices"
                    continue
                try:
                    sps, compile_s = measure(
                        name, parallel.make_mesh(n), gb, (images, labels),
                        steps=args.steps, repeats=args.repeats, precision=args.precision, fsdp=args.fsdp,
                    )
                except Exception as err:  # OOM at large per-device batches etc.: record and go on
                    point.error = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
                    print(f"[bench_scaling] {name} {mode} n={n}: {point.error}", file=sys.stderr)
                    continue
                point.steps_per_s, point.compile_s = sps, compile_s
                point.images_per_s = sps * gb
                if n == 1:
                    base = point.images_per_s
                if base:
                    point.speedup = point.images_per_s / base
                    point.efficiency = point.speedup / n
                print(
                    f"[bench_scaling] {name:>16} {mode:>10} n={n}: batch {gb} ({gb // n}/device) "
                    f"{sps:8.2f} steps/s {point.images_per_s:10.1f} img/s"
                    + (f" eff {point.efficiency:.3f}" if point.efficiency else ""),
                    file=sys.stderr,
                    flush=True,
                )
            jax.clear_caches()
    return {
        "benchmark": "data-parallel scaling (spinal_jax.parallel + spinal_jax.train.steps.train_chunk)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": _machine(),
        "versions": _versions(),
        "settings": {
            "models": args.models, "modes": args.modes, "devices": counts, "steps_per_chunk": args.steps,
            "timed_chunks": args.repeats, "precision": args.precision, "fsdp": args.fsdp, "quick": args.quick,
            "head": "spinal", "optimizer": "sgd(0.01, momentum=0.9)",
            "matmul_precision": str(jax.config.jax_default_matmul_precision),
        },
        "results": [dataclasses.asdict(p) for p in points],
    }


def _machine() -> dict[str, Any]:
    devices = jax.devices()
    return {
        "hostname": platform.node(),
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "spinal_jax"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _fmt(x: float | None, spec: str) -> str:
    return "" if x is None else format(x, spec)


def to_markdown(record: dict[str, Any]) -> str:
    """The record as a Markdown report: one table per model and regime."""
    m, v, s = record["machine"], record["versions"], record["settings"]
    lines = [
        "# Data-parallel scaling",
        "",
        f"- Date: {record['date']}",
        f"- Command: `{record['command']}`",
        f"- Machine: {m['device_count']} x {m['device_kind']} ({m['platform']}), {m['process_count']} process(es), "
        f"host {m['hostname']} ({m['cpu_count']} CPUs), Python {m['python']}",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- Settings: precision {s['precision']}, FSDP {s['fsdp']}, {s['steps_per_chunk']} steps per jitted chunk, "
        f"{s['timed_chunks']} timed chunks after one warm-up chunk, spinal head, {s['optimizer']}",
        "- Efficiency = images/s(n) / (n x images/s(1 device)) in the same regime.",
        "",
    ]
    rows = record["results"]
    for model in s["models"]:
        data = next((r["data"] for r in rows if r["model"] == model), "")
        for mode in s["modes"]:
            title = "fixed per-device batch" if mode == "per_device" else "fixed global batch"
            lines += [f"## {model}: {title}", "", f"Data: {data}", ""]
            lines += ["| devices | global batch | per device | steps/s | images/s | speed-up | efficiency | compile s | note |",
                      "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
            for r in rows:
                if r["model"] == model and r["mode"] == mode:
                    lines.append(
                        f"| {r['devices']} | {r['global_batch']} | {r['per_device_batch']} | {_fmt(r['steps_per_s'], '.2f')} "
                        f"| {_fmt(r['images_per_s'], '.1f')} | {_fmt(r['speedup'], '.2f')} | {_fmt(r['efficiency'], '.1%')} "
                        f"| {_fmt(r['compile_s'], '.1f')} | {r['error']} |"
                    )
            lines.append("")
    return "\n".join(lines)


def write(record: dict[str, Any], out: str) -> tuple[str, str]:
    """``<out>/scaling.json`` and ``<out>/scaling.md``, written atomically; returns their paths."""
    os.makedirs(out, exist_ok=True)
    json_path, md_path = os.path.join(out, "scaling.json"), os.path.join(out, "scaling.md")
    write_atomic(json_path, json.dumps(record, indent=2) + "\n")
    write_atomic(md_path, to_markdown(record) + "\n")
    return json_path, md_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="directory for scaling.json and scaling.md")
    p.add_argument("--models", default=None, help=f"comma list of {', '.join(MODELS)} (default: vgg5,wide_resnet101_2; --quick: mnist_cnn)")
    p.add_argument("--modes", default=",".join(MODES), help="comma list of per_device, global")
    p.add_argument("--devices", default=None, help="device counts, e.g. 1,2,4,8 (default: powers of two up to all)")
    p.add_argument("--per-device-batch", type=int, default=None, help="batch per device in the per_device regime")
    p.add_argument("--global-batch", type=int, default=None, help="global batch in the global regime")
    p.add_argument("--steps", type=int, default=None, help="steps per jitted chunk (default 20; --quick 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed chunks after the warm-up (default 5; --quick 1)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--fsdp", action="store_true", help="shard parameters and optimizer state too")
    p.add_argument("--quick", action="store_true", help="tiny batches and steps: a smoke test (CPU)")
    p.add_argument("--coordinator-address", default=None, help="host:port of process 0 (several hosts)")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)
    args = p.parse_args(argv)
    args.models = (args.models or ("mnist_cnn" if args.quick else ",".join(DEFAULT_MODELS))).split(",")
    args.modes = args.modes.split(",")
    for m in args.models:
        if m not in MODELS:
            p.error(f"--models: unknown model {m!r}; choose from {', '.join(MODELS)}")
    for m in args.modes:
        if m not in MODES:
            p.error(f"--modes: unknown regime {m!r}; choose from {', '.join(MODES)}")
    args.steps = args.steps or (2 if args.quick else 20)
    args.repeats = args.repeats or (1 if args.quick else 5)
    for flag in ("per_device_batch", "global_batch", "steps", "repeats"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            p.error(f"--{flag.replace('_', '-')}={value}: expected a positive int")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    record = run(args)
    if jax.process_index() == 0:
        for path in write(record, args.out):
            print(path)
    failed = [r for r in record["results"] if r["error"] and "does not divide" not in r["error"]]
    return 1 if failed and len(failed) == len(record["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
