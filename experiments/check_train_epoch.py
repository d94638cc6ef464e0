"""Epoch time of ``spinal-jax train``'s default path (the engine, not a separate benchmark loop).

Runs the ``fashion_mnist_vgg5`` config (augmentation on the device, batch 100, 600 steps an epoch)
for a few epochs on random uint8 data of Fashion-MNIST's shape, both heads, fp32 and bf16, and
prints the per-epoch training seconds (the first epoch includes compilation).

    python experiments/check_train_epoch.py [--epochs 4]
    python experiments/check_train_epoch.py --group 3   # the grouped path: both heads x 3 seeds at once

``--group N`` times ``spinal_jax.train.multi.train_many`` (what ``spinal-jax grid`` uses): every head
x N seeds in one jitted step; ``epoch_seconds`` is then the whole group's epoch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys
import tempfile

import jax
import numpy as np

try:  # installed: pyproject maps experiments/configs to spinal_jax.configs
    import spinal_jax.configs  # noqa: F401
except ImportError:  # a bare checkout (PYTHONPATH=.): register the mapping by hand
    _init = pathlib.Path(__file__).resolve().parent / "configs" / "__init__.py"
    _spec = importlib.util.spec_from_file_location("spinal_jax.configs", _init, submodule_search_locations=[str(_init.parent)])
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["spinal_jax.configs"] = _mod
    _spec.loader.exec_module(_mod)

from spinal_jax.train import apply_overrides, load_config, loop
from spinal_jax.train.loop import Split


def _random_fashion_mnist(config):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60000, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, 60000).astype(np.int32)
    return Split(x, y), None, Split(x[:10000], y[:10000]), 10


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--config", default="fashion_mnist_vgg5")
    parser.add_argument("--heads", default="default,spinal")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--override", action="append", default=[], help="--config.KEY=VALUE (repeatable)")
    parser.add_argument("--group", type=int, default=0, help="time train_many: all heads x GROUP seeds together")
    args = parser.parse_args()
    loop.load_splits = _random_fashion_mnist
    print(jax.devices())
    rows = []
    if args.group:
        _time_groups(args, rows)
        return
    for precision in args.precisions.split(","):
        for head in args.heads.split(","):
            config = apply_overrides(load_config(args.config), args.override)
            config = apply_overrides(
                config, {"epochs": args.epochs, "precision": precision, "head": head, "tensorboard": False}
            )
            with tempfile.TemporaryDirectory() as run_dir:
                loop.train_and_evaluate(config, run_dir, progress=False)
                with open(f"{run_dir}/metrics.jsonl") as f:
                    seconds = [json.loads(line)["seconds"] for line in f]
            rows.append({"precision": precision, "head": head, "overrides": args.override, "epoch_seconds": seconds})
            print(json.dumps(rows[-1]), flush=True)


def _time_groups(args, rows) -> None:
    from spinal_jax.train import multi

    for precision in args.precisions.split(","):
        base = apply_overrides(load_config(args.config), args.override)
        base = apply_overrides(base, {"epochs": args.epochs, "precision": precision, "tensorboard": False})
        configs = [
            apply_overrides(base, {"head": head, "seed": base.seed + k})
            for head in args.heads.split(",")
            for k in range(args.group)
        ]
        with tempfile.TemporaryDirectory() as workdir:
            dirs = [loop.run_dir_for(workdir, c) for c in configs]
            multi.train_many(configs, dirs, progress=False)
            with open(f"{dirs[0]}/metrics.jsonl") as f:
                seconds = [json.loads(line)["seconds"] for line in f]
        rows.append({"precision": precision, "heads": args.heads, "seeds_per_head": args.group, "runs": len(configs),
                     "overrides": args.override, "group_epoch_seconds": seconds})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
