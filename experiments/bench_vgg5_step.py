"""A/B timing of the VGG-5 training step through ``spinal-jax train``'s own epoch loop.

Builds the ``fashion_mnist_vgg5`` run (random uint8 data of Fashion-MNIST's shape, augmentation on
the device, batch 100, 600 steps an epoch) with ``spinal_jax.train.loop``'s run object and times
``train_epoch`` (one warm-up epoch with the compile, then ``--epochs`` timed ones) for each variant of
the model's building blocks:

- ``before``: ``flax.linen.max_pool`` (reduce_window; its gradient is a select_and_scatter), the
  two-pass BatchNorm statistics and the spinal chain as a while loop (``lax.scan`` not unrolled),
  as the library had them before the tuning log in PERF_NOTES.md;
- ``pool``: the library's max pool, two-pass BatchNorm statistics, the spinal chain as a while loop;
- ``bn``: ``pool`` with the library's one-pass BatchNorm statistics;
- ``unroll``: ``bn`` with the spinal chain unrolled (``layers.SCAN_UNROLL_MAX = 16``);
- ``lib``: the library as it is.

XLA flags are per process: run the script once per flag set (``XLA_FLAGS=... python ...``), with
``--tag`` naming the set. Results are appended as JSON lines to ``--out``.

    PYTHONPATH=. python experiments/bench_vgg5_step.py --variants before,pool,lib --epochs 2
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Iterator

import check_train_epoch  # noqa: F401  (registers spinal_jax.configs in a bare checkout)
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from spinal_jax import layers, normalization, parallel
from spinal_jax.models import mnist
from spinal_jax.train import apply_overrides, load_config, loop


def _reduce_window_max_pool(x: jax.Array, kernel: int, stride: int | None = None, padding: int = 0) -> jax.Array:
    stride = kernel if stride is None else stride
    pad = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (kernel, kernel), strides=(stride, stride), padding=pad)


def _two_pass_statistics(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x32 = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x32, axis=axes)
    return mean, jnp.mean(jnp.square(x32 - mean), axis=axes)


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    """Patch the model's building blocks to ``name``'s versions while the run is built and traced."""
    saved = (mnist.max_pool, normalization.batch_norm_statistics, layers.batch_norm_statistics)
    saved_unroll = layers.SCAN_UNROLL_MAX
    if name in ("before", "pool", "bn"):
        layers.SCAN_UNROLL_MAX = 0
    if name == "unroll":
        layers.SCAN_UNROLL_MAX = 16
    if name in ("before",):
        mnist.max_pool = _reduce_window_max_pool
    if name in ("before", "pool"):
        normalization.batch_norm_statistics = layers.batch_norm_statistics = _two_pass_statistics
    elif name not in ("bn", "unroll", "lib"):
        raise ValueError(f"unknown variant {name!r}; use before, pool, bn, unroll or lib")
    try:
        yield
    finally:
        mnist.max_pool, normalization.batch_norm_statistics, layers.batch_norm_statistics = saved
        layers.SCAN_UNROLL_MAX = saved_unroll


def _print_profile(trace_dir: str, steps: int, top: int = 25) -> None:
    """Per-kernel GPU time of a jax.profiler trace: totals per stream and the ``top`` kernels by time."""
    from jax.profiler import ProfileData

    files = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    data = ProfileData.from_file(files[0])
    for plane in data.planes:
        if not plane.name.startswith("/device:GPU"):
            continue
        for line in plane.lines:
            events = list(line.events)
            if not events:
                continue
            busy = sum(e.duration_ns for e in events)
            span = max(e.end_ns for e in events) - min(e.start_ns for e in events)
            print(f"  [{plane.name} | {line.name}] {len(events) / steps:.1f} events/step, "
                  f"busy {busy / steps / 1e3:.1f} us/step, span {span / steps / 1e3:.1f} us/step")
            if "stream" not in line.name.lower():
                continue
            total: collections.Counter[str] = collections.Counter()
            count: collections.Counter[str] = collections.Counter()
            for e in events:
                total[e.name[:90]] += e.duration_ns
                count[e.name[:90]] += 1
            for name, ns in total.most_common(top):
                print(f"    {ns / steps / 1e3:8.1f} us/step {count[name] / steps:5.1f}x  {name}")


def time_run(config, epochs: int, profile: bool = False) -> tuple[list[float], float]:
    """Seconds of ``epochs`` timed epochs after one warm-up epoch (returned second, with the compile);
    ``profile``: trace one more epoch and print its kernel breakdown."""
    with tempfile.TemporaryDirectory() as run_dir:
        run = loop._Run(config, run_dir, parallel.make_mesh(), progress=False)
        state = run.initial_state
        t0 = time.perf_counter()
        state, _, _, _ = run.train_epoch(state, 0)
        jax.block_until_ready(state)
        first = time.perf_counter() - t0
        seconds = []
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            state, _, _, _ = run.train_epoch(state, epoch)
            jax.block_until_ready(state)
            seconds.append(time.perf_counter() - t0)
        if profile:
            with tempfile.TemporaryDirectory() as trace_dir:
                jax.profiler.start_trace(trace_dir)
                state, _, _, steps = run.train_epoch(state, epochs + 1)
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
                _print_profile(trace_dir, steps)
    return seconds, first


def _computations(text: str) -> dict[str, list[str]]:
    comps: dict[str, list[str]] = {}
    name = None
    for line in text.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if m and not line.startswith(" "):
            name = m.group(1)
            comps[name] = []
        elif line.startswith("}"):
            name = None
        elif name is not None and "=" in line:
            comps[name].append(line.strip())
    return comps


def _op_kind(line: str) -> str:
    rhs = line.split("=", 1)[1]
    m = re.search(r"\s([a-z][\w\-]*)\(", rhs)
    kind = m.group(1) if m else "?"
    if kind == "custom-call":
        target = re.search(r'custom_call_target="([^"]+)"', line)
        kind = f"custom-call:{target.group(1) if target else '?'}"
    return kind


def summarize_dump(dump_dir: str) -> None:
    """Kernel-level op counts of each ``train_chunk`` scan body in an XLA dump (post-optimisation HLO)."""
    for path in sorted(glob.glob(os.path.join(dump_dir, "*train_chunk*after_optimizations.txt"))):
        with open(path) as f:
            comps = _computations(f.read())
        sizes = []
        bodies = set()
        for lines in comps.values():
            for line in lines:
                m = re.search(r" while\(.*body=%?([\w.\-]+)", line)
                if m:
                    bodies.add(m.group(1))
        for body in sorted(bodies):
            counts: collections.Counter[str] = collections.Counter()
            todo = [body]
            while todo:
                for line in comps.get(todo.pop(), []):
                    kind = _op_kind(line)
                    m = re.search(r"(?:to_apply|calls)=%?([\w.\-]+)", line)
                    if kind == "call" and m:
                        todo.append(m.group(1))
                        continue
                    if kind not in ("parameter", "get-tuple-element", "tuple", "constant", "bitcast"):
                        counts[kind] += 1
            sizes.append((sum(counts.values()), body, dict(counts.most_common())))
        for size, body, counts in sorted(sizes, reverse=True)[:2]:
            print(os.path.basename(path), body, size, counts, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="before,pool,lib")
    parser.add_argument("--heads", default="default,spinal")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="steps an epoch (default: the full 600)")
    parser.add_argument("--tag", default="default-flags")
    parser.add_argument("--profile", default="", help="comma list of variant/precision/head to trace, e.g. lib/fp32/spinal")
    parser.add_argument("--out", default="bench_vgg5_step.jsonl")
    parser.add_argument("--summarize-dump", default=None, help="only print op counts of an XLA dump directory")
    args = parser.parse_args()
    if args.summarize_dump:
        summarize_dump(args.summarize_dump)
        return
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60000, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, 60000).astype(np.int32)
    loop.load_splits = lambda config: (loop.Split(x, y), None, loop.Split(x[:10000], y[:10000]), 10)
    print(jax.devices(), os.environ.get("XLA_FLAGS", ""), flush=True)
    for precision in args.precisions.split(","):
        for head in args.heads.split(","):
            for name in args.variants.split(","):
                config = apply_overrides(
                    load_config("fashion_mnist_vgg5"),
                    {"precision": precision, "head": head, "tensorboard": False, "epochs": args.epochs + 2,
                     "steps_per_epoch": args.steps},
                )
                with variant(name):
                    seconds, first = time_run(config, args.epochs, f"{name}/{precision}/{head}" in args.profile)
                row = {
                    "tag": args.tag, "variant": name, "precision": precision, "head": head,
                    "epoch_seconds": seconds, "median": statistics.median(seconds), "first_epoch": first,
                    "device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
                }
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{args.tag:>14} {name:>7} {precision} {head:>7}: {row['median']:.3f} s/epoch "
                      f"(first {first:.1f} s) {[round(s, 3) for s in seconds]}", flush=True)


if __name__ == "__main__":
    main()
