"""A/B timing of the VGG-5 training step through ``spinal-jax train``'s own epoch loop.

Builds the ``fashion_mnist_vgg5`` run (random uint8 data of Fashion-MNIST's shape, augmentation on
the device, batch 100, 600 steps an epoch) with ``spinal_jax.train.loop``'s run object and times
``train_epoch`` (one warm-up epoch with the compile, then ``--epochs`` timed ones) for each variant of
the model's building blocks:

- ``before``: ``flax.linen.max_pool`` (reduce_window; its gradient is a select_and_scatter), the
  two-pass BatchNorm statistics (autodiff gradient), the spinal chain as a while loop, the first
  convolution by cuDNN, Adam per parameter tensor and the parameter tree carried through the chunk's
  loop, as the library had them before the tuning log in PERF_NOTES.md;
- ``pool``: ``before`` with the library's max pool;
- ``bn``: ``pool`` with one-pass BatchNorm statistics (two sums, autodiff gradient);
- ``unroll``: ``bn`` with the spinal chain written out layer by layer (``layers.SCAN_UNROLL_MAX = 16``);
- ``lib``: the library as it is.

Modifiers joined with ``+`` (``lib+treeadam``) put back one old piece: ``treeadam`` (Adam per
parameter tensor, not ``optax.flatten``, with the tree carry below), ``treecarry`` (``train_chunk``
carrying the parameter tree and drawing each step's keys inside the loop, not the raveled carry with
the keys drawn first), ``autodiffbn`` (one-pass statistics as two sums and autodiff's gradient, not
``batch_norm_train``'s), ``cudnnconv`` (every convolution by cuDNN: neither the 1-channel first one
nor those on 3x3 maps as im2col + matmul), ``xlaconv`` (the convolutions on 3x3 maps by cuDNN,
``common.MATMUL_CONV_MAX_PIXELS`` = 0), ``inputpool`` (the block's last ReLU separate from its 2x2 max
pool, whose backward re-reads the pool's input instead of the forward's argmax), ``xlasums``
(BatchNorm's column sums by XLA's reduction everywhere, not ``column_sums``' Pallas kernel),
``separaterelu`` (the ReLU after a BatchNorm as its own op, not inside BatchNorm's custom gradient);
``xlachain`` (the spinal head's hidden chain as XLA ops, not ``fused_chain``'s Pallas kernels);
``pallas64`` tries the kernel also on inputs of 64 rows and more (the heads' BatchNorm1d),
``chaincolsN`` gives each of ``fused_chain``'s programs N columns (32 by default; 16 or 64),
``chainwarpsN`` runs them with N warps (4 by default); ``kernelrunningstats`` updates the spinal
head's running statistics inside the chain's forward kernels (``fused_chain.UPDATE_RUNNING_STATS``),
``nokernelrunningstats`` in XLA after the chain; ``onedropoutdraw`` draws the spinal head's two
dropout masks at once (``layers.ONE_DROPOUT_DRAW``); ``loopedconvs`` keeps the training chunks as
loops where convolutions run slowly in them (XLA:CPU; ``steps.convolutions_slow_in_loops``); ``biasgrad`` computes the gradients of the
convolution and hidden-layer biases that train-mode BatchNorm cancels
(``normalization.SKIP_CANCELLED_BIAS_GRADIENT`` off); ``stencilconv`` computes the 1-channel first
convolution's forward as nine shifted multiply-adds in one elementwise fusion instead of the patch matmul; ``ohwi`` stores the
kernels of the convolutions cuDNN computes as (Cout, k, k, Cin) instead of HWIO (as parameters);
``hwioflat`` keeps the kernels HWIO in the raveled vector the chunk carries
(``steps.KERNELS_OUTPUT_MAJOR`` off); ``stepaugment`` gathers and augments each batch inside the chunk's
loop instead of all the chunk's batches before it (``steps.PREPARED_INPUTS_MAX_BYTES`` = 0); ``imagewgrad`` computes the 1-channel first convolution's
kernel gradient as a batched product per image, summed, instead of one GEMM over all the batch's pixels;
``nodropout`` makes every ``nn.Dropout`` the identity (what dropout and its random bits cost; not a
training setting); ``unrollN`` traces every ``lax.scan`` with ``unroll=N`` (``unroll2``: two training steps a loop
iteration); ``matmulrowsN`` pads the im2col convolutions' patch rows to a multiple of N (``common.MATMUL_ROWS_MULTIPLE``,
32 by default: one padded matrix for both matmuls; ``matmulrows1``: no padding); ``noconvfusion`` compiles without ``steps.GPU_COMPILER_OPTIONS`` (no cuDNN fused
convolution graphs). ``matmul49`` tries a new piece instead: the convolutions on
7x7 maps as im2col + matmul too.

XLA flags are per process: run the script once per flag set (``XLA_FLAGS=... python ...``), with
``--tag`` naming the set. Results are appended as JSON lines to ``--out``.

``--profile`` traces one more epoch of the named runs and stores their kernels a step; with ``--dump-dir`` the
training chunk's post-optimisation HLO is dumped there and each traced kernel is charged to the JAX name scope it
came from (``kernel_profile.scope_totals``: the row's ``kernels_by_scope``, also printed).

    PYTHONPATH=. python experiments/bench_vgg5_step.py --variants before,pool,lib --epochs 2
    PYTHONPATH=. python experiments/bench_vgg5_step.py --variants lib --precisions bf16 --heads spinal \
        --profile lib/bf16/spinal --dump-dir /tmp/hlo
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import glob
import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Iterator

import check_train_epoch  # noqa: F401  (registers spinal_jax.configs in a bare checkout)
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from kernel_profile import hlo_scopes, kernel_table, scope_totals

from spinal_jax import column_sums, fused_chain, layers, normalization, parallel
from spinal_jax.models import common, mnist
from spinal_jax.train import apply_overrides, load_config, loop, schedules, steps


def _reduce_window_max_pool(x: jax.Array, kernel: int, stride: int | None = None, padding: int = 0,
                            relu: bool = False) -> jax.Array:
    stride = kernel if stride is None else stride
    pad = ((padding, padding), (padding, padding))
    return nn.max_pool(nn.relu(x) if relu else x, (kernel, kernel), strides=(stride, stride), padding=pad)


def _two_pass_statistics(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x32 = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x32, axis=axes)
    return mean, jnp.mean(jnp.square(x32 - mean), axis=axes)


def _one_pass_statistics(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x32 = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    shift = jax.lax.stop_gradient(x32.reshape(-1, x.shape[-1])[0])
    d = x32 - shift
    mean_d = jnp.mean(d, axis=axes)
    return mean_d + shift, jnp.maximum(jnp.mean(jnp.square(d), axis=axes) - jnp.square(mean_d), 0.0)


def _autodiff_batch_norm(statistics):
    def batch_norm_train(x, scale, bias, epsilon, dtype, relu=False):
        mean, var = statistics(x)
        y = normalization.normalize(x, mean, var, scale, bias, epsilon, dtype)
        return (nn.relu(y) if relu else y), mean, var

    return batch_norm_train


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _input_residual_pool(x, k):
    return common._tiled_max_pool(x, k, False)


def _input_residual_pool_fwd(x, k):
    out = _input_residual_pool(x, k)
    return out, (x, out)


def _input_residual_pool_bwd(k, res, g):
    x, out = res
    n, h, w, c = x.shape
    ho, wo = out.shape[1:3]
    taken = jnp.zeros(out.shape, bool)
    grads = []
    for v in common._window_candidates(x, k):
        hit = (v == out) & ~taken
        taken = taken | hit
        grads.append(jnp.where(hit, g, jnp.zeros((), g.dtype)))
    dx = jnp.stack(grads, axis=-2).reshape(n, ho, wo, k, k, c)
    dx = jnp.transpose(dx, (0, 1, 3, 2, 4, 5)).reshape(n, ho * k, wo * k, c)
    return (jnp.pad(dx, ((0, 0), (0, h - ho * k), (0, w - wo * k), (0, 0))),)


_input_residual_pool.defvjp(_input_residual_pool_fwd, _input_residual_pool_bwd)


def _separate_relu_max_pool(x, kernel, stride=None, padding=0, relu=False):
    """The 2x2 pool of the library before session 5: ReLU separate, the backward re-reading the input."""
    return _input_residual_pool(nn.relu(x) if relu else x, kernel)


def _relu_after(batch_norm_train):
    """BatchNorm's ReLU as a separate op after it (the library before session 5)."""

    def separate(x, scale, bias, epsilon, dtype, relu=False):
        y, mean, var = batch_norm_train(x, scale, bias, epsilon, dtype)
        return (nn.relu(y) if relu else y), mean, var

    return separate


def _tree_chunk(state, images, labels, indices, *, loss, transform, batch_sharding, flat_params):
    """``steps.train_chunk`` before the raveled carry: the parameter tree carried through the loop and
    each step's keys drawn inside it (``flat_params`` ignored)."""

    def body(carry, batch_indices):
        state, sums = carry
        batch = {"image": jnp.take(images, batch_indices, axis=0), "label": jnp.take(labels, batch_indices, axis=0)}
        state, metrics = steps.train_step(state, batch, loss=loss, transform=transform, batch_sharding=batch_sharding)
        return (state, steps._add(sums, metrics)), None

    return jax.lax.scan(body, (state, steps._zeros_like_metrics(loss)), indices)[0]


_LIBRARY_CONV_AS_MATMUL = common.conv_as_matmul
_LAX_SCAN = jax.lax.scan
_LIBRARY_TORCH_CONV = common.TorchConv


@jax.custom_vjp
def _stencil_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 1-channel, 3x3, pad-1 convolution as nine shifted multiply-adds (one elementwise fusion, float32
    sums like the matmul's accumulator); its gradient is ``conv_as_matmul``'s (the patch matmul)."""
    k = kernel.shape[0]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).astype(jnp.float32)
    h, w = x.shape[1:3]
    w32 = kernel.astype(jnp.float32)
    y = sum(xp[:, i:i + h, j:j + w, :] * w32[i, j, 0] for i in range(k) for j in range(k))
    return y.astype(jnp.result_type(x, kernel))


def _stencil_conv_fwd(x, kernel):
    return _stencil_conv(x, kernel), (x, kernel)


def _stencil_conv_bwd(res, g):
    x, kernel = res
    return jax.vjp(lambda a, b: _LIBRARY_CONV_AS_MATMUL(a, b, 1, 1), x, kernel)[1](g)


_stencil_conv.defvjp(_stencil_conv_fwd, _stencil_conv_bwd)


def _conv_as_matmul_with_stencil(x, kernel, stride=1, padding=0):
    if x.shape[-1] == 1 and kernel.shape[:2] == (3, 3) and stride == 1 and padding == 1:
        return _stencil_conv(x, kernel)
    return _LIBRARY_CONV_AS_MATMUL(x, kernel, stride, padding)


@jax.custom_vjp
def _patch_dot_image_wgrad(patches: jax.Array, kernel2d: jax.Array) -> jax.Array:
    return jnp.dot(patches, kernel2d)


def _patch_dot_image_wgrad_fwd(patches, kernel2d):
    return jnp.dot(patches, kernel2d), (patches, kernel2d)


def _patch_dot_image_wgrad_bwd(res, g):
    patches, kernel2d = res
    per_image = jnp.einsum("nhwk,nhwc->nkc", patches, g, preferred_element_type=jnp.float32)
    return jnp.dot(g, kernel2d.T), jnp.sum(per_image, axis=0).astype(kernel2d.dtype)


_patch_dot_image_wgrad.defvjp(_patch_dot_image_wgrad_fwd, _patch_dot_image_wgrad_bwd)


def _conv_as_matmul_image_wgrad(x, kernel, stride=1, padding=0):
    """The 1-channel first convolution's kernel gradient as one batched product per image, summed
    (no split-K GEMM over 78,400 rows padded to 78,848); other convolutions as the library's."""
    if x.shape[-1] != 1:
        return _LIBRARY_CONV_AS_MATMUL(x, kernel, stride, padding)
    k = kernel.shape[0]
    return _patch_dot_image_wgrad(common.image_patches(x, k, stride, padding), kernel.reshape(k * k, kernel.shape[3]))


class _OhwiConv(common.TorchConv):
    """``TorchConv`` with the cuDNN path's kernel stored as (Cout, k, k, Cin), the filter layout cuDNN's
    NHWC kernels read, so no transpose of the kernel (or of its gradient) is needed."""

    @nn.compact
    def __call__(self, x, *, bias_cancels=False):
        k, st, p = self.kernel_size, self.stride, self.padding
        cin = x.shape[-1]
        small = cin <= common.PATCH_CONV_MAX_CHANNELS or x.shape[1] * x.shape[2] <= common.MATMUL_CONV_MAX_PIXELS
        hwio = (k, k, cin, self.features)
        if small:
            kernel = self.param("kernel", self.kernel_init, hwio, self.param_dtype)
        else:
            kernel = self.param("kernel", lambda key, shape, dtype: jnp.transpose(
                self.kernel_init(key, hwio, dtype), (3, 0, 1, 2)), (self.features, k, k, cin), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = common.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if small:
            y = common.conv_as_matmul(x, kernel, st, p)
        else:
            y = jax.lax.conv_general_dilated(
                x, kernel, (st, st), ((p, p), (p, p)), dimension_numbers=("NHWC", "OHWI", "NHWC")
            )
        return y + (normalization.stop_cancelled_bias_gradient(bias) if bias_cancels else bias)


#: the numbered modifiers (``unroll2``, ``chaincols16``, ...): prefix -> what it sets N into
_NUMBERED = {
    "unroll": lambda n: setattr(jax.lax, "scan", functools.partial(_LAX_SCAN, unroll=n)),
    "matmulrows": lambda n: setattr(common, "MATMUL_ROWS_MULTIPLE", n),
    "chaincols": lambda n: setattr(fused_chain, "COLUMNS", n),
    "chainwarps": lambda n: setattr(fused_chain, "_NUM_WARPS", n),
}
_NUMBERED_PART = re.compile(rf"({'|'.join(_NUMBERED)})(\d+)")
_BASES = ("before", "pool", "bn", "unroll", "lib")
_MODIFIERS = ("cudnnconv", "xlaconv", "treeadam", "treecarry", "autodiffbn", "matmul49", "inputpool", "xlasums",
              "separaterelu", "pallas64", "xlachain", "biasgrad", "stencilconv", "ohwi", "hwioflat", "stepaugment",
              "imagewgrad", "nodropout", "noconvfusion", "loopedconvs", "kernelrunningstats", "nokernelrunningstats",
              "onedropoutdraw", *(f"{prefix}N" for prefix in _NUMBERED))


#: what ``variant`` may patch, restored after each run: (module or class, attribute).
_PATCHED = (
    (mnist, "max_pool"), (normalization, "batch_norm_train"), (layers, "SCAN_UNROLL_MAX"),
    (common, "PATCH_CONV_MAX_CHANNELS"), (common, "MATMUL_CONV_MAX_PIXELS"), (schedules, "updates_one_vector"),
    (steps, "train_chunk"), (column_sums, "PALLAS_MIN_ROWS"), (fused_chain, "ENABLED"), (fused_chain, "_NUM_WARPS"),
    (fused_chain, "COLUMNS"), (normalization, "SKIP_CANCELLED_BIAS_GRADIENT"),
    (common, "conv_as_matmul"), (steps, "KERNELS_OUTPUT_MAJOR"), (steps, "PREPARED_INPUTS_MAX_BYTES"),
    (nn.Dropout, "__call__"), (jax.lax, "scan"), (steps, "GPU_COMPILER_OPTIONS_MODELS"),
    (common, "MATMUL_ROWS_MULTIPLE"),
    (loop, "convolutions_slow_in_loops"), (fused_chain, "UPDATE_RUNNING_STATS"), (layers, "ONE_DROPOUT_DRAW"),
)


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    """Patch the model's building blocks to ``name``'s versions while the run is built and traced
    (see the module docstring)."""
    saved = [getattr(owner, attribute) for owner, attribute in _PATCHED]
    parts = name.split("+")
    unknown = [p for p in parts if p not in _BASES + _MODIFIERS and not _NUMBERED_PART.fullmatch(p)]
    if unknown:
        raise ValueError(f"unknown variant part(s) {unknown}; use one of {_BASES} joined to any of {_MODIFIERS}")
    old = parts[0] in _BASES[:4]
    if parts[0] == "before":
        mnist.max_pool = _reduce_window_max_pool
    if parts[0] in ("before", "pool"):
        normalization.batch_norm_train = _autodiff_batch_norm(_two_pass_statistics)
    if parts[0] in ("bn", "unroll") or "autodiffbn" in parts:
        normalization.batch_norm_train = _autodiff_batch_norm(_one_pass_statistics)
    if old:
        layers.SCAN_UNROLL_MAX = 16 if parts[0] == "unroll" else 0
    if old or "cudnnconv" in parts:
        common.PATCH_CONV_MAX_CHANNELS = 0
    if old or "cudnnconv" in parts or "xlaconv" in parts:
        common.MATMUL_CONV_MAX_PIXELS = 0
    if old or "treeadam" in parts:
        schedules.updates_one_vector = lambda config: False
    if old or "treeadam" in parts or "treecarry" in parts:
        steps.train_chunk = _tree_chunk
    if old or "xlasums" in parts:
        column_sums.PALLAS_MIN_ROWS = 1 << 62
    if "pallas64" in parts:
        column_sums.PALLAS_MIN_ROWS = 64
    if old or "separaterelu" in parts:
        normalization.batch_norm_train = _relu_after(normalization.batch_norm_train)
    if (old and parts[0] != "before") or "inputpool" in parts:
        mnist.max_pool = _separate_relu_max_pool
    if "matmul49" in parts:
        common.MATMUL_CONV_MAX_PIXELS = 49
    if old or "xlachain" in parts:
        fused_chain.ENABLED = False
    if old or "biasgrad" in parts:
        normalization.SKIP_CANCELLED_BIAS_GRADIENT = False
    if "stencilconv" in parts:
        common.conv_as_matmul = _conv_as_matmul_with_stencil
    if "nodropout" in parts:
        nn.Dropout.__call__ = lambda self, inputs, deterministic=None, rng=None: inputs
    if old:
        common.MATMUL_ROWS_MULTIPLE = 1
    if "kernelrunningstats" in parts:
        fused_chain.UPDATE_RUNNING_STATS = True
    if old or "nokernelrunningstats" in parts:
        fused_chain.UPDATE_RUNNING_STATS = False
    if "onedropoutdraw" in parts:
        layers.ONE_DROPOUT_DRAW = True
    if old or "loopedconvs" in parts:
        loop.convolutions_slow_in_loops = lambda params: False
    for part in parts:
        if numbered := _NUMBERED_PART.fullmatch(part):
            _NUMBERED[numbered[1]](int(numbered[2]))
    if "imagewgrad" in parts:
        common.conv_as_matmul = _conv_as_matmul_image_wgrad
    if "ohwi" in parts:
        common.TorchConv = _OhwiConv
    if old or "hwioflat" in parts:
        steps.KERNELS_OUTPUT_MAJOR = False
    if old or "stepaugment" in parts:
        steps.PREPARED_INPUTS_MAX_BYTES = 0
    if old or "noconvfusion" in parts:
        steps.GPU_COMPILER_OPTIONS_MODELS = ()
    layers.batch_norm_train = normalization.batch_norm_train
    try:
        yield
    finally:
        for (owner, attribute), value in zip(_PATCHED, saved, strict=True):
            setattr(owner, attribute, value)
        layers.batch_norm_train = normalization.batch_norm_train
        common.TorchConv = _LIBRARY_TORCH_CONV


def dump_flags(dump_dir: str) -> str:
    """XLA flags that dump the training chunk's HLO (text, after optimisation) into ``dump_dir``."""
    return f"--xla_dump_to={dump_dir} --xla_dump_hlo_module_re=.*train_chunk.* --xla_dump_hlo_as_text"


def chunk_scopes(dump_dir: str, since: float) -> dict[str, str]:
    """``hlo_scopes`` of the training chunks dumped into ``dump_dir`` at or after time ``since`` (this run's)."""
    scopes: dict[str, str] = {}
    for path in glob.glob(os.path.join(dump_dir, "*train_chunk*after_optimizations.txt")):
        if os.path.getmtime(path) >= since:
            with open(path) as f:
                scopes |= hlo_scopes(f.read())
    return scopes


def time_run(config, epochs: int, profile: bool = False) -> tuple[list[float], float, dict | None]:
    """Seconds of ``epochs`` timed epochs after one warm-up epoch (returned second, with the compile);
    ``profile``: trace one more epoch and print its kernel breakdown."""
    kernels = None
    with tempfile.TemporaryDirectory() as run_dir:
        run = loop._Run(config, run_dir, parallel.make_mesh(), progress=False)
        state = run.initial_state
        t0 = time.perf_counter()
        state, _, _, _ = run.train_epoch(state, 0)
        jax.block_until_ready(state)
        first = time.perf_counter() - t0
        seconds = []
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            state, _, _, _ = run.train_epoch(state, epoch)
            jax.block_until_ready(state)
            seconds.append(time.perf_counter() - t0)
        if profile:
            with tempfile.TemporaryDirectory() as trace_dir:
                jax.profiler.start_trace(trace_dir)
                state, _, _, steps = run.train_epoch(state, epochs + 1)
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
                kernels = kernel_table(trace_dir, steps)
    return seconds, first, kernels


def _computations(text: str) -> dict[str, list[str]]:
    comps: dict[str, list[str]] = {}
    name = None
    for line in text.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if m and not line.startswith(" "):
            name = m.group(1)
            comps[name] = []
        elif line.startswith("}"):
            name = None
        elif name is not None and "=" in line:
            comps[name].append(line.strip())
    return comps


def _op_kind(line: str) -> str:
    rhs = line.split("=", 1)[1]
    m = re.search(r"\s([a-z][\w\-]*)\(", rhs)
    kind = m.group(1) if m else "?"
    if kind == "custom-call":
        target = re.search(r'custom_call_target="([^"]+)"', line)
        kind = f"custom-call:{target.group(1) if target else '?'}"
    return kind


def summarize_dump(dump_dir: str) -> None:
    """Kernel-level op counts of each ``train_chunk`` scan body in an XLA dump (post-optimisation HLO)."""
    for path in sorted(glob.glob(os.path.join(dump_dir, "*train_chunk*after_optimizations.txt"))):
        with open(path) as f:
            comps = _computations(f.read())
        sizes = []
        bodies = set()
        for lines in comps.values():
            for line in lines:
                m = re.search(r" while\(.*body=%?([\w.\-]+)", line)
                if m:
                    bodies.add(m.group(1))
        for body in sorted(bodies):
            counts: collections.Counter[str] = collections.Counter()
            todo = [body]
            while todo:
                for line in comps.get(todo.pop(), []):
                    kind = _op_kind(line)
                    m = re.search(r"(?:to_apply|calls)=%?([\w.\-]+)", line)
                    if kind == "call" and m:
                        todo.append(m.group(1))
                        continue
                    if kind not in ("parameter", "get-tuple-element", "tuple", "constant", "bitcast"):
                        counts[kind] += 1
            sizes.append((sum(counts.values()), body, dict(counts.most_common())))
        for size, body, counts in sorted(sizes, reverse=True)[:2]:
            print(os.path.basename(path), body, size, counts, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="before,pool,lib")
    parser.add_argument("--heads", default="default,spinal")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="steps an epoch (default: the full 600)")
    parser.add_argument("--tag", default="default-flags")
    parser.add_argument("--profile", default="", help="comma list of variant/precision/head to trace, e.g. lib/fp32/spinal")
    parser.add_argument("--dump-dir", default=None,
                        help="with --profile: dump the training chunk's HLO here and charge each kernel to its JAX scope")
    parser.add_argument("--out", default="bench_vgg5_step.jsonl")
    parser.add_argument("--summarize-dump", default=None, help="only print op counts of an XLA dump directory")
    args = parser.parse_args()
    if args.summarize_dump:
        summarize_dump(args.summarize_dump)
        return
    if args.dump_dir:  # read when the backend starts (jax.devices() below)
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {dump_flags(args.dump_dir)}".strip()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60000, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, 60000).astype(np.int32)
    loop.load_splits = lambda config: (loop.Split(x, y), None, loop.Split(x[:10000], y[:10000]), 10)
    print(jax.devices(), os.environ.get("XLA_FLAGS", ""), flush=True)
    for precision in args.precisions.split(","):
        for head in args.heads.split(","):
            for name in args.variants.split(","):
                config = apply_overrides(
                    load_config("fashion_mnist_vgg5"),
                    {"precision": precision, "head": head, "tensorboard": False, "epochs": args.epochs + 2,
                     "steps_per_epoch": args.steps},
                )
                started = time.time()
                with variant(name):
                    seconds, first, kernels = time_run(
                        config, args.epochs, f"{name}/{precision}/{head}" in args.profile.split(",")
                    )
                row = {
                    "tag": args.tag, "variant": name, "precision": precision, "head": head,
                    "epoch_seconds": seconds, "median": statistics.median(seconds), "first_epoch": first,
                    "device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
                }
                if kernels is not None:
                    row["kernels"] = kernels
                    row["kernels_per_step"] = sum(c for c, _ in kernels.values())
                    row["kernel_us_per_step"] = sum(us for _, us in kernels.values())
                    if args.dump_dir:
                        row["kernels_by_scope"] = scope_totals(kernels, chunk_scopes(args.dump_dir, started))
                        for scope, (calls, us) in row["kernels_by_scope"].items():
                            print(f"    {us:8.1f} us/step {calls:6.1f} calls  {scope}", flush=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{args.tag:>14} {name:>7} {precision} {head:>7}: {row['median']:.3f} s/epoch "
                      f"(first {first:.1f} s) {[round(s, 3) for s in seconds]}", flush=True)


if __name__ == "__main__":
    main()
