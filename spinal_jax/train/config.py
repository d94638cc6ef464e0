"""Training configuration as code: the frozen dataclass :class:`Config`, loading and overrides.

Public names (stable; the engine, the CLI and the configs rely on them):

- ``Config``: frozen dataclass, one per run. Build it with keyword arguments (required: ``model``,
  ``dataset``, ``epochs``, ``batch_size``, ``learning_rate``). Cheap checks run in ``__post_init__``
  (types, sizes, enums → ``ValueError`` naming the key); ``Config.validate()`` additionally checks the
  model and dataset names against ``spinal_jax.models.names()`` / ``spinal_jax.data.info`` (imported
  lazily). ``Config.to_dict()`` / ``Config.from_dict(d)`` round-trip through JSON.
  ``Config.model_kwargs()`` returns ``model_overrides`` as a dict; ``Config.stage_plan()`` returns the
  effective stages ``((learning_rate, epochs), ...)`` clipped to ``epochs`` (one stage when
  ``stages`` is empty).
- ``load_config(name_or_path) -> Config``: a name resolves to ``spinal_jax.configs.<name>``
  (``experiments/configs/<name>.py``), a path to a ``.py`` file defining ``get_config()``.
- ``apply_overrides(config, overrides) -> Config``: ``overrides`` is a list of ``--config.KEY=VALUE``
  strings (``config.KEY=VALUE`` and ``KEY=VALUE`` also accepted; ``--config.model_overrides.KEY=V``
  sets one model override) or a mapping ``{KEY: value}``.
- ``split_validation(n, spec) -> (train_idx, val_idx)``: the clean protocol's hold-out.
- ``available_configs() -> list[str]``: names of the configs in ``experiments/configs``.
- ``PROTOCOLS``, ``HEADS``, ``OPTIMIZERS``, ``LR_RULES``, ``PRECISIONS``, ``LOSSES``: allowed values.

Epoch numbering: epochs are 0-based everywhere in this package (the first epoch is epoch 0).
The learning-rate controller (``spinal_jax.train.schedules.LRController``) is asked after each
finished epoch ``e`` and its decision applies from epoch ``e + 1`` on.

Fields (all documented on the class) are grouped as: identity (name, model, dataset, head,
num_classes, model_overrides, init_checkpoint), run length and batches (epochs, batch_size,
eval_batch_size, steps_per_epoch, drop_remainder), optimisation (optimizer, learning_rate, momentum,
adam_b1, adam_b2, adam_eps, weight_decay, loss, precision), the learning-rate rule (lr_rule,
lr_scale, lr_power, lr_compare, lr_divisor, lr_step_size, lr_gamma, lr_epochs, lr_start_epoch,
stages, stage_start_from_best), data (train_augment, eval_preprocess, protocol, validation,
data_dir, stream_workers), bookkeeping (seed, checkpoint_keep, log_every_steps, tensorboard, fsdp, notes).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import json
import math
import re
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

PROTOCOLS = ("paper", "clean")
HEADS = ("default", "spinal")
OPTIMIZERS = ("adam", "sgd")
LR_RULES = (
    "none",  # constant learning rate (per stage)
    "random_on_plateau",  # lr = lr_scale * U**lr_power when the metric does not improve
    "divide_on_plateau",  # lr = lr / lr_divisor when the metric does not improve (cumulative)
    "step",  # torch StepLR(lr_step_size, lr_gamma) stepped once per epoch, restarted each stage
    "random_every_epoch",  # from lr_start_epoch: fresh optimizer with lr = lr_scale * U**lr_power
    "divide_at_epochs",  # lr = lr / lr_divisor after epochs in lr_epochs and every epoch >= start
)
LR_COMPARES = (">=", ">")
PRECISIONS = ("fp32", "bf16")
LOSSES = ("cross_entropy", "mse")
REGRESSION_PREFIX = "regression/"  # regression/<kind>: spinal_jax.data.synthetic.regression_data(kind)
_VALIDATION_RE = re.compile(r"^(none|split:[A-Za-z0-9_\-\[\]:%]+|mod(\d+):(\d+)|fraction:([0-9.eE\-]+))$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """One training run. Every field can be overridden with ``--config.FIELD=VALUE``."""

    # --- identity -----------------------------------------------------------------------------
    model: str
    """Model name for ``spinal_jax.models.get`` (e.g. ``vgg5``, ``mnist_cnn``, ``digits_mlp``)."""
    dataset: str
    """Dataset name for ``spinal_jax.data`` (TFDS names such as ``fashion_mnist``, ``emnist/digits``;
    folder datasets ``qmnist``, ``bird225``...; ``digits``; ``regression/<task>``)."""
    name: str = ""
    """Config name (the module name under experiments/configs); empty → ``<dataset>_<model>``."""
    head: str = "default"
    """``default`` (the original's plain FC head) or ``spinal`` (the SpinalNet head)."""
    num_classes: int | None = None
    """Number of logits; ``None`` → the dataset's ``info(name).num_classes`` (1 for regression)."""
    model_overrides: tuple[tuple[str, Any], ...] = ()
    """Extra keyword arguments for ``models.get`` as sorted ``(key, value)`` pairs (a dict is accepted
    and converted)."""
    init_checkpoint: str | None = None
    """Path of pretrained backbone weights (e.g. a torchvision state dict) for transfer learning;
    ``None`` → random initialisation."""

    # --- run length and batches ------------------------------------------------------------------
    epochs: int
    """Total number of epochs trained (with ``stages``: at most their sum; later stages are cut)."""
    batch_size: int
    """Training batch size (global, over all devices)."""
    eval_batch_size: int = 1000
    """Batch size for validation/test evaluation (does not change results)."""
    steps_per_epoch: int | None = None
    """Cap on training steps per epoch (``None`` → the whole train split; small values for smoke
    tests)."""
    drop_remainder: bool = False
    """Drop the last partial training batch (torch DataLoader default keeps it → False)."""

    # --- optimisation ----------------------------------------------------------------------------
    optimizer: str = "adam"
    """``adam`` (torch Adam defaults) or ``sgd`` (torch SGD: ``v = mu*v + g; p -= lr*v``)."""
    learning_rate: float
    """Initial learning rate (with ``stages`` it must equal the first stage's)."""
    momentum: float = 0.0
    """SGD momentum (ignored by Adam)."""
    adam_b1: float = 0.9
    """Adam beta1."""
    adam_b2: float = 0.999
    """Adam beta2."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    weight_decay: float = 0.0
    """L2 weight decay added to the gradient as torch does (0 in every original script)."""
    loss: str = "cross_entropy"
    """``cross_entropy`` on logits (classification) or ``mse`` (regression toy tasks)."""
    precision: str = "fp32"
    """``fp32`` or ``bf16`` (bf16 compute; parameters and optimizer state kept in fp32)."""

    # --- learning-rate rule (see spinal_jax.train.schedules) ------------------------------------
    lr_rule: str = "none"
    """One of ``LR_RULES``."""
    lr_scale: float = 0.0
    """Random rules: the new lr is ``lr_scale * U**lr_power``, U ~ Uniform[0, 1)."""
    lr_power: float = 1.0
    """Random rules: exponent of U."""
    lr_compare: str = ">"
    """Plateau rules: the rule fires when ``best <lr_compare> metric``; ``>=`` (MNIST_VGG) counts ties
    as no improvement, ``>`` (CIFAR scripts) does not."""
    lr_divisor: float = 3.0
    """Divide rules: ``lr = lr / lr_divisor``."""
    lr_step_size: int = 7
    """``step`` rule: StepLR step size in epochs."""
    lr_gamma: float = 0.1
    """``step`` rule: StepLR gamma."""
    lr_epochs: tuple[int, ...] = ()
    """``divide_at_epochs``: finished-epoch indices after which the lr is divided."""
    lr_start_epoch: int | None = None
    """``random_every_epoch``: first epoch (0-based) trained with a fresh random-lr optimizer.
    ``divide_at_epochs``: the lr is also divided after every finished epoch ``e >= lr_start_epoch``.
    ``None`` → never."""
    stages: tuple[tuple[float, int], ...] = ()
    """Multi-stage runs: ``((lr, epochs), ...)``; each stage starts a fresh optimizer (moments reset)
    and a fresh ``step`` schedule. Empty → one stage ``(learning_rate, epochs)``."""
    stage_start_from_best: bool = False
    """Multi-stage: start each stage from the best (by the protocol's selection metric) weights of the
    previous stage, as the original's ``train_model`` returns them."""

    # --- data --------------------------------------------------------------------------------------
    train_augment: str = ""
    """Training pipeline spec for ``spinal_jax.data.augment.build`` (ends with ``normalize(...)``;
    empty → pixels scaled to [0, 1])."""
    eval_preprocess: str = ""
    """Evaluation pipeline spec (deterministic: resize / normalize); empty → pixels scaled to [0, 1]."""
    protocol: str = "paper"
    """``paper``: test accuracy drives the lr rule and the best test epoch is reported (as the
    original). ``clean``: a validation split (``validation``) held out of train drives the rule and
    picks the epoch; test accuracy is reported at that epoch and at the last."""
    validation: str = "mod10:0"
    """Clean protocol hold-out: ``modK:R`` (train examples with ``index % K == R``, e.g. the TL
    notebooks' ``mod10:0``/``mod10:4``), ``fraction:F`` (a seeded random fraction F of train),
    ``split:NAME`` (the dataset's own split, e.g. ``split:validation``) or ``none``."""
    data_dir: str | None = None
    """Data directory for ``spinal_jax.data`` (``None`` → its default)."""
    stream_workers: int = 0
    """Streamed (host-preprocessed) datasets only: worker processes of ``spinal_jax.data.stream``
    (0 = threads in the training process; the numbers do not depend on it)."""

    # --- bookkeeping -------------------------------------------------------------------------------
    seed: int = 0
    """One integer seeds everything: init, shuffling, dropout, augmentation, the random lr rule."""
    checkpoint_keep: int = 3
    """Number of epoch checkpoints kept."""
    log_every_steps: int = 50
    """Progress/metrics logging interval in training steps."""
    tensorboard: bool = True
    """Also write TensorBoard event files."""
    fsdp: bool = False
    """Shard parameters and optimizer state over the devices too (FSDP style, for large backbones;
    see ``spinal_jax.parallel.state_shardings``); the same math as the replicated run, up to float
    rounding. Part of the run's config: resume a run with the value it started with."""
    notes: str = ""
    """Free text (quirks reproduced or not); not used by the engine."""

    # ------------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        hints = _field_types()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, _coerce(f.name, value, hints[f.name]))
        if not self.name:
            object.__setattr__(self, "name", f"{self.dataset.replace('/', '_')}_{self.model}")
        self._check()

    # cheap, import-free checks -------------------------------------------------------------------
    def _check(self) -> None:
        for key in ("model", "dataset"):
            if not getattr(self, key).strip():
                raise ValueError(f"config.{key} must be a non-empty name")
        _one_of("head", self.head, HEADS)
        _one_of("protocol", self.protocol, PROTOCOLS)
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        _one_of("lr_rule", self.lr_rule, LR_RULES)
        _one_of("lr_compare", self.lr_compare, LR_COMPARES)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("loss", self.loss, LOSSES)
        for key in ("epochs", "batch_size", "eval_batch_size", "checkpoint_keep", "log_every_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"config.{key} must be >= 1, got {getattr(self, key)}")
        if self.stream_workers < 0:
            raise ValueError(f"config.stream_workers must be >= 0 (0 = threads), got {self.stream_workers}")
        for key in ("num_classes", "steps_per_epoch"):
            v = getattr(self, key)
            if v is not None and v < 1:
                raise ValueError(f"config.{key} must be >= 1 or None, got {v}")
        for key in ("learning_rate", "momentum", "weight_decay", "adam_eps", "lr_scale"):
            v = getattr(self, key)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"config.{key} must be a finite number >= 0, got {v}")
        if self.learning_rate <= 0:
            raise ValueError(f"config.learning_rate must be > 0, got {self.learning_rate}")
        if self.momentum >= 1:
            raise ValueError(f"config.momentum must be in [0, 1), got {self.momentum}")
        for key in ("adam_b1", "adam_b2"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"config.{key} must be in [0, 1), got {getattr(self, key)}")
        if self.optimizer == "adam" and self.momentum != 0:
            raise ValueError("config.momentum is an SGD setting; set it to 0 with optimizer='adam'")
        if self.lr_rule in ("random_on_plateau", "random_every_epoch") and self.lr_scale <= 0:
            raise ValueError(f"config.lr_scale must be > 0 with lr_rule='{self.lr_rule}'")
        if not math.isfinite(self.lr_power) or self.lr_power <= 0:
            raise ValueError(f"config.lr_power must be > 0, got {self.lr_power}")
        if not math.isfinite(self.lr_divisor) or self.lr_divisor <= 0:
            raise ValueError(f"config.lr_divisor must be > 0, got {self.lr_divisor}")
        if self.lr_step_size < 1:
            raise ValueError(f"config.lr_step_size must be >= 1, got {self.lr_step_size}")
        if not math.isfinite(self.lr_gamma) or self.lr_gamma <= 0:
            raise ValueError(f"config.lr_gamma must be > 0, got {self.lr_gamma}")
        if any(e < 0 for e in self.lr_epochs):
            raise ValueError(f"config.lr_epochs must be epoch indices >= 0, got {self.lr_epochs}")
        if self.lr_start_epoch is not None and self.lr_start_epoch < 0:
            raise ValueError(f"config.lr_start_epoch must be >= 0 or None, got {self.lr_start_epoch}")
        if self.lr_rule == "random_every_epoch" and self.lr_start_epoch is None:
            raise ValueError("config.lr_start_epoch is required with lr_rule='random_every_epoch'")
        if self.stages:
            for i, (lr, n) in enumerate(self.stages):
                if not math.isfinite(lr) or lr <= 0 or n < 1:
                    raise ValueError(
                        f"config.stages[{i}] must be (learning_rate > 0, epochs >= 1), got {(lr, n)}"
                    )
            total = sum(n for _, n in self.stages)
            if self.epochs > total:
                raise ValueError(
                    f"config.epochs={self.epochs} exceeds the sum of config.stages epochs ({total}); "
                    "lengthen a stage or lower epochs"
                )
            if self.learning_rate != self.stages[0][0]:
                raise ValueError(
                    f"config.learning_rate={self.learning_rate} must equal the first stage's "
                    f"learning rate {self.stages[0][0]} when config.stages is set (override stages)"
                )
        if not _VALIDATION_RE.match(self.validation):
            raise ValueError(
                f"config.validation={self.validation!r} is not one of 'modK:R', 'fraction:F', "
                "'split:NAME', 'none'"
            )
        m = _VALIDATION_RE.match(self.validation)
        if m.group(2) is not None and not 0 <= int(m.group(3)) < int(m.group(2)):
            raise ValueError(f"config.validation={self.validation!r}: need 0 <= R < K in 'modK:R'")
        if m.group(4) is not None and not 0 < float(m.group(4)) < 1:
            raise ValueError(f"config.validation={self.validation!r}: fraction must be in (0, 1)")
        if self.protocol == "clean" and self.validation == "none":
            raise ValueError("config.validation='none' is impossible with protocol='clean'")
        if self.loss == "mse" and self.lr_rule in ("random_on_plateau", "divide_on_plateau"):
            # the rules compare accuracies (higher is better); keep it explicit for regression
            raise ValueError("config.lr_rule plateau rules need an accuracy metric; not with loss='mse'")
        if len({k for k, _ in self.model_overrides}) != len(self.model_overrides):
            raise ValueError("config.model_overrides has duplicate keys")

    def validate(self) -> Config:
        """Full check: also the model and dataset names (imports models/data lazily). Returns self."""
        from spinal_jax import models

        names = list(models.names())
        if self.model not in names:
            raise ValueError(f"config.model={self.model!r} is unknown; known models: {names}")
        from spinal_jax import data

        if self.dataset.startswith(REGRESSION_PREFIX):
            from spinal_jax.data import synthetic

            kind = self.dataset[len(REGRESSION_PREFIX) :]
            if kind not in synthetic.KINDS:
                raise ValueError(
                    f"config.dataset={self.dataset!r} is unknown; regression datasets are "
                    f"{[REGRESSION_PREFIX + k for k in synthetic.KINDS]}"
                )
            if self.loss != "mse":
                raise ValueError(f"config.loss must be 'mse' for the regression dataset {self.dataset!r}")
            return self
        try:
            data.info(self.dataset)
        except (KeyError, ValueError) as e:
            raise ValueError(f"config.dataset={self.dataset!r} is unknown: {e}") from e
        return self

    # helpers ---------------------------------------------------------------------------------------
    def model_kwargs(self) -> dict[str, Any]:
        """``model_overrides`` as a dict."""
        return dict(self.model_overrides)

    def stage_plan(self) -> tuple[tuple[float, int], ...]:
        """Effective stages ``((lr, epochs), ...)`` summing to ``epochs`` (later stages cut)."""
        stages = self.stages or ((self.learning_rate, self.epochs),)
        out, left = [], self.epochs
        for lr, n in stages:
            if left <= 0:
                break
            out.append((lr, min(n, left)))
            left -= n
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Config:
        """Inverse of ``to_dict``; unknown keys → ValueError naming them."""
        unknown = sorted(set(d) - set(field_names()))
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid keys: {field_names()}")
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ValueError(f"missing required config keys {missing}")
        return cls(**dict(d))

    def replace(self, **changes: Any) -> Config:
        """``dataclasses.replace`` with unknown keys → ValueError."""
        return apply_overrides(self, changes)


_REQUIRED = ("model", "dataset", "epochs", "batch_size", "learning_rate")


def field_names() -> list[str]:
    """All Config field names."""
    return [f.name for f in dataclasses.fields(Config)]


_HINTS: dict[str, Any] | None = None


def _field_types() -> dict[str, Any]:
    global _HINTS
    if _HINTS is None:
        _HINTS = typing.get_type_hints(Config)
    return _HINTS


def _one_of(key: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"config.{key}={value!r} is not one of {list(allowed)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; normalise lists→tuples, dict→pairs, int→float."""
    if key == "model_overrides":
        if isinstance(value, Mapping):
            value = tuple(value.items())
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config.model_overrides must be a dict or (key, value) pairs, got {value!r}")
        pairs = []
        for item in value:
            if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
                raise ValueError(f"config.model_overrides entries must be (str, value), got {item!r}")
            pairs.append((item[0], _freeze(item[1])))
        return tuple(sorted(pairs, key=lambda kv: kv[0]))
    return _coerce_type(key, value, tp)


def _coerce_type(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce_type(key, value, a)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"config.{key}: bad value {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config.{key} must be a tuple ({_type_name(tp)}), got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce_type(key, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ValueError(f"config.{key} must have {len(args)} entries ({_type_name(tp)}), got {value!r}")
        return tuple(_coerce_type(key, v, a) for v, a in zip(value, args, strict=True))
    if tp is Any:
        return _freeze(value)
    if tp is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise ValueError(f"config.{key} must be a bool, got {value!r}")
    if tp is int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"config.{key} must be an int, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"config.{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"config.{key} must be a string, got {value!r}")
    raise ValueError(f"config.{key}: unsupported annotation {tp}")  # pragma: no cover


def _freeze(value: Any) -> Any:
    """Make a model-override value hashable (lists→tuples, dicts→sorted pairs)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


# --- loading ------------------------------------------------------------------------------------------

_CONFIG_DIR = Path(__file__).resolve().parents[2] / "experiments" / "configs"


def _config_dir() -> Path:
    try:
        mod = importlib.import_module("spinal_jax.configs")
        if getattr(mod, "__file__", None):
            return Path(mod.__file__).parent
        if getattr(mod, "__path__", None):
            return Path(next(iter(mod.__path__)))
    except ImportError:
        pass
    return _CONFIG_DIR


def available_configs() -> list[str]:
    """Names of the config modules in ``experiments/configs`` (sorted)."""
    _ensure_configs_package()
    d = _config_dir()
    return sorted(p.stem for p in d.glob("*.py") if not p.stem.startswith("_"))


def _load_module_from_path(path: Path, mod_name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load a config from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise
    return module


def _ensure_configs_package() -> None:
    """Make ``spinal_jax.configs`` importable even when the install does not map it (fallback:
    ``experiments/configs`` next to the package in a source checkout)."""
    try:
        importlib.import_module("spinal_jax.configs")
        return
    except ModuleNotFoundError as e:
        if e.name != "spinal_jax.configs":
            raise
    init = _CONFIG_DIR / "__init__.py"
    if not init.is_file():
        return
    spec = importlib.util.spec_from_file_location(
        "spinal_jax.configs", init, submodule_search_locations=[str(_CONFIG_DIR)]
    )
    if spec is None or spec.loader is None:  # pragma: no cover
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["spinal_jax.configs"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("spinal_jax.configs", None)
        raise


def load_config(name_or_path: str) -> Config:
    """Config named ``name_or_path`` (module ``spinal_jax.configs.<name>``), from a ``.py`` path, or from
    a ``.json`` path holding ``Config.to_dict()`` (e.g. a run directory's ``config.json``)."""
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError(f"--config needs a config name or a .py path, got {name_or_path!r}")
    p = Path(name_or_path)
    if name_or_path.endswith(".json"):
        if not p.is_file():
            raise ValueError(f"config file {name_or_path!r} does not exist")
        try:
            return Config.from_dict(json.loads(p.read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {name_or_path!r} is not valid JSON: {e}") from None
    if name_or_path.endswith(".py") or p.is_file():
        if not p.is_file():
            raise ValueError(f"config file {name_or_path!r} does not exist")
        _ensure_configs_package()  # path configs may use the shared presets
        module = _load_module_from_path(p.resolve(), f"_spinal_jax_config_{p.stem}")
        default_name = p.stem
    else:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name_or_path):
            raise ValueError(f"config name {name_or_path!r} is not a valid module name")
        _ensure_configs_package()
        try:
            module = importlib.import_module(f"spinal_jax.configs.{name_or_path}")
        except ModuleNotFoundError as e:
            if e.name != f"spinal_jax.configs.{name_or_path}":
                raise
            raise ValueError(
                f"unknown config {name_or_path!r}; available: {available_configs()}"
            ) from None
        default_name = name_or_path
    get = getattr(module, "get_config", None)
    if not callable(get):
        raise ValueError(f"config module {name_or_path!r} defines no get_config()")
    config = get()
    if not isinstance(config, Config):
        raise ValueError(f"get_config() of {name_or_path!r} returned {type(config).__name__}, not Config")
    if not config.name:
        config = dataclasses.replace(config, name=default_name)
    return config


# --- overrides ----------------------------------------------------------------------------------------

_OVERRIDE_RE = re.compile(r"^(?:--)?(?:config\.)?([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)=(.*)$", re.S)


def _parse_value(key: str, text: str, tp: Any) -> Any:
    """Parse a command-line value by the field's annotation."""
    text = text.strip()
    allows_none = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
    if allows_none and text in ("None", "none", "null"):
        return None
    base = tp
    if allows_none:
        base = next(a for a in typing.get_args(tp) if a is not type(None))
    if base is str:
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            return ast.literal_eval(text)
        return text
    if base is bool:
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"config.{key} must be a bool (true/false), got {text!r}")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if base is Any:
            return text
        raise ValueError(f"config.{key}: cannot parse {text!r} as {_type_name(tp)}") from None


def apply_overrides(config: Config, overrides: Iterable[str] | Mapping[str, Any]) -> Config:
    """New Config with ``overrides`` applied (strings parsed by the field's type); validated."""
    names = field_names()
    hints = _field_types()
    changes: dict[str, Any] = {}
    model_over = dict(config.model_overrides)
    touched_model = False
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
        parsed = False
    else:
        items = []
        for s in overrides:
            m = _OVERRIDE_RE.match(s)
            if not m:
                raise ValueError(f"bad override {s!r}; expected --config.KEY=VALUE (valid keys: {names})")
            items.append((m.group(1), m.group(2)))
        parsed = True
    for key, value in items:
        if key.startswith("model_overrides."):
            sub = key.split(".", 1)[1]
            model_over[sub] = _parse_value(key, value, Any) if parsed else value
            touched_model = True
            continue
        if key not in names:
            raise ValueError(f"unknown config key {key!r}; valid keys: {names}")
        if parsed:
            value = _parse_value(key, value, hints[key])
        if key == "model_overrides":
            model_over = dict(_coerce("model_overrides", value, hints[key]))
            touched_model = True
            continue
        changes[key] = value
    if touched_model:
        changes["model_overrides"] = tuple(model_over.items())
    if "learning_rate" in changes and "stages" not in changes and config.stages:
        # keep a staged config consistent: the first stage follows an overridden learning rate
        lr = changes["learning_rate"]
        changes["stages"] = ((lr, config.stages[0][1]), *config.stages[1:])
    return dataclasses.replace(config, **changes)


# --- validation split ------------------------------------------------------------------------------------


def split_validation(n: int, spec: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train_idx, val_idx)`` of a train split of size ``n`` held out by ``spec``.

    ``modK:R``: val = indices with ``i % K == R`` (the TL notebooks' every-10th rule); ``fraction:F``:
    a random (``seed``) subset of ``round(F*n)`` indices, sorted; ``none``: no validation.
    ``split:NAME`` is resolved by the data loader, not here (→ ValueError).
    """
    if n < 1:
        raise ValueError(f"split_validation needs n >= 1, got {n}")
    m = _VALIDATION_RE.match(spec)
    if not m:
        raise ValueError(f"validation spec {spec!r} is not one of 'modK:R', 'fraction:F', 'none'")
    idx = np.arange(n)
    if spec == "none":
        return idx, idx[:0]
    if m.group(2) is not None:
        k, r = int(m.group(2)), int(m.group(3))
        mask = idx % k == r
        return idx[~mask], idx[mask]
    if m.group(4) is not None:
        f = float(m.group(4))
        n_val = round(f * n)
        if not 0 < n_val < n:
            raise ValueError(f"validation {spec!r} leaves an empty train or validation split of {n}")
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0x5EED])))
        val = np.sort(rng.permutation(n)[:n_val])
        mask = np.zeros(n, bool)
        mask[val] = True
        return idx[~mask], idx[mask]
    raise ValueError(f"validation {spec!r} names a dataset split; the data loader resolves it")


def config_json(config: Config) -> str:
    """Stable JSON text of a config (sorted keys)."""
    return json.dumps(config.to_dict(), sort_keys=True)
