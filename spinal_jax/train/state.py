"""The train state: parameters, BatchNorm statistics, optimizer state, step and RNG key, as one pytree."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state
from jax._src import config as jax_config


class TrainState(train_state.TrainState):
    """``flax.training.train_state.TrainState`` plus ``batch_stats`` and the run's RNG key.

    ``rng`` is a raw ``uint32[2]`` key (``jax.random.PRNGKey``) so that checkpoints hold plain arrays;
    per-step keys are ``fold_in(rng, step)``, never split and carried, so a resumed run draws the same
    numbers as an uninterrupted one. ``step`` is an ``int32`` array (a ``lax.scan`` carry).
    """

    batch_stats: Any = struct.field(pytree_node=True, default_factory=dict)
    rng: jax.Array = struct.field(pytree_node=True, default=None)

    def variables(self, params: Any | None = None) -> dict[str, Any]:
        """The ``variables`` dict for ``apply_fn`` (``batch_stats`` left out when the model has none)."""
        variables = {"params": self.params if params is None else params}
        if self.batch_stats:
            variables["batch_stats"] = self.batch_stats
        return variables


def create_train_state(
    model: Any,
    tx: optax.GradientTransformation,
    example_input: jax.Array,
    init_key: jax.Array,
    train_key: jax.Array,
) -> TrainState:
    """Initialise ``model`` on ``example_input`` (a batch, NHWC) and wrap it with ``tx``.

    ``init_key`` seeds the parameters (and any ``dropout`` draw during init); ``train_key`` becomes
    ``state.rng``, the root of the per-step dropout and augmentation keys. ``model`` and ``tx`` must be
    hashable (flax modules and optax transformations are).
    """
    with _threefry_kernel():
        arrays = _initial_arrays(model, tx, example_input, init_key, train_key)
    return TrainState(apply_fn=model.apply, tx=tx, **arrays)


def _threefry_kernel() -> contextlib.AbstractContextManager:
    """In this thread, jax's Threefry hash as its one GPU kernel instead of XLA's unrolled rounds.

    Same bits either way (the CPU ignores it). A model's initialisation draws once per parameter; as
    unrolled rounds those draws make hundreds of fused kernels, and compiling them took 11.8 s of a
    VGG-5 run's set-up on an H100 (``experiments/results/startup_phases.jsonl``).
    ``jax_threefry_gpu_kernel_lowering`` has no public thread-local switch; without it (another jax
    version) the initialisation compiles as before.
    """
    flag = getattr(jax_config, "threefry_gpu_kernel_lowering", None)
    return flag(True) if callable(flag) else contextlib.nullcontext()


# One jitted program, compiled once per (model, tx, shapes): run op by op, the initialisation compiles
# each of its ~160 operations separately, which took 10-15 s of a run's set-up.
@functools.partial(jax.jit, static_argnums=(0, 1))
def _initial_arrays(
    model: Any, tx: optax.GradientTransformation, example_input: jax.Array, init_key: jax.Array, train_key: jax.Array
) -> dict[str, Any]:
    init_rng, dropout_rng = jax.random.split(init_key)
    variables = model.init({"params": init_rng, "dropout": dropout_rng}, example_input, train=False)
    params = variables["params"]
    return {
        "params": params,
        "batch_stats": variables.get("batch_stats", {}),
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "rng": jnp.asarray(train_key, jnp.uint32),
    }


def reset_optimizer(state: TrainState, tx: optax.GradientTransformation | None = None) -> TrainState:
    """A fresh optimizer state for the current parameters (a new stage of a multi-stage run)."""
    tx = state.tx if tx is None else tx
    return state.replace(tx=tx, opt_state=tx.init(state.params))
