"""Pure train and eval steps, and their jitted epoch-level forms (``lax.scan`` over device-resident data).

Batches are dicts: ``image`` (uint8 NHWC images, or float features), ``label`` (int class ids, or float
regression targets) and, for evaluation, ``mask`` (1 for real examples, 0 for padding). Metrics are
*sums* (``loss``, ``correct``, ``count``) so that chunks of steps add up exactly; ``summarize`` turns
them into means.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from spinal_jax.train.state import TrainState

log = logging.getLogger(__name__)

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
# (key, images) -> float32 images: spinal_jax.data.augment.build(spec) makes these.
Transform = Callable[[jax.Array, jax.Array], jax.Array]

LOSSES = ("cross_entropy", "mse")
_AUGMENT_STREAM = 1  # fold_in tags that keep the per-step keys of different uses apart
_DROPOUT_STREAM = 2
_RAVELED = "raveled"

#: ``train_chunk(flat_params=True)`` puts the 4-D parameters (convolution kernels, HWIO in the tree)
#: into the raveled vector output channel first (OHWI), the filter layout that cuDNN's NHWC kernels
#: read and write: the step then slices its kernels out of the vector and writes their gradients into
#: it without a transpose each way (PERF_NOTES.md, change 34). A permutation of the vector, undone at
#: the chunk's end, so the numbers are the same either way.
KERNELS_OUTPUT_MAJOR = True

#: ``train_chunk`` gathers and augments the batches of all its steps before the loop, in one set of
#: kernels over ``steps x batch`` images instead of one set a step (the batches depend only on the
#: indices and the keys, not on the state), when they take at most this many bytes on the device;
#: larger chunks (big images) gather and augment each batch inside the loop. The same numbers either
#: way (bit for bit in tests/test_train.py, and on an H100 in experiments/results/prepared_inputs_gpu_check.md).
#: The augmentation's temporaries grow with the chunk: with it, the bf16 VGG-5 benchmark's peak memory
#: rose from 293 to 430 MiB on an H100 (PERF_NOTES.md, change 36).
PREPARED_INPUTS_MAX_BYTES = 64 << 20

#: XLA options of the training and evaluation functions on GPUs, for the models of
#: ``GPU_COMPILER_OPTIONS_MODELS``: cuDNN's fused convolution graphs
#: (``xla_gpu_experimental_enable_conv_fusion``: each convolution and its bias through cuDNN's graph API,
#: with its own choice of kernels) took the VGG-5 epoch from 0.540 to 0.509 s (bf16) and 0.851 to 0.805 s
#: (fp32) on an H100 (PERF_NOTES.md, change 38). An option that ``XLA_FLAGS`` also names is left to
#: ``XLA_FLAGS`` (``--xla_gpu_experimental_enable_conv_fusion=false`` turns it off). A function that XLA
#: fails to compile with them is compiled without them, with a warning (``JitWithFallback``).
GPU_COMPILER_OPTIONS: dict[str, bool | int | str] = {"xla_gpu_experimental_enable_conv_fusion": True}
#: The models (``Config.model``) that compile and train with ``GPU_COMPILER_OPTIONS``, measured on an H100;
#: the option is XLA's experimental one, and the training step of the small ``mnist_cnn`` failed to
#: compile with it (cuDNN's autotuning: ``CUDA_ERROR_STREAM_CAPTURE_INVALIDATED``), so it is not a default
#: for models it was not tried on.
GPU_COMPILER_OPTIONS_MODELS: tuple[str, ...] = ("vgg5", "cifar_resnet18")


def compiler_options(model: str) -> dict[str, bool | int | str]:
    """``jax.jit``'s ``compiler_options`` for training ``model`` on the default backend:
    ``GPU_COMPILER_OPTIONS`` (less those ``XLA_FLAGS`` sets) on GPUs for the models of
    ``GPU_COMPILER_OPTIONS_MODELS``, none otherwise."""
    if jax.default_backend() != "gpu" or model not in GPU_COMPILER_OPTIONS_MODELS:
        return {}
    flags = os.environ.get("XLA_FLAGS", "")
    return {name: value for name, value in GPU_COMPILER_OPTIONS.items() if f"--{name}=" not in flags}


def _output_major(tree: Any) -> Any:
    return jax.tree.map(lambda a: jnp.transpose(a, (3, 0, 1, 2)) if a.ndim == 4 else a, tree)


def _input_major(tree: Any) -> Any:
    return jax.tree.map(lambda a: jnp.transpose(a, (1, 2, 3, 0)) if a.ndim == 4 else a, tree)


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is not one of {LOSSES}")


def per_example_loss(outputs: jax.Array, targets: jax.Array, loss: str) -> jax.Array:
    """Softmax cross-entropy on logits with integer labels, or squared error (mean over outputs)."""
    outputs = outputs.astype(jnp.float32)
    if loss == "cross_entropy":
        return optax.softmax_cross_entropy_with_integer_labels(outputs, targets.astype(jnp.int32))
    targets = targets.astype(jnp.float32).reshape(outputs.shape)
    return jnp.mean(jnp.square(outputs - targets).reshape(outputs.shape[0], -1), axis=-1)


def _metric_sums(outputs: jax.Array, targets: jax.Array, losses: jax.Array, loss: str, weights: jax.Array) -> Metrics:
    metrics = {"loss": jnp.sum(losses * weights), "count": jnp.sum(weights)}
    if loss == "cross_entropy":
        hits = (jnp.argmax(outputs, axis=-1) == targets.astype(jnp.int32)).astype(jnp.float32)
        metrics["correct"] = jnp.sum(hits * weights)
    return metrics


def _prepare_inputs(images: jax.Array, key: jax.Array, transform: Transform | None) -> jax.Array:
    if transform is not None:
        return transform(key, images)
    if jnp.issubdtype(images.dtype, jnp.integer):
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def _prepared(key: jax.Array, inputs: jax.Array) -> jax.Array:
    """The transform of batches that ``train_chunk`` prepared before its loop: none."""
    return inputs


def _behind_steps(sharding: Any) -> Any:
    """``sharding`` of a batch, for a stack of batches: one more leading (steps) axis, not split."""
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(None, *sharding.spec))


def step_keys(rng: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The (augmentation, dropout) keys of step ``step``: ``fold_in(rng, step)``, then one tag each."""
    step_key = jax.random.fold_in(rng, step)
    return jax.random.fold_in(step_key, _AUGMENT_STREAM), jax.random.fold_in(step_key, _DROPOUT_STREAM)


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    loss: str = "cross_entropy",
    transform: Transform | None = None,
    batch_sharding: Any = None,
    keys: tuple[jax.Array, jax.Array] | None = None,
    unravel: Callable[[Any], Any] | None = None,
) -> tuple[TrainState, Metrics]:
    """One optimizer step: augment, forward in train mode, backward, update.

    The step's keys are ``step_keys(state.rng, state.step)`` (``keys``, when given, must be those), so
    the numbers depend only on the seed and the step count. With ``unravel``, ``state.params`` is the
    parameters raveled (``train_chunk``'s form) and ``unravel`` maps them back to the model's tree.
    """
    augment_key, dropout_key = step_keys(state.rng, state.step) if keys is None else keys
    images, targets = batch["image"], batch["label"]
    if batch_sharding is not None:
        images = jax.lax.with_sharding_constraint(images, batch_sharding)
        targets = jax.lax.with_sharding_constraint(targets, batch_sharding)
    inputs = _prepare_inputs(images, augment_key, transform)

    def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, jax.Array, Any]]:
        tree = params if unravel is None else unravel(params)
        outputs, updates = state.apply_fn(
            state.variables(tree), inputs, train=True, rngs={"dropout": dropout_key}, mutable=["batch_stats"]
        )
        outputs = outputs.astype(jnp.float32)
        losses = per_example_loss(outputs, targets, loss)
        return jnp.mean(losses), (outputs, losses, updates)

    (_, (outputs, losses, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))
    weights = jnp.ones(losses.shape, jnp.float32)
    return new_state, _metric_sums(outputs, targets, losses, loss, weights)


def eval_step(
    state: TrainState,
    batch: Batch,
    *,
    loss: str = "cross_entropy",
    transform: Transform | None = None,
) -> Metrics:
    """Metric sums of the model in eval mode on ``batch`` (entries with ``mask`` 0 ignored)."""
    inputs = _prepare_inputs(batch["image"], jax.random.PRNGKey(0), transform)
    outputs = state.apply_fn(state.variables(), inputs, train=False).astype(jnp.float32)
    losses = per_example_loss(outputs, batch["label"], loss)
    weights = batch.get("mask")
    weights = jnp.ones(losses.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
    return _metric_sums(outputs, batch["label"], losses, loss, weights)


def _zeros_like_metrics(loss: str) -> Metrics:
    keys = ("loss", "count", "correct") if loss == "cross_entropy" else ("loss", "count")
    return {k: jnp.zeros((), jnp.float32) for k in keys}


def _add(a: Metrics, b: Metrics) -> Metrics:
    return {k: a[k] + b[k] for k in a}


def convolutions_slow_in_loops(params: Any) -> bool:
    """Whether the steps of a model with these parameters (arrays or shapes) should not run inside a loop:
    on XLA:CPU a convolution inside a while loop runs many times slower than outside one (jax-ml/jax#12868;
    the VGG-5's training step 33-45x, PERF_NOTES.md round 21). Convolutions are told by 4-D kernels."""
    return jax.default_backend() == "cpu" and any(len(a.shape) == 4 for a in jax.tree.leaves(params))


def train_chunk(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    indices: jax.Array,
    *,
    loss: str = "cross_entropy",
    transform: Transform | None = None,
    batch_sharding: Any = None,
    flat_params: bool = False,
    unroll: bool = False,
) -> tuple[TrainState, Metrics]:
    """``len(indices)`` train steps in one ``lax.scan`` (written out step by step, without a loop, with
    ``unroll``: see ``convolutions_slow_in_loops``); batch ``i`` is ``images[indices[i]]``.

    ``images``/``labels`` are the whole split on the device; only indices travel per chunk. The steps'
    keys are drawn for the whole chunk before the loop, and so are its batches, gathered and augmented
    (``PREPARED_INPUTS_MAX_BYTES``). ``flat_params``: the loop carries the parameters
    raveled into one vector, so that the optimizer updates them all in one fused pass; it needs an
    optimizer that works on the raveled vector (``optax.flatten(...)``, as ``make_optimizer`` builds
    it unless ``config.fsdp``); convolution kernels lie in that vector output channel first
    (``KERNELS_OUTPUT_MAJOR``). The numbers are the same either way.
    """
    steps = state.step + jnp.arange(indices.shape[0], dtype=state.step.dtype)
    keys = jax.vmap(step_keys, in_axes=(None, 0))(state.rng, steps)
    unravel = None
    if flat_params:
        reorder = KERNELS_OUTPUT_MAJOR and any(a.ndim == 4 for a in jax.tree.leaves(state.params))
        pack, unpack = (_output_major, _input_major) if reorder else (lambda t: t, lambda t: t)
        vector, unravel_vector = ravel_pytree(pack(state.params))
        unravel_tree = ravel_pytree(state.params)[1]
        raveled = {_RAVELED: vector}  # a dict, as flax's apply_gradients expects
        if jax.tree.structure(jax.eval_shape(state.tx.init, raveled)) != jax.tree.structure(state.opt_state):
            raise ValueError(
                "flat_params=True needs an optimizer that runs on the raveled parameter vector, e.g. "
                "optax.flatten(tx) (make_optimizer builds one unless config.fsdp); this optimizer's state "
                "is laid out like the parameter tree"
            )

        def per_parameter(fn: Callable[[jax.Array], jax.Array], opt_state: Any) -> Any:
            # the optimizer's per-parameter vectors (its moments) follow the parameters' order
            if not reorder:
                return opt_state
            like_vector = lambda a: a.shape == vector.shape and a.dtype == vector.dtype  # noqa: E731
            return jax.tree.map(lambda a: fn(a) if like_vector(a) else a, opt_state)

        def to_vector_order(v: jax.Array) -> jax.Array:
            return ravel_pytree(pack(unravel_tree(v)))[0]

        def to_tree_order(v: jax.Array) -> jax.Array:
            return ravel_pytree(unpack(unravel_vector(v)))[0]

        def unravel(params: dict[str, jax.Array]) -> Any:
            return unpack(unravel_vector(params[_RAVELED]))

        state = state.replace(params=raveled, opt_state=per_parameter(to_vector_order, state.opt_state))

    def gather(batch_indices: jax.Array) -> Batch:
        return {"image": jnp.take(images, batch_indices, axis=0), "label": jnp.take(labels, batch_indices, axis=0)}

    prepare_all = jax.vmap(functools.partial(_prepare_inputs, transform=transform))
    prepared = jax.eval_shape(prepare_all, jax.eval_shape(gather, indices)["image"], keys[0])
    prepare_ahead = prepared.size * prepared.dtype.itemsize <= PREPARED_INPUTS_MAX_BYTES
    if prepare_ahead:
        batches = gather(indices)
        inputs = prepare_all(batches["image"], keys[0])
        if batch_sharding is not None:  # (steps, batch, ...): the batch axis is the second
            inputs = jax.lax.with_sharding_constraint(inputs, _behind_steps(batch_sharding))
        xs = ({**batches, "image": inputs}, keys)
    else:
        xs = (indices, keys)

    def body(carry: tuple[TrainState, Metrics], xs: tuple[Any, Any]) -> tuple[tuple[TrainState, Metrics], None]:
        state, sums = carry
        batch, step_keys_ = xs
        state, metrics = train_step(
            state,
            batch if prepare_ahead else gather(batch),
            loss=loss,
            transform=_prepared if prepare_ahead else transform,
            batch_sharding=batch_sharding,
            keys=step_keys_,
            unravel=unravel,
        )
        return (state, _add(sums, metrics)), None

    carry = (state, _zeros_like_metrics(loss))
    if unroll:  # a Python loop: even a fully unrolled scan leaves XLA a loop of one trip at first
        for i in range(indices.shape[0]):
            carry, _ = body(carry, jax.tree.map(lambda a, i=i: a[i], xs))
    else:
        carry, _ = jax.lax.scan(body, carry, xs)
    state, sums = carry
    if unravel is not None:
        state = state.replace(params=unravel(state.params), opt_state=per_parameter(to_tree_order, state.opt_state))
    return state, sums


def evaluate_arrays(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    *,
    loss: str = "cross_entropy",
    transform: Transform | None = None,
) -> Metrics:
    """Metric sums over a whole split laid out as ``(num_batches, batch, ...)`` with a padding ``mask``."""

    def body(sums: Metrics, batch: Batch) -> tuple[Metrics, None]:
        return _add(sums, eval_step(state, batch, loss=loss, transform=transform)), None

    sums, _ = jax.lax.scan(body, _zeros_like_metrics(loss), {"image": images, "label": labels, "mask": mask})
    return sums


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, num_examples: int) -> jax.Array:
    """The epoch's order of the training examples: a permutation drawn from ``fold_in(key, epoch)``."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples).astype(jnp.int32)


def summarize(sums: dict[str, Any]) -> dict[str, float]:
    """Means from metric sums: ``loss`` and, for classification, ``accuracy`` (a fraction)."""
    count = float(sums["count"])
    out = {"loss": float(sums["loss"]) / max(count, 1.0)}
    if "correct" in sums:
        out["accuracy"] = float(sums["correct"]) / max(count, 1.0)
    return out


class JitWithFallback:
    """``jax.jit(fn, compiler_options=options, **jit_kw)`` that becomes ``jax.jit(fn, **jit_kw)`` for good,
    with a warning, the first time XLA fails to compile it with ``options``. The library's options are
    XLA's experimental ones, measured on the models and GPU that ``GPU_COMPILER_OPTIONS`` names; another
    GPU, cuDNN or model may not compile with them, and training should go on without them then.
    Errors of running a compiled function are raised as they are. Called, and ``lower(...)`` (whose
    ``compile()`` falls back the same way), as ``jax.jit``'s function."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, bool | int | str], **jit_kw: Any) -> None:
        self.options = dict(options)
        self.name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", repr(fn))
        self._with_options = jax.jit(fn, compiler_options=self.options, **jit_kw)
        self._plain = jax.jit(fn, **jit_kw)
        self.fell_back = False

    def _fall_back(self, err: Exception) -> None:
        message = str(err).strip()
        first_line = message.splitlines()[0][:300] if message else type(err).__name__
        log.warning(
            "XLA failed to compile %s with the compiler options %s (%s); compiling it without them from now "
            "on (they made it faster where they were measured). To leave them out from the start, name them "
            "in XLA_FLAGS, e.g. XLA_FLAGS='--%s=false'",
            self.name,
            self.options,
            first_line,
            next(iter(self.options)),
        )
        self.fell_back = True

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        if self.fell_back:
            return self._plain.lower(*args, **kwargs)
        return _LoweredWithFallback(self, args, kwargs, self._with_options.lower(*args, **kwargs))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.fell_back:
            try:
                return self._with_options(*args, **kwargs)
            except jax.errors.JaxRuntimeError:
                try:  # compile failures are not cached: this compiles again and fails again if that was it
                    self._with_options.lower(*args, **kwargs).compile()
                except jax.errors.JaxRuntimeError as err:
                    self._fall_back(err)
                else:
                    raise  # it compiles: the error is the run's, not the options'
        return self._plain(*args, **kwargs)


class _LoweredWithFallback:
    """``JitWithFallback.lower``'s result: ``jax.stages.Lowered`` whose ``compile`` falls back."""

    def __init__(self, owner: JitWithFallback, args: tuple[Any, ...], kwargs: dict[str, Any], lowered: Any) -> None:
        self._owner, self._args, self._kwargs, self._lowered = owner, args, kwargs, lowered

    def compile(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._lowered.compile(*args, **kwargs)
        except jax.errors.JaxRuntimeError as err:
            self._owner._fall_back(err)
            return self._owner._plain.lower(*self._args, **self._kwargs).compile(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lowered, name)


def jit_with_options(
    fn: Callable[..., Any], compiler_options: dict[str, bool | int | str] | None = None, **jit_kw: Any
) -> Any:
    """``jax.jit(fn, **jit_kw)``, with ``compiler_options`` (when given) through ``JitWithFallback``."""
    if not compiler_options:
        return jax.jit(fn, **jit_kw)
    return JitWithFallback(fn, compiler_options, **jit_kw)


class StepFunctions:
    """The jitted functions of one run: built once, compiled on first use, reused every epoch.

    ``train_chunk`` and ``train_step`` donate the state; ``flat_params`` is ``train_chunk``'s, and so is
    ``unroll_chunks`` (its ``unroll``). ``loss`` is
    ``"cross_entropy"`` or ``"mse"``; ``train_transform``/``eval_transform`` map ``(key, uint8 images)`` to
    float32 inputs; ``compiler_options`` go to XLA with every function but the permutation, each of
    which compiles without them if XLA cannot compile it with them (``jit_with_options``;
    ``compiler_options(model)`` gives the library's). ``loop.step_functions`` builds a run's.
    """

    def __init__(
        self,
        *,
        loss: str = "cross_entropy",
        train_transform: Transform | None = None,
        eval_transform: Transform | None = None,
        batch_sharding: Any = None,
        state_sharding: Any = None,
        flat_params: bool = False,
        unroll_chunks: bool = False,
        compiler_options: dict[str, bool | int | str] | None = None,
    ) -> None:
        _check_loss(loss)
        self.loss = loss
        train_kw = {"loss": loss, "transform": train_transform, "batch_sharding": batch_sharding}
        chunk_kw = {**train_kw, "flat_params": flat_params, "unroll": unroll_chunks}
        eval_kw = {"loss": loss, "transform": eval_transform}
        out_state = {} if state_sharding is None else {"out_shardings": (state_sharding, None)}
        options = {"compiler_options": compiler_options}
        donated = {"donate_argnums": (0,), **out_state, **options}
        self.train_step = jit_with_options(functools.partial(train_step, **train_kw), **donated)
        self.train_chunk = jit_with_options(functools.partial(train_chunk, **chunk_kw), **donated)
        self.eval_step = jit_with_options(functools.partial(eval_step, **eval_kw), **options)
        self.evaluate_arrays = jit_with_options(functools.partial(evaluate_arrays, **eval_kw), **options)
        self.epoch_permutation = jax.jit(epoch_permutation, static_argnums=(2,))
