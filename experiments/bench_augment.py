"""Benchmark: on-device augmentation cost of a Fashion-MNIST-shaped epoch (600 steps of batch 100).

Each epoch is one jitted ``lax.scan``: per step, gather a batch of uint8 images from a device-resident
(60000, 28, 28, 1) array by a permutation, run the pipeline, and fold the result into a checksum (so
nothing is dead-code eliminated). The baseline pipeline is ``normalize`` only (gather + cast + scale);
the overhead of a spec is its time minus the baseline's. Compile time is excluded; the median of
``--repeats`` timed epochs (``block_until_ready``) is reported.

    python experiments/bench_augment.py --out experiments/results            # GPU
    python experiments/bench_augment.py --quick --out /tmp/bench              # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spinal_jax.data import augment
from spinal_jax.files import write_atomic

BASELINE = "normalize(0.5, 0.5)"
SPECS = [
    BASELINE,
    "rotate(10)|random_resized_crop(28, scale=(0.95, 1.0))|normalize(0.5, 0.5)",
    "perspective(0.5, p=0.5)|rotate(10)|normalize(0.1307, 0.3081)",
    "hflip|normalize(0.5, 0.5)",
]
# A Fashion-MNIST epoch of the VGG-5 in JAX on one H100 (ORIGINAL.md §7, bf16 scan): the 5% budget base.
REFERENCE_EPOCH_S = 0.5


def _epoch_fn(spec: str, steps: int, batch: int):
    fn = augment.build(spec)

    @jax.jit
    def epoch(key: jax.Array, images: jax.Array) -> jax.Array:
        k_perm, k_aug = jax.random.split(key)
        perm = jax.random.permutation(k_perm, images.shape[0])[: steps * batch].reshape(steps, batch)
        keys = jax.random.split(k_aug, steps)

        def step(acc, xs):
            idx, k = xs
            x = fn(k, images[idx])
            return acc + jnp.sum(x), None

        acc, _ = jax.lax.scan(step, jnp.zeros((), jnp.float32), (perm, keys))
        return acc

    return epoch


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="experiments/results", help="directory for bench_augment.{json,md}")
    p.add_argument("--quick", action="store_true", help="tiny CPU smoke run (5 steps of batch 8, 2 repeats)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    steps, batch, repeats, n = args.steps, args.batch, args.repeats, 60000
    if args.quick:
        steps, batch, repeats, n = 5, 8, 2, 64
    if steps < 1 or batch < 1 or repeats < 1:
        raise ValueError("--steps, --batch and --repeats must be positive")
    n = max(n, steps * batch)

    images = jax.device_put(np.random.default_rng(0).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8))
    results = []
    for spec in SPECS[:2] if args.quick else SPECS:
        epoch = _epoch_fn(spec, steps, batch)
        t0 = time.perf_counter()
        epoch(jax.random.key(0), images).block_until_ready()
        compile_s = time.perf_counter() - t0
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            epoch(jax.random.key(r + 1), images).block_until_ready()
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        results.append(
            {
                "spec": spec,
                "epoch_s_median": med,
                "epoch_s_min": min(times),
                "ms_per_step": 1e3 * med / steps,
                "compile_s": compile_s,
            }
        )
    base = results[0]["epoch_s_median"]
    for r in results:
        r["overhead_s_per_epoch"] = r["epoch_s_median"] - base
        r["overhead_pct_of_0.5s_epoch"] = 100.0 * (r["epoch_s_median"] - base) * (600 / steps) / REFERENCE_EPOCH_S

    out = {
        "benchmark": "augmentation only, Fashion-MNIST shaped uint8 (28x28x1), device-resident, lax.scan epoch",
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "steps": steps,
        "batch": batch,
        "repeats": repeats,
        "quick": bool(args.quick),
        "baseline_spec": BASELINE,
        "reference_epoch_s": REFERENCE_EPOCH_S,
        "results": results,
    }
    lines = [
        "# On-device augmentation benchmark",
        "",
        f"Device: {out['device']} ({out['backend']}), jax {out['jax']}; {steps} steps × batch {batch}, "
        f"median of {repeats} epochs, compile excluded. Baseline = `{BASELINE}` (gather + scale only).",
        "",
        "| spec | ms/step | epoch s | overhead s/epoch vs baseline | overhead % of a 0.5 s epoch |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| `{r['spec']}` | {r['ms_per_step']:.4f} | {r['epoch_s_median']:.4f} | "
            f"{r['overhead_s_per_epoch']:.4f} | {r['overhead_pct_of_0.5s_epoch']:.2f} |"
        )
    write_atomic(os.path.join(args.out, "bench_augment.json"), json.dumps(out, indent=2) + "\n")
    write_atomic(os.path.join(args.out, "bench_augment.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
