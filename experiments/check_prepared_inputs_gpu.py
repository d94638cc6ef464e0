"""On the GPU: ``steps.train_chunk`` with its batches gathered and augmented before the loop (the default,
``steps.PREPARED_INPUTS_MAX_BYTES``) against the same chunks with each batch gathered and augmented inside
the loop (``PREPARED_INPUTS_MAX_BYTES = 0``): the VGG-5 of ``fashion_mnist_vgg5`` with both heads, fp32
and bf16, two chunks of 50 steps on random uint8 data, the library's optimizer and augmentation. Every
leaf of the resulting train state and the metric sums must be bitwise equal. Writes JSON (``--out``) and
exits 1 where a pair differs.

    PYTHONPATH=. python experiments/check_prepared_inputs_gpu.py --out prepared_inputs_gpu_check.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

import check_train_epoch  # noqa: F401  (registers spinal_jax.configs in a bare checkout)
import jax
import jax.numpy as jnp
import numpy as np

from spinal_jax.train import apply_overrides, load_config, loop, schedules, steps
from spinal_jax.train.state import create_train_state


def run_chunks(precision: str, head: str, prepared_max_bytes: int, chunks: int = 2, steps_per_chunk: int = 50):
    """The state and metric sums after ``chunks`` chunks of the library's fast path."""
    config = apply_overrides(load_config("fashion_mnist_vgg5"), {"precision": precision, "head": head})
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (10000, 28, 28, 1)), jnp.uint8)
    labels = jnp.asarray(rng.integers(0, 10, 10000), jnp.int32)
    order = jnp.asarray(rng.permutation(10000)[: chunks * steps_per_chunk * 100].reshape(chunks, steps_per_chunk, 100))
    model = loop._build_model(config, 10)  # as the trainer builds them
    transform = loop._build_transform(config.train_augment, jnp.bfloat16 if precision == "bf16" else jnp.float32)
    tx = schedules.make_optimizer(config)
    state = create_train_state(model, tx, images[:1].astype(jnp.float32), jax.random.PRNGKey(0), jax.random.PRNGKey(1))
    saved = steps.PREPARED_INPUTS_MAX_BYTES
    steps.PREPARED_INPUTS_MAX_BYTES = prepared_max_bytes
    try:
        fns = steps.StepFunctions(loss="cross_entropy", train_transform=transform,
                                  flat_params=schedules.updates_one_vector(config))
        sums = []
        for idx in order:
            state, chunk_sums = fns.train_chunk(state, images, labels, idx)
            sums.append(chunk_sums)
    finally:
        steps.PREPARED_INPUTS_MAX_BYTES = saved
    return jax.device_get((state, sums))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="prepared_inputs_gpu_check.json")
    parser.add_argument("--steps-per-chunk", type=int, default=50)
    args = parser.parse_args()
    results = {}
    for precision in ("fp32", "bf16"):
        for head in ("default", "spinal"):
            ahead = jax.tree.leaves(run_chunks(precision, head, steps.PREPARED_INPUTS_MAX_BYTES,
                                               steps_per_chunk=args.steps_per_chunk))
            per_step = jax.tree.leaves(run_chunks(precision, head, 0, steps_per_chunk=args.steps_per_chunk))
            differing = sum(not np.array_equal(a, b) for a, b in zip(ahead, per_step, strict=True))
            results[f"{precision}/{head}"] = {"leaves": len(ahead), "differing_leaves": differing}
            print(precision, head, results[f"{precision}/{head}"], flush=True)
    table = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": jax.devices()[0].device_kind, "jax": jax.__version__,
        "command": "python experiments/check_prepared_inputs_gpu.py " + " ".join(sys.argv[1:]),
        "results": results, "bitwise_equal": all(r["differing_leaves"] == 0 for r in results.values()),
    }
    with open(args.out, "w") as f:
        json.dump(table, f, indent=1)
    return 0 if table["bitwise_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
