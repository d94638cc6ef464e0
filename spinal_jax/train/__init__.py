"""The jit-compiled trainer: train state, steps, the epoch loop, checkpoints, run outputs.

- ``TrainState``, ``create_train_state``: the state pytree (params, batch_stats, opt_state, step, rng).
- ``train_step``, ``eval_step``, ``train_chunk``, ``evaluate_arrays``, ``StepFunctions``: pure steps
  and their jitted epoch-level forms.
- ``train_and_evaluate(config, run_dir)``: one run with resume, metrics, checkpoints, summary.
- ``run_dir_for``, ``grid_configs``, ``format_table`` (``spinal_jax.train.grid``, no JAX), ``loop.run_grid``,
  ``loop.run_demo``: the grid layout, grids and the demo.
- ``Config``, ``load_config``, ``apply_overrides``: the configuration (``spinal_jax.train.config``).
- ``enable_deterministic_gpu_ops``: bitwise-reproducible runs on the GPU (``spinal_jax.train.determinism``).

The names are imported on first use, so that ``spinal_jax.train.config``, ``errors``, ``grid`` and
``jobs`` load without the trainer (``spinal-jax grid --jobs N`` starts its runs' processes without it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "CheckpointWarning": "checkpoint",
    "Checkpointer": "checkpoint",
    "Config": "config",
    "apply_overrides": "config",
    "load_config": "config",
    "enable_deterministic_gpu_ops": "determinism",
    "RunConfigMismatch": "errors",
    "TrainingDiverged": "errors",
    "format_table": "grid",
    "grid_configs": "grid",
    "run_dir_for": "grid",
    "train_and_evaluate": "loop",
    "TrainState": "state",
    "create_train_state": "state",
    "StepFunctions": "steps",
    "eval_step": "steps",
    "evaluate_arrays": "steps",
    "train_chunk": "steps",
    "train_step": "steps",
}
__all__ = [
    "CheckpointWarning",
    "Checkpointer",
    "Config",
    "RunConfigMismatch",
    "StepFunctions",
    "TrainState",
    "TrainingDiverged",
    "apply_overrides",
    "create_train_state",
    "enable_deterministic_gpu_ops",
    "eval_step",
    "evaluate_arrays",
    "format_table",
    "grid_configs",
    "load_config",
    "run_dir_for",
    "train_and_evaluate",
    "train_chunk",
    "train_step",
]

if TYPE_CHECKING:
    from spinal_jax.train.checkpoint import Checkpointer, CheckpointWarning
    from spinal_jax.train.config import Config, apply_overrides, load_config
    from spinal_jax.train.determinism import enable_deterministic_gpu_ops
    from spinal_jax.train.errors import RunConfigMismatch, TrainingDiverged
    from spinal_jax.train.grid import format_table, grid_configs, run_dir_for
    from spinal_jax.train.loop import train_and_evaluate
    from spinal_jax.train.state import TrainState, create_train_state
    from spinal_jax.train.steps import (
        StepFunctions,
        eval_step,
        evaluate_arrays,
        train_chunk,
        train_step,
    )


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'spinal_jax.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
