"""The jit-compiled trainer: train state, steps, the epoch loop, checkpoints, run outputs.

- ``TrainState``, ``create_train_state``: the state pytree (params, batch_stats, opt_state, step, rng).
- ``train_step``, ``eval_step``, ``train_chunk``, ``evaluate_arrays``, ``StepFunctions``: pure steps
  and their jitted epoch-level forms.
- ``train_and_evaluate(config, run_dir)``: one run with resume, metrics, checkpoints, summary.
- ``run_dir_for``, ``run_grid``, ``run_demo``: the grid layout, grids and the demo.
- ``Config``, ``load_config``, ``apply_overrides``: the configuration (``spinal_jax.train.config``).
"""

from spinal_jax.train.checkpoint import Checkpointer, CheckpointWarning
from spinal_jax.train.config import Config, apply_overrides, load_config
from spinal_jax.train.loop import RunConfigMismatch, TrainingDiverged, train_and_evaluate
from spinal_jax.train.state import TrainState, create_train_state
from spinal_jax.train.steps import (
    StepFunctions,
    eval_step,
    evaluate_arrays,
    train_chunk,
    train_step,
)

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
    "eval_step",
    "evaluate_arrays",
    "load_config",
    "train_and_evaluate",
    "train_chunk",
    "train_step",
]
