"""The streaming input path at 224 px on the host CPUs, against the WRN-101 training step rate on the GPU.

Issue 4's benchmark: can ``spinal_jax.data.stream`` keep a Wide-ResNet-101-2 busy? Two measurements
in one run, written to ``<out>/bench_streaming.json`` and ``.md``:

- ``stream``: images/s of the library's streaming pipeline (``spinal_jax.data.streaming``: grain over
  a random-access source, per-image PIL transforms, batching, prefetch) with the 224-px training
  recipe of the grid's ``caltech101_wrn101`` (Resize 230, RandomRotation 15, RandomCrop 224, HFlip,
  Normalize), batch 30, for several thread counts in this process (``--threads``; ``workers`` 0) and
  several worker-process counts (``--workers``, each worker with ``--worker-threads`` threads). Two
  sources: ``synthetic_rgb`` (random 300×200 RGB images, the size of a typical Caltech-101 image:
  the transform cost of the real sets; a picklable source that draws its images from a seed in each
  process) and, where ``--dataset`` is prepared (array cache or TFDS array_record), that dataset
  through ``spinal_jax.data.stream`` end to end (the default ``fashion_mnist`` has 1-channel 28-px
  source images: a functional check, not the 224-px cost). Each row first takes as many batches as
  the pipeline can hold in its buffers, so that the timed ``--batches`` are produced while timed.
- ``wrn101_step``: training steps/s of ``wide_resnet101_2`` with the spinal head (the model and the
  jitted ``train_step`` the trainer runs) on a device-resident float32 batch of 30×224×224×3, fp32
  (TF32) and bf16; images/s = steps/s × batch. The Markdown's "stream over step" uses the best
  ``synthetic_rgb`` row.

Command (GPU machine, through the device tool; CPU-only runs give the stream rows only)::

    python experiments/bench_streaming.py --data-dir .carry/data --out $OUT
    python experiments/bench_streaming.py --data-dir .carry/data --out /tmp/x --no-model \\
        --threads 1,2 --workers 2 --batches 4 --synthetic-images 64   # a quick CPU check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPE_DATASET = "caltech101"  # its train_preprocess is the 224-px recipe
MODEL = "wide_resnet101_2"


def _log(msg: str) -> None:
    print(f"[bench_streaming {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class _SyntheticRGB:
    """Random-access source of ``n`` random RGB images (the ``streaming._RandomAccess`` interface).

    Picklable for worker processes: it holds only its parameters and draws a pool of ``pool``
    distinct images from ``seed`` in each process on first use (image k is pool image k % pool).
    """

    def __init__(self, n: int, height: int, width: int, seed: int = 0, pool: int = 64) -> None:
        self.n, self.height, self.width, self.seed, self.pool = n, height, width, seed, min(pool, n)
        self._images: np.ndarray | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_images", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _images=None, _lock=threading.Lock())

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int) -> tuple[np.ndarray, int]:
        if self._images is None:
            with self._lock:
                if self._images is None:
                    rng = np.random.default_rng(self.seed)
                    self._images = rng.integers(0, 256, (self.pool, self.height, self.width, 3), np.uint8)
        return self._images[int(idx) % self.pool], int(idx) % 10


def _rate(batches: Any, warmup: int, count: int) -> tuple[float, float]:
    """(images/s, seconds) over ``count`` batches after ``warmup`` batches."""
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(count):
        x, _ = next(it)
        n += len(x)
    seconds = time.perf_counter() - t0
    return n / seconds, seconds


def _buffered(threads: int, workers: int, prefetch: int) -> int:
    """About how many batches the pipeline can hold ready (the warm-up drains them)."""
    if workers == 0:
        return threads + prefetch  # grain's read-ahead in this process
    return workers * (threads + 2 * prefetch)  # per worker: read-ahead, output queue, interleave buffer


def _configs(args: argparse.Namespace) -> list[tuple[int, int]]:
    """(threads, workers) of the synthetic rows: thread counts in this process, then worker counts."""
    return [(t, 0) for t in args.threads] + [(args.worker_threads, w) for w in args.workers]


def bench_stream(args: argparse.Namespace) -> list[dict[str, Any]]:
    from spinal_jax import data
    from spinal_jax.data import streaming

    spec = data.info(RECIPE_DATASET).train_preprocess
    records = []
    synthetic = _SyntheticRGB(args.synthetic_images, 200, 300)
    for threads, workers in _configs(args):
        batches = streaming._stream_source(
            synthetic, args.batch_size, spec, seed=0, shuffle=True, epochs=None, drop_remainder=True,
            num_threads=threads, prefetch=args.prefetch, num_workers=workers,
        )
        rate, seconds = _rate(batches, 2 + _buffered(threads, workers, args.prefetch), args.batches)
        batches.close()
        records.append({"job": "stream", "source": "synthetic_rgb 300x200", "threads": threads, "workers": workers,
                        "images_per_second": rate, "seconds": seconds, "batches": args.batches})
        _log(f"stream synthetic_rgb threads={threads} workers={workers}: {rate:.0f} images/s")
    if args.dataset:
        cache = os.path.isfile(data.arrays.cache_path(args.dataset, "train", args.data_dir))
        source = f"{args.dataset} ({'array cache' if cache else 'tfds data_source'})"
        ends = [(max(args.threads), 0)] if args.threads else []
        ends += [(args.worker_threads, max(args.workers))] if args.workers else []
        for threads, workers in ends:
            try:
                batches = data.stream(args.dataset, "train", args.batch_size, spec, epochs=None, drop_remainder=True,
                                      data_dir=args.data_dir, num_threads=threads, prefetch=args.prefetch,
                                      num_workers=workers)
                rate, seconds = _rate(batches, 2 + _buffered(threads, workers, args.prefetch), args.batches)
                batches.close()
            except Exception as e:  # a missing dataset is recorded, not fatal: the synthetic rows stand
                _log(f"stream {args.dataset}: not measured ({type(e).__name__}: {e})")
                records.append({"job": "stream", "source": args.dataset, "threads": threads, "workers": workers,
                                "status": f"not measured: {e}"})
                break
            records.append({"job": "stream", "source": source, "threads": threads, "workers": workers,
                            "images_per_second": rate, "seconds": seconds, "batches": args.batches})
            _log(f"stream {args.dataset} threads={threads} workers={workers}: {rate:.0f} images/s")
    return records


def bench_wrn101(args: argparse.Namespace) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp

    from spinal_jax import models
    from spinal_jax.train import schedules
    from spinal_jax.train.config import load_config
    from spinal_jax.train.state import create_train_state
    from spinal_jax.train.steps import StepFunctions

    config = load_config("caltech101_wrn101").replace(head="spinal")
    records = []
    for precision in args.precisions:
        kwargs = config.model_kwargs()
        if precision == "bf16":
            kwargs["dtype"] = jnp.bfloat16
        model = models.get(MODEL, 102, "spinal", **kwargs)
        shape = (args.batch_size, args.size, args.size, 3)
        rng = np.random.default_rng(0)
        images = jax.device_put(rng.standard_normal(shape, np.float32))
        labels = jax.device_put(rng.integers(0, 102, (args.batch_size,)).astype(np.int32))
        state = create_train_state(model, schedules.make_optimizer(config), images[:1],
                                   jax.random.PRNGKey(0), jax.random.PRNGKey(1))
        step = StepFunctions(loss=config.loss).train_step
        batch = {"image": images, "label": labels}
        t0 = time.perf_counter()
        state, _ = step(state, batch)
        jax.block_until_ready(state)
        compile_s = time.perf_counter() - t0
        for _ in range(3):
            state, _ = step(state, batch)
        jax.block_until_ready(state)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                state, _ = step(state, batch)
            jax.block_until_ready(state)
            times.append((time.perf_counter() - t0) / args.steps)
        step_s = statistics.median(times)
        dev = jax.devices()[0]
        records.append({"job": "wrn101_step", "model": MODEL, "head": "spinal", "precision": precision,
                        "batch_size": args.batch_size, "image_size": args.size, "step_seconds": step_s,
                        "steps_per_second": 1 / step_s, "images_per_second": args.batch_size / step_s,
                        "compile_seconds": compile_s, "device": f"{dev.platform}:{dev.device_kind}"})
        _log(f"wrn101 {precision}: {1 / step_s:.1f} steps/s = {args.batch_size / step_s:.0f} images/s")
        del state
    return records


def _markdown(table: dict[str, Any]) -> str:
    env = table["environment"]
    lines = [
        "# Streaming input at 224 px vs the WRN-101 training step (issue 4)",
        "",
        f"- Machine: {env['machine']}; {env['cpu_count']} CPU cores; python {env['python']}; {env['versions']}",
        f"- Date: {table['date']}; command: `{table['command']}`",
        f"- Recipe: `{RECIPE_DATASET}`'s 224-px train transforms ({table['recipe']}), batch {table['batch_size']}",
        "",
        "| measurement | source / precision | threads | workers | images/s |",
        "|---|---|---:|---:|---:|",
    ]
    for r in table["records"]:
        if r["job"] == "stream":
            ips = f"{r['images_per_second']:.0f}" if "images_per_second" in r else r.get("status", "-")
            lines.append(f"| stream (host) | {r['source']} | {r.get('threads', '-')} | {r.get('workers', '-')} "
                         f"| {ips} |")
        else:
            lines.append(f"| {MODEL} train step ({r['device']}) | {r['precision']} | – | – "
                         f"| {r['images_per_second']:.0f} |")
    # the representative stream: the best synthetic 224-px row (the dataset row may be 28-px images)
    synthetic = [r for r in table["records"] if r["job"] == "stream" and r["source"].startswith("synthetic_rgb")
                 and "images_per_second" in r]
    best = max(synthetic, key=lambda r: r["images_per_second"], default=None)
    steps = [r for r in table["records"] if r["job"] == "wrn101_step"]
    if best and steps:
        rate = best["images_per_second"]
        lines += ["", f"Stream over step (≥ 1: the input keeps the GPU busy), with the best synthetic_rgb row "
                      f"({best['threads']} threads, {best['workers']} workers):", ""]
        for r in steps:
            lines.append(f"- {r['precision']}: {rate:.0f} / {r['images_per_second']:.0f} = "
                         f"{rate / r['images_per_second']:.2f}×")
    return "\n".join(lines) + "\n"


def _counts(text: str) -> list[int]:
    counts = [int(t) for t in text.split(",") if t.strip()]
    if any(c <= 0 for c in counts):
        raise argparse.ArgumentTypeError(f"counts must be positive integers, got {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dataset", default="fashion_mnist", help="a prepared dataset streamed end to end ('' = none)")
    p.add_argument("--batch-size", type=int, default=30, help="caltech101_wrn101's batch")
    p.add_argument("--threads", type=_counts, default=[1, 8, 16],
                   help="thread counts of the in-process rows, comma-separated ('' = none)")
    p.add_argument("--workers", type=_counts, default=[4, 8, 16],
                   help="worker-process counts of the multi-process rows, comma-separated ('' = none)")
    p.add_argument("--worker-threads", type=int, default=1, help="threads in each worker process")
    p.add_argument("--prefetch", type=int, default=2, help="batches kept ready (per worker)")
    p.add_argument("--batches", type=int, default=100, help="timed batches per row (after the warm-up)")
    p.add_argument("--synthetic-images", type=int, default=600)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precisions", type=lambda s: s.split(","), default=["fp32", "bf16"])
    p.add_argument("--no-model", action="store_true", help="stream rows only")
    args = p.parse_args(argv)
    if not args.threads and not args.workers:
        p.error("give at least one of --threads and --workers")
    if min(args.worker_threads, args.prefetch, args.batches, args.synthetic_images) <= 0:
        p.error("--worker-threads, --prefetch, --batches and --synthetic-images must be positive")

    from spinal_jax import data
    from spinal_jax.files import write_atomic
    from spinal_jax.train.metrics import write_json

    records = bench_stream(args)
    if not args.no_model:
        records += bench_wrn101(args)
    import importlib.metadata as md

    versions = ", ".join(f"{n} {md.version(n)}" for n in ("jax", "jaxlib", "flax", "numpy", "pillow", "grain"))
    table = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python experiments/bench_streaming.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "environment": {"machine": platform.node() or platform.machine(), "cpu_count": os.cpu_count(),
                        "python": platform.python_version(), "versions": versions},
        "recipe": repr(data.info(RECIPE_DATASET).train_preprocess),
        "batch_size": args.batch_size,
        "records": records,
    }
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "bench_streaming.json"), table)
    write_atomic(os.path.join(args.out, "bench_streaming.md"), _markdown(table))
    print(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
