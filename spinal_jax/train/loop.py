"""The training loop: a config and a run directory in, ``summary.json`` (and curves, metrics, checkpoints) out.

Fast path (every dataset whose ``info(name).resident`` is True): the whole split sits on the device
as uint8; each epoch draws a permutation on the device and a jitted ``lax.scan`` runs chunks of
``log_every_steps`` steps (gather → augment → normalise → forward/backward → update), with the state
donated; metric sums come back once per chunk, and the next chunk is dispatched before they are
read, so the host never stalls the device. Evaluation runs over a whole split in one jitted call.
Streaming datasets go through the same ``train_step``, one host batch at a time.

Devices and hosts: the batch is sharded over a ``data`` mesh (``spinal_jax.parallel``), the state
replicated or, with ``config.fsdp``, sharded. With several processes every host holds the resident
split in full and draws the same global permutation (replicated key), so each step's global batch is
that of one process; streamed batches are cut into each host's rows (``process_batch_slice``).

Run directory::

    <run_dir>/config.json      the config (a different config in the same directory is refused)
    <run_dir>/metrics.jsonl    one line per finished epoch
    <run_dir>/summary.json     written when the run finishes (its presence means "done")
    <run_dir>/curves.png       loss/accuracy curves
    <run_dir>/checkpoints/     orbax checkpoints, one per epoch, the last ``checkpoint_keep`` kept
    <run_dir>/tensorboard/     TensorBoard event files (tensorboardX)

Protocols: ``paper`` (test accuracy drives the learning-rate rule; the best test epoch is reported)
and ``clean`` (a validation split held out of train drives the rule and picks the epoch; the test
accuracy at that epoch and at the last epoch are reported).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spinal_jax import parallel
from spinal_jax.train import metrics as metrics_io
from spinal_jax.train import schedules
from spinal_jax.train.checkpoint import Checkpointer
from spinal_jax.train.config import REGRESSION_PREFIX, Config, config_json, split_validation
from spinal_jax.train.errors import RunConfigMismatch, TrainingDiverged
from spinal_jax.train.grid import grid_configs, run_dir_for
from spinal_jax.train.state import TrainState, create_train_state, reset_optimizer
from spinal_jax.train.steps import (
    StepFunctions,
    compiler_options,
    convolutions_slow_in_loops,
    summarize,
)

log = logging.getLogger(__name__)

# fold_in tags of the run's root key (PRNGKey(seed)): one independent stream per use.
_INIT_KEY, _SHUFFLE_KEY, _TRAIN_KEY = 0, 1, 2

EpochCallback = Callable[[int, dict[str, Any]], None]


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache (every compile, however short, is kept).

    Runs of the same model and pipeline (other seeds, the other protocol, a resumed run, the demo
    again) then skip XLA compilation. ``path`` defaults to ``$SPINAL_JAX_COMPILATION_CACHE`` or
    ``~/.cache/spinal_jax/xla``; the variable set to ``0`` (or ``off``) disables it. Returns the path used.
    """
    env = os.environ.get("SPINAL_JAX_COMPILATION_CACHE")
    if path is None and env is not None and env.strip().lower() in ("0", "off", "false", "no", ""):
        return None
    path = os.fspath(path or env or os.path.join(os.path.expanduser("~"), ".cache", "spinal_jax", "xla"))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Split:
    """One split as host arrays: inputs (uint8 NHWC images or float features) and targets."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, idx: np.ndarray) -> Split:
        return Split(self.x[idx], self.y[idx])


def load_splits(config: Config) -> tuple[Split, Split | None, Split, int]:
    """``(train, validation or None, test, num_classes)`` for ``config`` (validation only for ``clean``).

    The clean protocol holds its validation split out of train (``config.validation``), or reads a
    split of its own (``split:NAME``).
    """
    from spinal_jax import data

    if config.dataset.startswith(REGRESSION_PREFIX):
        return _regression_splits(config)
    info = data.info(config.dataset)
    train = Split(*data.load_arrays(config.dataset, info.train_split, config.data_dir))
    test = Split(*data.load_arrays(config.dataset, info.eval_split, config.data_dir))
    num_classes = config.num_classes if config.num_classes is not None else info.num_classes
    val = None
    if config.protocol == "clean":
        if config.validation.startswith("split:"):
            val = Split(*data.load_arrays(config.dataset, config.validation.split(":", 1)[1], config.data_dir))
        else:
            train_idx, val_idx = split_validation(len(train), config.validation, config.seed)
            train, val = train.take(train_idx), train.take(val_idx)
    return train, val, test, num_classes


def _regression_splits(config: Config) -> tuple[Split, Split | None, Split, int]:
    """The §2.8 toy data: the original fits all samples and reports losses on them, so "test" is the
    whole set; the clean protocol holds its validation split out of the training part."""
    from spinal_jax.data import synthetic

    x, y = synthetic.regression_data(config.dataset[len(REGRESSION_PREFIX) :])
    everything = Split(x, y)
    train, val = everything, None
    if config.protocol == "clean":
        train_idx, val_idx = split_validation(len(everything), config.validation, config.seed)
        train, val = everything.take(train_idx), everything.take(val_idx)
    return train, val, everything, config.num_classes or int(y.shape[-1])


# ---------------------------------------------------------------------------------------------
# Device placement
# ---------------------------------------------------------------------------------------------


def _put(x: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    """A global array from a host array every process holds in full (works across processes)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def _place(tree: Any, shardings: Any) -> Any:
    """``tree`` on ``shardings``: leaves already on the mesh are resharded on the device; host or
    single-device leaves (a fresh state, a new learning-rate scalar) are placed like ``_put``, which
    also holds when the mesh spans several processes (each holds the same full value)."""

    def one(x: Any, sharding: jax.sharding.Sharding) -> jax.Array:
        if isinstance(x, jax.Array) and x.sharding.device_set == sharding.device_set:
            return jax.device_put(x, sharding)
        return _put(x, sharding)

    return jax.tree.map(one, tree, shardings)


@dataclasses.dataclass
class EvalArrays:
    """A split laid out for one jitted evaluation: ``(num_batches, batch, ...)`` plus a padding mask
    (host arrays from ``pad_eval``, device arrays from ``place_eval`` / ``layout_eval``)."""

    x: Any
    y: Any
    mask: Any
    count: int


def _eval_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, parallel.DATA_AXIS))


def pad_eval(split: Split, batch_size: int, mesh: jax.sharding.Mesh) -> EvalArrays:
    """``split`` padded to whole batches on the host (batch size rounded up to a multiple of the
    device count)."""
    n_dev = parallel.mesh_size(mesh)
    n = len(split)
    batch_size = min(batch_size, n)
    batch_size = -(-batch_size // n_dev) * n_dev
    num_batches = -(-n // batch_size)
    pad = num_batches * batch_size - n
    x = np.concatenate([split.x, np.zeros((pad, *split.x.shape[1:]), split.x.dtype)])
    y = np.concatenate([split.y, np.zeros((pad, *split.y.shape[1:]), split.y.dtype)])
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return EvalArrays(
        x=x.reshape(num_batches, batch_size, *x.shape[1:]),
        y=y.reshape(num_batches, batch_size, *y.shape[1:]),
        mask=mask.reshape(num_batches, batch_size),
        count=n,
    )


def place_eval(host: EvalArrays, mesh: jax.sharding.Mesh) -> EvalArrays:
    """``pad_eval``'s host arrays on the mesh, batches sharded over its ``data`` axis."""
    sharding = _eval_sharding(mesh)
    return dataclasses.replace(host, x=_put(host.x, sharding), y=_put(host.y, sharding), mask=_put(host.mask, sharding))


def layout_eval(split: Split, batch_size: int, mesh: jax.sharding.Mesh) -> EvalArrays:
    """``split`` padded to whole batches and placed on the mesh (``pad_eval``, ``place_eval``)."""
    return place_eval(pad_eval(split, batch_size, mesh), mesh)


def _struct(x: np.ndarray, sharding: jax.sharding.Sharding) -> jax.ShapeDtypeStruct:
    """The shape, dtype and sharding that ``_put(x, sharding)`` will have."""
    return jax.ShapeDtypeStruct(x.shape, jax.dtypes.canonicalize_dtype(x.dtype), sharding=sharding)


def epoch_layout(config: Config, num_train: int, batch_size: int) -> tuple[int, int, int]:
    """``(steps, tail, chunk)`` of an epoch over ``num_train`` examples: full batches (or
    ``config.steps_per_epoch`` when it asks for fewer), the size of the last partial batch (0 with
    ``drop_remainder`` or ``steps_per_epoch``) and the steps of one jitted chunk (``chunk_size``)."""
    if num_train < 1:
        raise ValueError(f"config.dataset={config.dataset!r}: the train split is empty")
    full_steps, tail = divmod(num_train, batch_size)
    if config.steps_per_epoch is not None and config.steps_per_epoch < full_steps + (tail > 0):
        steps, tail = config.steps_per_epoch, 0
    else:
        steps, tail = full_steps, (0 if config.drop_remainder else tail)
    if steps == 0 and tail == 0:
        raise ValueError(
            f"config.batch_size={batch_size} exceeds the {num_train} training examples with "
            "drop_remainder=True: no step would run; lower batch_size"
        )
    return steps, tail, (chunk_size(steps, config.log_every_steps) if steps else 0)


def chunk_size(steps: int, target: int) -> int:
    """Steps per jitted chunk: the divisor of ``steps`` nearest ``target`` within [target/2, 2·target]
    (every chunk the same length: one compile), else ``target`` (plus one shorter last chunk)."""
    target = max(1, min(target, steps))
    candidates = [k for k in range(max(1, target // 2), min(steps, 2 * target) + 1) if steps % k == 0]
    if candidates:
        return min(candidates, key=lambda k: (abs(k - target), -k))
    return target


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _is_main() -> bool:
    return jax.process_index() == 0


def _build_model(config: Config, num_classes: int) -> Any:
    from spinal_jax import models

    overrides = config.model_kwargs()
    if config.precision == "bf16":
        overrides.setdefault("dtype", jnp.bfloat16)
    return models.get(config.model, num_classes, config.head, **overrides)


def _build_transform(spec: str, dtype: Any = jnp.float32) -> Any:
    if not spec:
        return None
    from spinal_jax.data import augment

    return augment.build(spec, dtype=dtype)


def _selection(config: Config) -> str:
    """The history key that drives the learning-rate rule and picks the reported epoch."""
    if config.loss == "mse":
        return "val_loss" if config.protocol == "clean" else "test_loss"
    return "val_accuracy" if config.protocol == "clean" else "test_accuracy"


def _best_index(history: list[dict[str, Any]], key: str) -> int:
    values = [r[key] for r in history]
    if key.endswith("loss"):
        return int(np.argmin(values))
    return int(np.argmax(values))  # the first epoch reaching the maximum, as the original's `>` rule


def summarize_run(config: Config, history: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``summary.json`` dict of a finished run (accuracies as fractions in [0, 1])."""
    last = history[-1]
    # Epochs that include compilation (the first of each process) are left out of the timing.
    trained = [r for r in history if not r.get("includes_compile")] or history
    summary: dict[str, Any] = {
        "config": config.to_dict(),
        "name": config.name,
        "dataset": config.dataset,
        "model": config.model,
        "head": config.head,
        "seed": config.seed,
        "epochs": len(history),
        "protocol": config.protocol,
        "precision": config.precision,
        "final_train_loss": last["train_loss"],
        "test_loss": last["test_loss"],
        "best_test_loss": min(r["test_loss"] for r in history),
        "seconds_per_epoch": float(np.mean([r["seconds"] for r in trained])),
        "steps_per_second": float(np.mean([r["steps_per_second"] for r in trained])),
        "first_epoch_seconds": history[0]["seconds"],
    }
    if config.loss == "cross_entropy":
        best = _best_index(history, "test_accuracy")
        summary.update(
            test_accuracy=last["test_accuracy"],
            best_test_accuracy=history[best]["test_accuracy"],
            best_test_epoch=best,
            final_train_accuracy=last["train_accuracy"],
        )
    else:
        summary["min_train_loss"] = min(r["train_loss"] for r in history)
    if config.protocol == "clean":
        sel = _best_index(history, _selection(config))
        summary.update(selected_epoch=sel, best_val_loss=min(r["val_loss"] for r in history))
        summary["val_selected_test_loss"] = history[sel]["test_loss"]
        if config.loss == "cross_entropy":
            summary.update(
                best_val_accuracy=history[sel]["val_accuracy"],
                val_selected_test_accuracy=history[sel]["test_accuracy"],
            )
    summary.update(extra or {})
    return summary


def step_functions(
    config: Config, train_transform: Any, eval_transform: Any, mesh: jax.sharding.Mesh, state_sharding: Any,
    unroll_chunks: bool = False,
) -> tuple[StepFunctions, StepFunctions]:
    """The jitted functions a run of ``config`` trains and evaluates with: those of whole batches, split
    over ``mesh``, and those of a last partial batch (which may not divide over the devices: no sharding
    constraint on it). Benchmarks build theirs here too, so they time the trainer's own path."""
    common = {
        "loss": config.loss,
        "train_transform": train_transform,
        "eval_transform": eval_transform,
        "state_sharding": state_sharding,
        "compiler_options": compiler_options(config.model),
    }
    full = StepFunctions(
        **common, batch_sharding=parallel.batch_sharding(mesh), flat_params=schedules.updates_one_vector(config),
        unroll_chunks=unroll_chunks,
    )
    return full, StepFunctions(**common)


class _Run:
    """One run's data on the device (or its host streams), jitted functions and initial state."""

    def __init__(self, config: Config, run_dir: str, mesh: jax.sharding.Mesh, progress: bool) -> None:
        self.config = config
        self.run_dir = run_dir
        self.mesh = mesh
        self.progress = progress
        self.batch_size = config.batch_size
        parallel.check_batch_size(self.batch_size, mesh, name="config.batch_size")
        self.n_dev = parallel.mesh_size(mesh)
        self.streamed = _is_streamed(config)
        if self.streamed:
            example_x, num_classes = self._setup_streams()
        else:
            example_x, num_classes = self._load_resident()

        self.model = _build_model(config, num_classes)
        # bf16: the inputs leave the augmentation in bf16 already (half the bytes into the first layer).
        input_dtype = jnp.bfloat16 if config.precision == "bf16" else jnp.float32
        train_transform = _build_transform(config.train_augment, input_dtype)
        eval_transform = _build_transform(config.eval_preprocess, input_dtype)
        self.tx = schedules.make_optimizer(config)
        root = jax.random.PRNGKey(config.seed)
        # On the mesh, replicated: every process draws the same global permutation from it.
        self.shuffle_key = _put(np.asarray(jax.random.fold_in(root, _SHUFFLE_KEY)), parallel.replicated(mesh))
        keys = (jax.random.fold_in(root, _INIT_KEY), jax.random.fold_in(root, _TRAIN_KEY))

        def model_input(x: jax.Array) -> jax.Array:
            return eval_transform(jax.random.PRNGKey(0), x) if eval_transform is not None else x.astype(jnp.float32)

        example = jax.eval_shape(model_input, jax.ShapeDtypeStruct(example_x.shape, example_x.dtype))
        shapes = jax.eval_shape(functools.partial(create_train_state, self.model, self.tx), example, *keys)
        self.state_sharding = parallel.state_shardings(mesh, shapes, fsdp=config.fsdp)
        # Where convolutions run slowly inside loops (XLA:CPU), each chunk is one step written out and the
        # evaluation goes batch by batch.
        self.step_by_step = convolutions_slow_in_loops(shapes.params)
        if self.step_by_step and self.chunk:
            self.chunk = 1
        self.fns, self.tail_fns = step_functions(
            config, train_transform, eval_transform, mesh, self.state_sharding, unroll_chunks=self.step_by_step
        )
        # The training chunks, the epoch's permutation and the evaluation compile in the background
        # from here on (from the shapes of the state and the data), while the data go to the device,
        # the state is made and (in train_and_evaluate) the checkpoints are looked up: wait_compiled().
        self._compiling = self._compile_ahead(
            jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, self.state_sharding)
        )
        if not self.streamed:
            self._place_resident()
        state = create_train_state(self.model, self.tx, model_input(jnp.asarray(example_x)), *keys)
        if config.init_checkpoint:
            state = _load_init_checkpoint(state, self.model, config.init_checkpoint)
        self.initial_state = _place(state, self.state_sharding)

    # -- set-up ---------------------------------------------------------------------------------
    def _load_resident(self) -> tuple[np.ndarray, int]:
        """The splits as host arrays and the epoch's step layout; ``_place_resident`` puts them on the mesh."""
        config = self.config
        train, val, test, num_classes = load_splits(config)
        self.num_train = len(train)
        self.steps, self.tail, self.chunk = epoch_layout(config, self.num_train, self.batch_size)
        self.train_x, self.train_y = train.x, train.y
        self.test = pad_eval(test, config.eval_batch_size, self.mesh)
        self.val = pad_eval(val, config.eval_batch_size, self.mesh) if val is not None else None
        return train.x[:1], num_classes

    def _place_resident(self) -> None:
        replicated = parallel.replicated(self.mesh)
        self.train_x = _put(self.train_x, replicated)
        self.train_y = _put(self.train_y, replicated)
        self.test = place_eval(self.test, self.mesh)
        self.val = place_eval(self.val, self.mesh) if self.val is not None else None

    def _setup_streams(self) -> tuple[np.ndarray, int]:
        from spinal_jax import data

        config = self.config
        info = data.info(config.dataset)
        if config.train_augment or config.eval_preprocess:
            raise ValueError(
                f"config.train_augment/eval_preprocess: {config.dataset!r} is streamed from the host, where "
                "info(name).train_preprocess/eval_preprocess already transform it; leave both empty"
            )
        self.info = info
        self.test = ("stream", info.eval_split)
        self.val = None
        if config.protocol == "clean":
            if not config.validation.startswith("split:"):
                raise ValueError(
                    f"config.validation={config.validation!r}: {config.dataset!r} is streamed from the host; "
                    "the clean protocol needs one of its own splits there (validation='split:NAME', "
                    f"splits: {list(info.splits)})"
                )
            self.val = ("stream", config.validation.split(":", 1)[1])
        self.steps, self.tail, self.chunk = None, 0, 0
        num_classes = config.num_classes if config.num_classes is not None else info.num_classes
        first = next(iter(self._stream(info.eval_split, 1, train=False)))
        return first[0], num_classes

    def _stream(self, split: str, batch_size: int, *, train: bool, epoch: int = 0) -> Any:
        from spinal_jax import data

        # One independent, resumable order per epoch: the stream's seed is derived from (seed, epoch).
        seed = int(np.random.SeedSequence([self.config.seed, epoch]).generate_state(1)[0])
        return data.stream(
            self.config.dataset,
            split,
            batch_size,
            self.info.train_preprocess if train else self.info.eval_preprocess,
            seed=seed,
            shuffle=train,
            epochs=1,
            drop_remainder=self.config.drop_remainder if train else False,
            data_dir=self.config.data_dir,
            num_workers=self.config.stream_workers,
        )

    # -- compilation ----------------------------------------------------------------------------
    def _compile_ahead(self, state: Any) -> list[Any]:
        """Start compiling the training chunks (each chunk length), the epoch's permutation and the
        evaluation (each split layout) for ``state`` (arrays or ``ShapeDtypeStruct``s with shardings)
        and the data's shapes, in two threads; the calls that follow find them in jit's cache. Called
        while the data are still on the host. Host-streamed runs compile on first use instead."""
        if self.streamed or not self.steps:
            return []
        from concurrent.futures import ThreadPoolExecutor

        replicated, sharding = parallel.replicated(self.mesh), _eval_sharding(self.mesh)
        images, labels = _struct(self.train_x, replicated), _struct(self.train_y, replicated)
        lengths = sorted({n for _, n in self._chunk_spans()})
        # The index chunks are slices of the replicated permutation (_epoch_order): replicated too.
        index_chunks = [jax.ShapeDtypeStruct((n, self.batch_size), jnp.int32, sharding=replicated) for n in lengths]
        layouts = {split.x.shape: split for split in (self.test, self.val) if split is not None}.values()

        def compile_chunks() -> None:
            for idx in index_chunks:
                self.fns.train_chunk.lower(state, images, labels, idx).compile()

        def compile_permutation_and_evaluation() -> None:
            self.fns.epoch_permutation.lower(self.shuffle_key, 0, self.num_train).compile()
            for split in layouts:
                x, y, mask = (_struct(getattr(split, k), sharding) for k in ("x", "y", "mask"))
                if self.step_by_step:  # one batch of the split
                    batch = {k: jax.ShapeDtypeStruct(v.shape[1:], v.dtype, sharding=parallel.batch_sharding(self.mesh))
                             for k, v in (("image", x), ("label", y), ("mask", mask))}
                    self.fns.eval_step.lower(state, batch).compile()
                else:
                    self.fns.evaluate_arrays.lower(state, x, y, mask).compile()

        pool = ThreadPoolExecutor(2, thread_name_prefix="compile")
        futures = [pool.submit(compile_chunks), pool.submit(compile_permutation_and_evaluation)]
        pool.shutdown(wait=False)
        return futures

    def wait_compiled(self) -> float:
        """Wait for the compilation started at set-up (re-raising its errors); returns the seconds waited."""
        start = time.perf_counter()
        for future in self._compiling:
            future.result()
        self._compiling = []
        return time.perf_counter() - start

    # -- one epoch ------------------------------------------------------------------------------
    def _chunk_spans(self) -> list[tuple[int, int]]:
        """``(first step, steps)`` of each of an epoch's chunks: ``chunk`` steps, the last maybe fewer."""
        return [(first, min(self.chunk, self.steps - first)) for first in range(0, self.steps, self.chunk)]

    def _epoch_order(self, epoch: int) -> tuple[list[jax.Array], jax.Array | None]:
        """The epoch's example indices: ``steps`` batches in chunks of ``chunk`` (the last may be
        shorter), and the tail batch's indices (None without a tail)."""
        perm = self.fns.epoch_permutation(self.shuffle_key, epoch, self.num_train)
        body = perm[: self.steps * self.batch_size].reshape(self.steps, self.batch_size)
        chunks = [body[first : first + n] for first, n in self._chunk_spans()]
        return chunks, (perm[self.steps * self.batch_size :] if self.tail else None)

    def train_epoch(self, state: TrainState, epoch: int) -> tuple[TrainState, dict[str, float], float, int]:
        """Train one epoch; returns the new state, the mean metrics, the wall seconds and the step count."""
        from tqdm.auto import tqdm

        self.wait_compiled()  # not compiled a second time by this thread

        total = None if self.streamed else self.steps + (1 if self.tail else 0)
        bar = tqdm(
            total=total,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            unit="step",
            disable=not self.progress,
            leave=False,
            dynamic_ncols=True,
        )
        start = time.perf_counter()
        sums: dict[str, float] = {}
        pending: list[tuple[int, Any]] = []
        done = 0

        def collect(n_steps: int, chunk_sums: Any) -> None:
            nonlocal done
            host = {k: float(v) for k, v in jax.device_get(chunk_sums).items()}
            if not math.isfinite(host["loss"]):
                bar.close()
                raise TrainingDiverged(
                    f"epoch {epoch + 1}: the training loss became {host['loss']} (within steps "
                    f"{done + 1}-{done + n_steps} of the epoch); the run stopped, the last good checkpoint in "
                    f"{os.path.join(self.run_dir, 'checkpoints')} is kept. Lower the learning rate "
                    "(--config.learning_rate=...) or use --config.precision=fp32."
                )
            done += n_steps
            for k, v in host.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.update(n_steps)
            bar.set_postfix({k: f"{v:.4f}" for k, v in summarize(sums).items()}, refresh=False)

        def dispatch(n_steps: int, chunk_sums: Any) -> None:
            pending.append((n_steps, chunk_sums))
            if len(pending) > 1:  # read the previous chunk while this one runs
                collect(*pending.pop(0))

        if self.streamed:
            state = self._train_streamed(state, epoch, dispatch)
        else:
            chunks, tail = self._epoch_order(epoch)
            for idx in chunks:
                state, chunk_sums = self.fns.train_chunk(state, self.train_x, self.train_y, idx)
                dispatch(idx.shape[0], chunk_sums)
            if tail is not None:
                batch = {"image": jnp.take(self.train_x, tail, axis=0), "label": jnp.take(self.train_y, tail, axis=0)}
                state, tail_sums = self.tail_fns.train_step(state, batch)
                dispatch(1, tail_sums)
        for item in pending:
            collect(*item)
        jax.block_until_ready(state)
        seconds = time.perf_counter() - start
        bar.close()
        return state, summarize(sums), seconds, done

    def _train_streamed(self, state: TrainState, epoch: int, dispatch: Callable[[int, Any], None]) -> TrainState:
        """Host batches through the same jitted ``train_step``; sums read every ``log_every_steps``."""
        rows = parallel.process_batch_slice(self.batch_size)
        replicated = parallel.replicated(self.mesh)
        acc, n_acc = None, 0
        for i, (x, y) in enumerate(self._stream(self.info.train_split, self.batch_size, train=True, epoch=epoch)):
            if self.config.steps_per_epoch is not None and i >= self.config.steps_per_epoch:
                break
            if x.shape[0] == self.batch_size:
                batch = parallel.host_batch_to_global({"image": x[rows], "label": y[rows]}, self.mesh)
                state, m = self.fns.train_step(state, batch)
            else:  # the partial last batch: every process feeds it whole, replicated
                batch = {"image": _put(x, replicated), "label": _put(y, replicated)}
                state, m = self.tail_fns.train_step(state, batch)
            acc = m if acc is None else {k: acc[k] + m[k] for k in acc}
            n_acc += 1
            if n_acc == self.config.log_every_steps:
                dispatch(n_acc, acc)
                acc, n_acc = None, 0
        if n_acc:
            dispatch(n_acc, acc)
        return state

    def evaluate(self, state: TrainState, arrays: Any) -> dict[str, float]:
        """Mean metrics over a whole split: one jitted call, or batch by batch (step by step, or a host
        stream of padded batches)."""
        self.wait_compiled()
        if not self.streamed and not self.step_by_step:
            sums = self.fns.evaluate_arrays(state, arrays.x, arrays.y, arrays.mask)
            return summarize(jax.device_get(sums))
        if self.streamed:
            _, split = arrays  # ("stream", split name)
            batches = self._streamed_eval_batches(split)
        else:
            batches = self._resident_eval_batches(arrays)
        total = None
        for batch in batches:
            m = self.fns.eval_step(state, batch)
            total = m if total is None else {k: total[k] + m[k] for k in total}
        return summarize(jax.device_get(total))

    def _resident_eval_batches(self, arrays: EvalArrays) -> Iterator[dict[str, jax.Array]]:
        sharding = parallel.batch_sharding(self.mesh)
        for i in range(arrays.x.shape[0]):
            yield jax.device_put({"image": arrays.x[i], "label": arrays.y[i], "mask": arrays.mask[i]}, sharding)

    def _streamed_eval_batches(self, split: str) -> Iterator[dict[str, jax.Array]]:
        size = -(-self.config.eval_batch_size // self.n_dev) * self.n_dev
        sharding = parallel.batch_sharding(self.mesh)  # every process streams the whole split
        for x, y in self._stream(split, size, train=False):
            n = x.shape[0]
            mask = np.zeros(size, np.float32)
            mask[:n] = 1.0
            if n < size:  # pad to the one compiled shape
                x = np.concatenate([x, np.zeros((size - n, *x.shape[1:]), x.dtype)])
                y = np.concatenate([y, np.zeros((size - n, *y.shape[1:]), y.dtype)])
            yield {"image": _put(x, sharding), "label": _put(y, sharding), "mask": _put(mask, sharding)}


def _is_streamed(config: Config) -> bool:
    if config.dataset.startswith(REGRESSION_PREFIX):
        return False
    from spinal_jax import data

    return not data.info(config.dataset).resident


def _read_state_dict_file(path: str) -> dict[str, Any]:
    """A PyTorch state dict from ``.pth``/``.pt`` (needs torch) or ``.npz`` (key → array)."""
    if path.endswith(".npz"):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    try:
        import torch
    except ImportError:
        raise ValueError(
            f"config.init_checkpoint={path!r}: reading a PyTorch file needs torch (pip install torch), "
            "or convert it to .npz (numpy.savez(path, **{k: v.numpy() for k, v in sd.items()}))"
        ) from None
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}


def _load_init_checkpoint(state: TrainState, model: Any, path: str) -> TrainState:
    """Pretrained backbone weights from a PyTorch state dict; entries the file lacks or shapes it
    does not share (the new head, e.g. ``fc`` of 1000 ImageNet classes) keep their initial values."""
    if not os.path.isfile(path):
        raise ValueError(f"config.init_checkpoint={path!r} does not exist")
    from spinal_jax.interop import torch as torch_interop

    current = torch_interop.to_state_dict(model, state.variables())
    given = _read_state_dict_file(path)
    used = {k: v for k, v in given.items() if k in current and np.shape(v) == np.shape(current[k])}
    if len(used) < len(current) // 2:
        raise ValueError(
            f"config.init_checkpoint={path!r} matches only {len(used)} of the model's {len(current)} "
            f"PyTorch keys (e.g. expected {sorted(current)[:5]}, file has {sorted(given)[:5]}): wrong model?"
        )
    kept = sorted(set(current) - set(used))
    log.info("init_checkpoint %s: %d tensors loaded; %d kept from init (%s)", path, len(used), len(kept),
             ", ".join(kept[:8]) + (" ..." if len(kept) > 8 else ""))
    variables = torch_interop.load_state_dict(model, {**current, **used})
    params = variables["params"]
    return state.replace(
        params=params,
        batch_stats=variables.get("batch_stats", state.batch_stats),
        opt_state=state.tx.init(params),
    )


def _copy_weights(state: TrainState) -> dict[str, Any]:
    # A copy, not a view: the state's buffers are donated to the next train call.
    return jax.tree.map(jnp.copy, {"params": state.params, "batch_stats": state.batch_stats})


def _checkpoint_tree(state: TrainState, kept: dict[str, Any] | None) -> dict[str, Any]:
    return {"state": state} if kept is None else {"state": state, "kept": kept}


class _RunClock:
    """A run's checkpoint cadence and the timing fields of its summary.

    Made when set-up ends (``entered``: ``time.perf_counter()`` when it began). ``checkpoint`` saves
    after the final epoch, or when the last save is at least ``min_checkpoint_interval`` seconds old;
    ``timing()`` gives ``setup_seconds``, ``compile_seconds`` (the wait for the compilation that
    set-up started, ``_Run.wait_compiled``; 0 for ``multi``'s grouped runs), ``checkpoint_seconds``
    (the saves' blocking part) and ``wall_seconds``. Shared by ``train_and_evaluate`` and ``multi``.
    """

    def __init__(self, entered: float, min_checkpoint_interval: float) -> None:
        self.entered = entered
        self.min_checkpoint_interval = min_checkpoint_interval
        self.setup_seconds = time.perf_counter() - entered
        self.compile_seconds = 0.0
        self.checkpoint_seconds = 0.0
        self.last_save = time.monotonic()

    def checkpoint(self, final: bool, save: Callable[[], Any]) -> None:
        now = time.monotonic()
        if final or now - self.last_save >= self.min_checkpoint_interval:
            save()
            self.last_save = now
        self.checkpoint_seconds += time.monotonic() - now

    def timing(self) -> dict[str, float]:
        return {
            "setup_seconds": self.setup_seconds,
            "compile_seconds": self.compile_seconds,
            "checkpoint_seconds": self.checkpoint_seconds,
            "wall_seconds": time.perf_counter() - self.entered,
        }


def train_and_evaluate(
    config: Config,
    run_dir: str | os.PathLike,
    *,
    progress: bool | None = None,
    epoch_callback: EpochCallback | None = None,
    mesh: jax.sharding.Mesh | None = None,
    async_checkpoints: bool = True,
    min_checkpoint_interval: float = 0.0,
) -> dict[str, Any]:
    """Train ``config`` in ``run_dir`` (resuming from its checkpoints) and return the summary dict.

    A finished run (``summary.json`` present) is not re-run: its summary is returned. A run directory
    holding a different config raises ``RunConfigMismatch``. A NaN/inf loss raises ``TrainingDiverged``
    (the last good checkpoint stays). ``epoch_callback(epoch, record)`` is called after each epoch's
    checkpoint is saved. ``mesh`` defaults to all devices with a ``data`` axis.
    ``min_checkpoint_interval`` (seconds): skip an epoch's checkpoint when the last one is more recent
    than that (the last epoch is always saved; a resume from an older checkpoint replays the same
    numbers). 0 saves every epoch; the demo uses a few seconds, as its epochs take milliseconds.
    """
    entered = time.perf_counter()
    run_dir = os.path.abspath(os.fspath(run_dir))
    summary_path = os.path.join(run_dir, metrics_io.SUMMARY_FILE)
    config_path = os.path.join(run_dir, metrics_io.CONFIG_FILE)
    if os.path.isfile(config_path):
        saved = metrics_io.read_json(config_path)
        if config_json(Config.from_dict(saved)) != config_json(config):
            raise RunConfigMismatch(
                f"{run_dir} holds a run of a different config ({config_path}); use another --workdir "
                "or delete that directory"
            )
    if os.path.isfile(summary_path):
        log.info("%s is finished (summary.json exists); not re-running", run_dir)
        return metrics_io.read_json(summary_path)
    config.validate()
    if progress is None:
        progress = sys.stderr.isatty()
    mesh = parallel.make_mesh() if mesh is None else mesh

    run = _Run(config, run_dir, mesh, progress)  # loads data, builds the model: errors before any file
    if _is_main():
        metrics_io.write_json(config_path, config.to_dict())
    controller = schedules.LRController(config)
    checkpointer = Checkpointer(
        os.path.join(run_dir, "checkpoints"), keep=config.checkpoint_keep, async_save=async_checkpoints
    )
    tb = metrics_io.TensorBoardWriter(os.path.join(run_dir, "tensorboard"), enabled=config.tensorboard and _is_main())
    keep_best = config.stage_start_from_best and len(config.stage_plan()) > 1
    try:
        state = run.initial_state
        kept = _copy_weights(state) if keep_best else None  # best weights of the current stage
        history: list[dict[str, Any]] = []
        start_epoch = 0
        restored = checkpointer.restore_latest(_checkpoint_tree(state, kept))
        if restored is not None:
            tree, host = restored
            state, kept = tree["state"], tree.get("kept")
            start_epoch = host["epoch"]
            history = list(host["history"])[:start_epoch]
            controller.load_state_dict(host["controller"])
            log.info("resuming %s after epoch %d", run_dir, start_epoch)
        state = _place(state, run.state_sharding)
        selection = _selection(config)
        clock = _RunClock(entered, min_checkpoint_interval)
        clock.compile_seconds = run.wait_compiled()
        if _is_main():
            metrics_io.preload_plotting()  # while the first epoch runs, not after the last
        for epoch in range(start_epoch, config.epochs):
            lr = schedules.get_learning_rate(state.opt_state)
            state, train_metrics, seconds, steps = run.train_epoch(state, epoch)
            record: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": train_metrics["loss"],
                "train_accuracy": train_metrics.get("accuracy"),
            }
            eval_start = time.perf_counter()
            test_metrics = run.evaluate(state, run.test)
            record.update(test_loss=test_metrics["loss"], test_accuracy=test_metrics.get("accuracy"))
            if run.val is not None:
                val_metrics = run.evaluate(state, run.val)
                record.update(val_loss=val_metrics["loss"], val_accuracy=val_metrics.get("accuracy"))
            record.update(
                learning_rate=lr,
                seconds=seconds,
                steps_per_second=steps / seconds,
                includes_compile=epoch == start_epoch,
                eval_seconds=time.perf_counter() - eval_start,
            )
            if not math.isfinite(record["test_loss"]):
                raise TrainingDiverged(
                    f"epoch {epoch + 1}: the test loss is {record['test_loss']}; the run stopped, the last good "
                    f"checkpoint in {os.path.join(run_dir, 'checkpoints')} is kept"
                )
            history.append(record)
            decision = controller.after_epoch(epoch, record[selection])
            if keep_best:
                if decision.restore_epoch is not None and decision.restore_epoch != epoch:
                    state = state.replace(params=kept["params"], batch_stats=kept["batch_stats"])
                    kept = _copy_weights(state)
                elif controller.stage_best_epoch == epoch:
                    kept = _copy_weights(state)
            if decision.reset_optimizer:
                state = reset_optimizer(state)
            state = state.replace(opt_state=schedules.set_learning_rate(state.opt_state, decision.learning_rate))
            state = _place(state, run.state_sharding)  # new leaves on the mesh: no recompile
            host = {"epoch": epoch + 1, "controller": controller.state_dict(), "history": history}
            save = functools.partial(checkpointer.save, epoch + 1, _checkpoint_tree(state, kept), host)
            clock.checkpoint(epoch + 1 == config.epochs, save)
            if _is_main():
                metrics_io.write_jsonl(os.path.join(run_dir, metrics_io.METRICS_FILE), history)
                tb.write(epoch + 1, {k: v for k, v in record.items() if k != "epoch"})
            _log_epoch(config, record)
            if epoch_callback is not None:
                epoch_callback(epoch, record)
        checkpointer.wait()
        summary = summarize_run(config, history, clock.timing())
        if _is_main():
            metrics_io.write_jsonl(os.path.join(run_dir, metrics_io.METRICS_FILE), history)
            try:
                metrics_io.plot_curves(
                    history, os.path.join(run_dir, metrics_io.CURVES_FILE), f"{config.name} ({config.head} head)"
                )
            except ImportError:
                log.warning("matplotlib is not installed: no curves.png")
            metrics_io.write_json(summary_path, summary)  # last: its presence marks the run finished
        return summary
    finally:
        tb.close()
        checkpointer.close()


def _log_epoch(config: Config, record: dict[str, Any]) -> None:
    parts = [f"epoch {record['epoch'] + 1}/{config.epochs}", f"train_loss {record['train_loss']:.4f}"]
    for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
        if record.get(key) is not None:
            parts.append(f"{key} {100 * record[key]:.2f}%")
    if config.loss == "mse":
        parts.append(f"test_loss {record['test_loss']:.6f}")
    parts.append(f"lr {record['learning_rate']:.3g}")
    parts.append(f"{record['seconds']:.2f}s ({record['steps_per_second']:.0f} steps/s)")
    log.info("%s [%s/%s]: %s", config.name, config.head, config.protocol, ", ".join(parts))


# ---------------------------------------------------------------------------------------------
# Grids and the demo
# ---------------------------------------------------------------------------------------------

DEMO_CONFIG = "digits_mlp"
DEMO_CHECKPOINT_INTERVAL = 5.0  # seconds: the demo's epochs take milliseconds, a checkpoint ~0.1 s


def run_grid(
    configs: list[Config],
    workdir: str | os.PathLike,
    *,
    progress: bool | None = None,
    min_checkpoint_interval: float = 0.0,
) -> list[dict[str, Any]]:
    """Run ``configs`` one after another in the grid layout; finished runs are skipped, others resumed."""
    summaries = []
    for config in configs:
        run_dir = run_dir_for(workdir, config)
        log.info("run %s", run_dir)
        summaries.append(
            train_and_evaluate(config, run_dir, progress=progress, min_checkpoint_interval=min_checkpoint_interval)
        )
    return summaries


DEMO_WORKDIR = os.path.join("runs", "demo")


def run_demo(
    workdir: str | os.PathLike = DEMO_WORKDIR,
    *,
    progress: bool | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The embedded demo: ``digits_mlp`` with both heads (offline, seconds on a CPU); returns the summaries."""
    configs = grid_configs([DEMO_CONFIG], seeds=1, overrides=overrides)
    return run_grid(configs, workdir, progress=progress, min_checkpoint_interval=DEMO_CHECKPOINT_INTERVAL)
