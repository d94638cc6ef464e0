"""The original's optimizers and epoch-level learning-rate rules (ORIGINAL.md §1.10).

Public names:

- ``make_optimizer(config, learning_rate=None) -> optax.GradientTransformation``: torch-equivalent
  Adam / SGD(momentum) wrapped in ``optax.inject_hyperparams``, so the learning rate lives in the
  optimizer state (``opt_state.hyperparams["learning_rate"]``) and can be changed between epochs
  without touching Adam's moments or SGD's momentum buffer. The update runs on all parameters raveled
  into one vector (``optax.flatten``): the same elementwise numbers in a few fused kernels instead of a
  few per parameter tensor (faster on GPUs; PERF_NOTES.md), with the moments stored as flat vectors;
  with ``config.fsdp`` it runs per tensor, so that each tensor's optimizer state is sharded like it.
- ``set_learning_rate(opt_state, lr) -> opt_state`` and ``get_learning_rate(opt_state) -> float``.
- ``LRController(config, uniform=None)``: epoch-level controller. Call
  ``after_epoch(epoch, metric) -> LRDecision`` after each finished (0-based) epoch with the metric that
  drives the rule (protocol ``paper``: test accuracy; ``clean``: validation accuracy; for rules that
  ignore it any float). The decision applies from epoch ``epoch + 1``:
  ``LRDecision(learning_rate, reset_optimizer, restore_epoch, stage)``; with ``reset_optimizer`` the
  engine re-initialises the optimizer state (fresh moments / momentum) and sets the new rate; with
  ``restore_epoch`` not None (multi-stage runs with ``stage_start_from_best``) it first reloads the
  weights it kept from that epoch (the best epoch of the finished stage by the metric).
  ``state_dict()`` is a small JSON-serialisable dict (including the numpy PCG64 state of the random
  rules); ``load_state_dict(d)`` restores it exactly. ``learning_rate`` / ``stage`` give the current
  values; ``initial_learning_rate`` the rate of epoch 0.

The random rules draw ``U ~ Uniform[0, 1)`` from ``numpy.random.Generator(PCG64)`` seeded from
``config.seed`` (not the global numpy RNG, so runs are reproducible and resumable); tests can inject
``uniform`` (a zero-argument callable) to fix the draws.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from spinal_jax.train.config import Config

_RNG_TAG = 0x1A2B  # separates the lr-rule stream from other seeded streams


def updates_one_vector(config: Config) -> bool:
    """Whether ``make_optimizer(config)`` updates all parameters as one raveled vector (not under FSDP)."""
    return not config.fsdp


def _one_vector(tx: optax.GradientTransformation, flat: bool) -> optax.GradientTransformation:
    return optax.flatten(tx) if flat else tx


def _torch_adam(learning_rate, b1, b2, eps, weight_decay, flat):
    parts = []
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))  # torch: g += wd * p before Adam
    parts += [optax.scale_by_adam(b1=b1, b2=b2, eps=eps), optax.scale_by_learning_rate(learning_rate)]
    return _one_vector(optax.chain(*parts), flat)


def _torch_sgd(learning_rate, momentum, weight_decay, flat):
    parts = []
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    if momentum:
        parts.append(optax.trace(decay=momentum, nesterov=False))  # v = mu*v + g (torch)
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return _one_vector(optax.chain(*parts), flat)


def make_optimizer(config: Config, learning_rate: float | None = None) -> optax.GradientTransformation:
    """Optimizer of ``config`` with an injectable learning rate (default: the first stage's)."""
    lr = float(config.stage_plan()[0][0] if learning_rate is None else learning_rate)
    if config.optimizer == "adam":
        return optax.inject_hyperparams(_torch_adam, static_args=("b1", "b2", "eps", "weight_decay", "flat"))(
            learning_rate=lr,
            b1=config.adam_b1,
            b2=config.adam_b2,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
            flat=updates_one_vector(config),
        )
    if config.optimizer == "sgd":
        return optax.inject_hyperparams(_torch_sgd, static_args=("momentum", "weight_decay", "flat"))(
            learning_rate=lr, momentum=config.momentum, weight_decay=config.weight_decay, flat=updates_one_vector(config)
        )
    raise ValueError(f"config.optimizer={config.optimizer!r} is not one of ['adam', 'sgd']")


def set_learning_rate(opt_state: Any, learning_rate: float) -> Any:
    """``opt_state`` (from ``make_optimizer``) with the learning rate replaced; moments untouched."""
    if not hasattr(opt_state, "hyperparams") or "learning_rate" not in opt_state.hyperparams:
        raise ValueError("set_learning_rate needs an optimizer state built by make_optimizer")
    old = opt_state.hyperparams["learning_rate"]
    hp = dict(opt_state.hyperparams)
    hp["learning_rate"] = jnp.asarray(learning_rate, dtype=jnp.asarray(old).dtype)
    return opt_state._replace(hyperparams=hp)


def get_learning_rate(opt_state: Any) -> float:
    """Current learning rate stored in ``opt_state``."""
    return float(opt_state.hyperparams["learning_rate"])


@dataclasses.dataclass(frozen=True)
class LRDecision:
    """What to do before the next epoch."""

    learning_rate: float
    reset_optimizer: bool = False
    restore_epoch: int | None = None
    stage: int = 0


_COMPARE = {">=": operator.ge, ">": operator.gt}


class LRController:
    """Epoch-level learning-rate rule of a config (see module docstring)."""

    def __init__(self, config: Config, uniform: Callable[[], float] | None = None) -> None:
        self.config = config
        self._plan = config.stage_plan()
        # first epoch index of each stage
        self._starts = np.cumsum([0] + [n for _, n in self._plan])[:-1].tolist()
        self._uniform = uniform
        self._rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([config.seed, _RNG_TAG])))
        self.learning_rate = float(self._plan[0][0])
        self.stage = 0
        self.best = 0.0  # the original scripts start from best_accuracy = 0
        self.stage_best: float | None = None
        self.stage_best_epoch: int | None = None
        self.last_epoch = -1
        self.draws = 0

    @property
    def initial_learning_rate(self) -> float:
        return float(self._plan[0][0])

    def _u(self) -> float:
        self.draws += 1
        if self._uniform is not None:
            return float(self._uniform())
        return float(self._rng.random())

    def _random_lr(self) -> float:
        c = self.config
        return c.lr_scale * self._u() ** c.lr_power

    def after_epoch(self, epoch: int, metric: float) -> LRDecision:
        """Decision after finished epoch ``epoch`` (0-based, consecutive) with ``metric``."""
        if epoch != self.last_epoch + 1:
            raise ValueError(
                f"LRController.after_epoch expects epoch {self.last_epoch + 1} next, got {epoch} "
                "(epochs must be reported once each, in order; resume with load_state_dict)"
            )
        metric = float(metric)
        if not np.isfinite(metric):
            raise ValueError(f"LRController.after_epoch got a non-finite metric {metric}")
        c = self.config
        self.last_epoch = epoch
        # per-stage best (the original's train_model: `if epoch_acc > best_acc`)
        if self.stage_best is None or metric > self.stage_best:
            self.stage_best, self.stage_best_epoch = metric, epoch
        stage_start = self._starts[self.stage]
        stage_lr, stage_len = self._plan[self.stage]
        next_epoch = epoch + 1
        if next_epoch - stage_start >= stage_len:
            if self.stage + 1 < len(self._plan):  # new stage: fresh optimizer and scheduler
                restore = self.stage_best_epoch if c.stage_start_from_best else None
                self.stage += 1
                self.learning_rate = float(self._plan[self.stage][0])
                self.best, self.stage_best, self.stage_best_epoch = 0.0, None, None
                return LRDecision(self.learning_rate, True, restore, self.stage)
            return LRDecision(self.learning_rate, False, None, self.stage)  # run is over

        reset = False
        rule = c.lr_rule
        if rule in ("random_on_plateau", "divide_on_plateau"):
            if _COMPARE[c.lr_compare](self.best, metric):
                if rule == "random_on_plateau":
                    self.learning_rate = self._random_lr()
                else:
                    self.learning_rate = self.learning_rate / c.lr_divisor
            else:
                self.best = metric
        elif rule == "step":
            done = next_epoch - stage_start  # scheduler.step() calls so far in this stage
            self.learning_rate = float(stage_lr * c.lr_gamma ** (done // c.lr_step_size))
        elif rule == "random_every_epoch":
            if next_epoch >= c.lr_start_epoch:
                self.learning_rate = self._random_lr()
                reset = True
        elif rule == "divide_at_epochs":
            start = c.lr_start_epoch
            if epoch in c.lr_epochs or (start is not None and epoch >= start):
                self.learning_rate = self.learning_rate / c.lr_divisor
        elif rule != "none":  # pragma: no cover - Config validates lr_rule
            raise ValueError(f"unknown lr_rule {rule!r}")
        return LRDecision(float(self.learning_rate), reset, None, self.stage)

    # --- serialisation ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (exact: floats round-trip through JSON)."""
        return {
            "lr_rule": self.config.lr_rule,
            "learning_rate": self.learning_rate,
            "stage": self.stage,
            "best": self.best,
            "stage_best": self.stage_best,
            "stage_best_epoch": self.stage_best_epoch,
            "last_epoch": self.last_epoch,
            "draws": self.draws,
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output (checks it belongs to the same rule)."""
        if state.get("lr_rule") != self.config.lr_rule:
            raise ValueError(
                f"LRController state is for lr_rule={state.get('lr_rule')!r}, "
                f"the config has {self.config.lr_rule!r}"
            )
        self.learning_rate = float(state["learning_rate"])
        self.stage = int(state["stage"])
        self.best = float(state["best"])
        sb = state["stage_best"]
        self.stage_best = None if sb is None else float(sb)
        sbe = state["stage_best_epoch"]
        self.stage_best_epoch = None if sbe is None else int(sbe)
        self.last_epoch = int(state["last_epoch"])
        self.draws = int(state["draws"])
        self._rng.bit_generator.state = state["rng"]
