"""The grid layout and its table, apart from the trainer: ``spinal-jax grid --jobs N`` checks its configs
and starts its runs' processes without loading it (``spinal_jax.train.jobs``).

- ``grid_configs``: every config of some names × heads × seeds, validated before anything runs.
- ``run_dir_for``: ``<workdir>/<config name>/<head>/seed<seed>``.
- ``format_table``: a Markdown table of run summaries, mean ± std over seeds.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from spinal_jax.train.config import HEADS, Config, apply_overrides, load_config


def run_dir_for(workdir: str | os.PathLike, config: Config) -> str:
    """The grid layout: ``<workdir>/<config name>/<head>/seed<seed>``."""
    return os.path.join(os.fspath(workdir), config.name, config.head, f"seed{config.seed}")


def grid_configs(
    names: list[str],
    seeds: int = 1,
    overrides: list[str] | dict[str, Any] | None = None,
    heads: tuple[str, ...] = HEADS,
) -> list[Config]:
    """Every config of ``names`` × ``heads`` × seeds ``base seed .. base seed + seeds - 1``, validated.

    All configs are built and checked before anything runs, so a bad name or override fails at once.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds={seeds!r}: expected a positive int")
    if not names:
        raise ValueError("no config names given")
    configs = []
    for name in names:
        base = load_config(name)
        if overrides:
            base = apply_overrides(base, overrides)
        for head in heads:
            for k in range(seeds):
                configs.append(apply_overrides(base, {"head": head, "seed": base.seed + k}).validate())
    return configs


def format_table(summaries: list[dict[str, Any]]) -> str:
    """A Markdown table of run summaries: one row per (config, head, protocol), mean ± std over seeds.

    Classification rows show accuracies; regression rows (no accuracy) show the MSE.
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for s in summaries:
        groups.setdefault((s.get("name", s["model"]), s["head"], s["protocol"]), []).append(s)

    def stat(values: list[float | None], percent: bool) -> str:
        vals = [v for v in values if v is not None]
        if not vals:
            return "-"
        scale, fmt, unit = (100.0, ".2f", "%") if percent else (1.0, ".4g", "")
        if len(vals) == 1:
            return f"{scale * vals[0]:{fmt}}{unit}"
        return f"{scale * np.mean(vals):{fmt}} ± {scale * np.std(vals, ddof=1):{fmt}}{unit}"

    lines = [
        "| config | head | protocol | seeds | epochs | metric | final test | best test | val-selected test | s/epoch |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for (name, head, protocol), runs in groups.items():
        acc = runs[0].get("test_accuracy") is not None
        key = "accuracy" if acc else "loss"
        final = stat([r.get(f"test_{key}") for r in runs], acc)
        best = stat([r.get(f"best_test_{key}") for r in runs], acc)
        selected = stat([r.get(f"val_selected_test_{key}") for r in runs], acc)
        seconds = [r["seconds_per_epoch"] for r in runs if r.get("seconds_per_epoch") is not None]
        per_epoch = f"{np.mean(seconds):.3f}" if seconds else "-"
        lines.append(
            f"| {name} | {head} | {protocol} | {len(runs)} | {runs[0]['epochs']} | "
            f"{'accuracy' if acc else 'MSE'} | {final} | {best} | {selected} | {per_epoch} |"
        )
    return "\n".join(lines)
