"""Building blocks shared by the models: PyTorch-initialised layers, pooling, flatten order, checks."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen.dtypes import promote_dtype

from spinal_jax.initializers import kaiming_normal_fan_out, torch_bias_init, torch_kernel_init
from spinal_jax.normalization import BatchNorm, stop_cancelled_bias_gradient

Dtype = Any

HEADS = ("default", "spinal")


def check_head(head: str, model: str, heads: Sequence[str] = HEADS) -> None:
    """Raise a ValueError when ``head`` is not one of ``heads``."""
    if head not in heads:
        raise ValueError(f"{model}: head must be one of {tuple(heads)}, got {head!r}")


def check_num_classes(num_classes: int, model: str) -> None:
    """Raise a ValueError unless ``num_classes`` is a positive int."""
    if (
        not isinstance(num_classes, (int, np.integer))
        or isinstance(num_classes, bool)
        or num_classes < 1
    ):
        raise ValueError(f"{model}: num_classes must be a positive int, got {num_classes!r}")


def check_head_and_classes(head: str, num_classes: int, model: str, heads: Sequence[str] = HEADS) -> None:
    """The checks every model runs on construction: ``check_head`` and ``check_num_classes``."""
    check_head(head, model, heads)
    check_num_classes(num_classes, model)


def check_images(
    x: jax.Array,
    model: str,
    input_shape: tuple[int, ...],
    *,
    exact: bool = True,
    min_size: int = 1,
) -> None:
    """Check a batch of NHWC images against the model's ``input_shape`` before any compute.

    ``exact``: height and width must equal ``input_shape[:2]``; otherwise any size >= ``min_size``.
    """
    want = tuple(input_shape)
    if x.ndim != len(want) + 1:
        raise ValueError(
            f"{model}: expected a batch of shape (B, {', '.join(map(str, want))}) "
            f"({'NHWC images' if len(want) == 3 else 'vectors'}), got shape {tuple(x.shape)}"
        )
    if len(want) == 3 and x.shape[-1] != want[-1]:
        raise ValueError(
            f"{model}: expected {want[-1]} channel(s) in the last axis (NHWC), got {x.shape[-1]} "
            f"(shape {tuple(x.shape)}); convert the images (e.g. grayscale <-> RGB) first"
        )
    if exact and tuple(x.shape[1:]) != want:
        raise ValueError(
            f"{model}: expected inputs of shape (B, {', '.join(map(str, want))}), got {tuple(x.shape)}; "
            "this model's classifier is sized for exactly that input"
        )
    if not exact and min(x.shape[1:3]) < min_size:
        raise ValueError(
            f"{model}: images must be at least {min_size}x{min_size} pixels, got {tuple(x.shape[1:3])}"
        )


def to_float(x: jax.Array, dtype: Dtype | None) -> jax.Array:
    """Cast integer images to float32 and then to the compute dtype (if any)."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x.astype(dtype) if dtype is not None else x


def torch_dense(
    features: int,
    fan_in: int,
    *,
    name: str,
    zero_bias: bool = False,
    kernel_init: nn.initializers.Initializer | None = None,
    dtype: Dtype | None = None,
) -> nn.Dense:
    """``nn.Dense`` initialised as ``torch.nn.Linear`` (U(±1/sqrt(fan_in)) weight and bias)."""
    return nn.Dense(
        features,
        kernel_init=kernel_init or torch_kernel_init,
        bias_init=nn.initializers.zeros_init() if zero_bias else torch_bias_init(fan_in),
        dtype=dtype,
        name=name,
    )


#: Convolutions with at most this many input channels run as im2col + matmul (``conv_as_matmul``). On
#: an H100 cuDNN pads a 1-channel input to 8 channels and takes a slow non-tensor-core weight-gradient
#: kernel for it (PERF_NOTES.md); a patch matrix of k*k columns avoids both. 0 = never for this reason.
PATCH_CONV_MAX_CHANNELS = 1

#: Convolutions on input maps of at most this many pixels (H*W) run as im2col + matmul too: on the
#: VGG-5's 3x3 maps three GEMMs beat cuDNN's kernels with their padding and layout transposes
#: (PERF_NOTES.md). 0 = never for this reason.
MATMUL_CONV_MAX_PIXELS = 9


class TorchConv(nn.Module):
    """``torch.nn.Conv2d`` on NHWC input: HWIO ``kernel`` (k, k, Cin, Cout), optional ``bias`` (Cout,),
    square kernel, one stride, symmetric zero padding (the parameters ``nn.Conv`` would have).

    ``method``: ``"auto"`` computes by im2col + one matmul (``conv_as_matmul``) for inputs with at most
    ``PATCH_CONV_MAX_CHANNELS`` channels or at most ``MATMUL_CONV_MAX_PIXELS`` pixels, and by
    ``lax.conv_general_dilated`` otherwise; ``"matmul"`` and ``"xla"`` force one. The same function
    either way (up to the summation order).

    ``bias_cancels=True`` (call argument) says the output goes straight into train-mode BatchNorm,
    which subtracts each channel's batch mean: the bias cancels, so its gradient is exactly zero and
    is given as zero instead of computed (PyTorch computes round-off there). The output is unchanged.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = torch_kernel_init
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    method: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, bias_cancels: bool = False) -> jax.Array:
        if self.method not in ("auto", "matmul", "xla"):
            raise ValueError(f"TorchConv: method must be 'auto', 'matmul' or 'xla', got {self.method!r}")
        k, st, p = self.kernel_size, self.stride, self.padding
        cin = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (k, k, cin, self.features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        small = cin <= PATCH_CONV_MAX_CHANNELS or x.shape[1] * x.shape[2] <= MATMUL_CONV_MAX_PIXELS
        if self.method == "matmul" or (self.method == "auto" and small):
            y = conv_as_matmul(x, kernel, st, p)
        else:
            y = jax.lax.conv_general_dilated(
                x, kernel, (st, st), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        if bias is None:
            return y
        return y + (stop_cancelled_bias_gradient(bias) if bias_cancels else bias)


#: ``TorchConv`` computed by im2col + matmul whatever the input.
PatchConv = functools.partial(TorchConv, method="matmul")


def image_patches(x: jax.Array, k: int, stride: int = 1, padding: int = 0) -> jax.Array:
    """im2col of NHWC ``x`` for a square ``k x k`` kernel (symmetric zero ``padding``): the ``k*k``
    shifted views of ``x`` concatenated along channels, ``(N, Ho, Wo, k*k*C)`` in HWIO's (i, j, c) order."""
    cin = x.shape[-1]
    if padding:
        x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    h, w = x.shape[1:3]
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"im2col (conv_as_matmul): a {k}x{k} kernel does not fit a {h}x{w} (padded) input")
    taps = [
        jax.lax.slice(x, (0, i, j, 0), (x.shape[0], i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, cin),
                      (1, stride, stride, 1))
        for i in range(k)
        for j in range(k)
    ]
    return jnp.concatenate(taps, axis=-1)


#: ``conv_as_matmul`` pads its patch matrix with zero rows to a multiple of this many rows (1 = never).
#: The weight gradient's matmul sums over these rows; on a GPU, XLA splits that sum (split-K) only over
#: a row count it can divide evenly, so for the VGG-5's 3x3 maps (900 rows at batch 100) it builds a
#: padded copy of each patch matrix beside the unpadded one (PERF_NOTES.md, round 20). With 32, one padded
#: matrix serves both matmuls: -2.3% of the bf16 VGG-5 epoch, both heads (round 21, one H200).
MATMUL_ROWS_MULTIPLE = 32


def conv_as_matmul(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: int = 0) -> jax.Array:
    """NHWC ``x`` convolved with the HWIO ``kernel`` (square, symmetric zero ``padding``) as im2col +
    one matmul: ``image_patches`` times the kernel reshaped to ``(k*k*Cin, Cout)``, the patch rows
    padded with zeros to a multiple of ``MATMUL_ROWS_MULTIPLE`` (their outputs dropped)."""
    k, cout = kernel.shape[0], kernel.shape[3]
    patches = image_patches(x, k, stride, padding)
    n, ho, wo, columns = patches.shape
    rows = n * ho * wo
    extra = -rows % MATMUL_ROWS_MULTIPLE
    if not extra:
        return jnp.dot(patches, kernel.reshape(columns, cout))
    padded = jnp.pad(patches.reshape(rows, columns), ((0, extra), (0, 0)))
    return jnp.dot(padded, kernel.reshape(columns, cout))[:rows].reshape(n, ho, wo, cout)


def torch_conv(
    features: int,
    in_features: int,
    kernel: int,
    *,
    name: str,
    stride: int = 1,
    padding: int = 0,
    use_bias: bool = True,
    kernel_init: nn.initializers.Initializer | None = None,
    zero_bias: bool = False,
    dtype: Dtype | None = None,
) -> TorchConv:
    """``TorchConv`` with ``torch.nn.Conv2d``'s default init (or ``kernel_init``; ``zero_bias``)."""
    fan_in = in_features * kernel * kernel
    return TorchConv(
        features,
        kernel,
        stride=stride,
        padding=padding,
        use_bias=use_bias,
        kernel_init=kernel_init or torch_kernel_init,
        bias_init=nn.initializers.zeros_init() if zero_bias else torch_bias_init(fan_in),
        dtype=dtype,
        name=name,
    )


def batch_norm(name: str, dtype: Dtype | None = None, relu: bool = False) -> BatchNorm:
    """PyTorch-semantics BatchNorm that, like PyTorch, keeps the unbiased variance in the running stats
    (``relu``: followed by a ReLU, as one op)."""
    return BatchNorm(unbiased_running_var=True, relu=relu, dtype=dtype, name=name)


def _window_candidates(x: jax.Array, k: int) -> list[jax.Array]:
    """The k*k members of every non-overlapping k x k window of NHWC ``x`` (floor mode: the last
    ``H % k`` rows and ``W % k`` columns are dropped), in row-major window order."""
    n, h, w, c = x.shape
    ho, wo = h // k, w // k
    xr = x[:, : ho * k, : wo * k, :].reshape(n, ho, k, wo, k, c)
    return [xr[:, :, i, :, j, :] for i in range(k) for j in range(k)]


def _first_max_index(cands: list[jax.Array], out: jax.Array) -> jax.Array:
    """Index (row-major in the window) of each window's first member equal to its maximum ``out``;
    ``len(cands)`` where none is (a NaN window)."""
    which = jnp.full(out.shape, len(cands), jnp.int8 if len(cands) < 127 else jnp.int32)
    for p in reversed(range(len(cands))):
        which = jnp.where(cands[p] == out, jnp.asarray(p, which.dtype), which)
    return which


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _tiled_max_pool(x: jax.Array, k: int, relu: bool) -> jax.Array:
    return _tiled_max_pool_fwd(x, k, relu)[0]


def _tiled_max_pool_fwd(x: jax.Array, k: int, relu: bool) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    cands = _window_candidates(x, k)
    out = cands[0]
    for v in cands[1:]:
        out = jnp.maximum(out, v)
    which = _first_max_index(cands, out)
    if relu:
        # max_pool(relu(x)): a window whose maximum is not positive passes no gradient (relu's is 0 there)
        which = jnp.where(out > 0, which, jnp.asarray(k * k, which.dtype))
        out = jnp.maximum(out, jnp.zeros((), out.dtype))
    return out, (which, jnp.zeros((x.shape[1], x.shape[2], 0), jnp.int8))  # the second: x's (H, W), statically


def _tiled_max_pool_bwd(k: int, relu: bool, res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array]:
    # Like PyTorch, the whole gradient of a window goes to its first maximum in row-major order
    # (jnp.max's own gradient would split it among tied maxima). The forward keeps only that index,
    # so this is one broadcast select writing the input's layout directly (no transpose, no re-read
    # of the input), where reduce_window's gradient is a select_and_scatter, slow on GPUs.
    which, input_size = res
    n, ho, wo, c = which.shape
    h, w = input_size.shape[:2]
    position = (jnp.arange(k)[:, None] * k + jnp.arange(k)[None, :]).astype(which.dtype)
    hit = which[:, :, None, :, None, :] == position[None, None, :, None, :, None]
    dx = jnp.where(hit, g[:, :, None, :, None, :], jnp.zeros((), g.dtype)).reshape(n, ho * k, wo * k, c)
    dx = jnp.pad(dx, ((0, 0), (0, h - ho * k), (0, w - wo * k), (0, 0)))
    return (dx,)


_tiled_max_pool.defvjp(_tiled_max_pool_fwd, _tiled_max_pool_bwd)


def max_pool(x: jax.Array, kernel: int, stride: int | None = None, padding: int = 0, relu: bool = False) -> jax.Array:
    """``torch.nn.MaxPool2d(kernel, stride, padding)`` (floor mode, -inf padding) on NHWC; with
    ``relu``, of ``relu(x)`` (the same as ``relu`` of the pool, values and gradients).

    Non-overlapping unpadded windows (``stride == kernel``, the usual 2x2 pool) take a reshape and
    elementwise max whose gradient, as PyTorch's, goes to the first maximum of each window (the
    backward needs only that index, and with ``relu`` nothing of ``x``); other pools use
    ``flax.linen.max_pool``.
    """
    stride = kernel if stride is None else stride
    if stride == kernel and padding == 0 and x.ndim == 4 and min(x.shape[1:3]) >= kernel:
        return _tiled_max_pool(x, kernel, relu)
    pad = ((padding, padding), (padding, padding))
    x = nn.relu(x) if relu else x
    return nn.max_pool(x, (kernel, kernel), strides=(stride, stride), padding=pad)


@functools.lru_cache(maxsize=64)
def _adaptive_matrix(size: int, out: int) -> np.ndarray:
    m = np.zeros((out, size), np.float64)  # cast to the compute dtype by the caller
    for i in range(out):
        start = (i * size) // out
        end = -((-(i + 1) * size) // out)  # ceil
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x: jax.Array, out: tuple[int, int]) -> jax.Array:
    """``torch.nn.AdaptiveAvgPool2d(out)`` on NHWC (PyTorch's bin edges); identity when sizes match."""
    h, w = x.shape[1:3]
    if (h, w) == tuple(out):
        return x
    mh = jnp.asarray(_adaptive_matrix(h, out[0]), x.dtype)
    mw = jnp.asarray(_adaptive_matrix(w, out[1]), x.dtype)
    return jnp.einsum("nhwc,oh,pw->nopc", x, mh, mw, precision=jax.lax.Precision.HIGHEST)


def flatten_nchw(x: jax.Array) -> jax.Array:
    """Flatten NHWC features in PyTorch's NCHW order (``x.view(B, -1)`` on the channel-first map).

    The spinal heads split the flattened vector, so the order decides what each segment holds
    (ORIGINAL.md §1.8). 1x1 maps need no transpose.
    """
    if x.shape[1] * x.shape[2] == 1:
        return x.reshape(x.shape[0], -1)
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


def dropout2d(rate: float, name: str | None = None) -> nn.Dropout:
    """``torch.nn.Dropout2d``: drops whole channels of an NHWC map."""
    return nn.Dropout(rate, broadcast_dims=(1, 2), name=name)


def mnist_vgg_conv_init(out_channels: int, kernel: int = 3) -> nn.initializers.Initializer:
    """MNIST_VGG's conv init: N(0, sqrt(2 / (k*k*out)))."""
    return nn.initializers.normal(math.sqrt(2.0 / (kernel * kernel * out_channels)))


__all__ = [
    "HEADS",
    "MATMUL_CONV_MAX_PIXELS",
    "MATMUL_ROWS_MULTIPLE",
    "PATCH_CONV_MAX_CHANNELS",
    "PatchConv",
    "TorchConv",
    "adaptive_avg_pool",
    "batch_norm",
    "check_head",
    "check_head_and_classes",
    "check_images",
    "check_num_classes",
    "conv_as_matmul",
    "dropout2d",
    "flatten_nchw",
    "image_patches",
    "kaiming_normal_fan_out",
    "max_pool",
    "mnist_vgg_conv_init",
    "to_float",
    "torch_conv",
    "torch_dense",
]
