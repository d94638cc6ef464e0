"""Column sums of per-element functions of ``(rows, C)`` arrays: BatchNorm's reductions.

``column_sums(fn, arrays, vectors)`` returns the sums over the rows of each of ``fn(tiles, vectors)``
(a tuple of arrays), computed from row tiles of ``arrays`` and the per-column ``vectors``. On a
single CUDA GPU, long inputs take a Pallas (Triton) kernel: each program sums a fixed range of rows
into one partial row, and XLA adds the partials (a fixed order: the result is deterministic).
Elsewhere, and where the kernel does not apply (short or odd-width inputs, or a process that sees
several devices, whose arrays may be sharded over the rows), XLA's reduction of the outputs stacked
is used. XLA splits each long column reduction into a partial and a final kernel, and its partial
kernel runs well below the memory bandwidth on these shapes (BatchNorm's backward sums of a 78,400 x 64 bf16 input:
20.7 us against 10.4 us for this kernel and its final sum on an H100,
``experiments/results/column_sums_benchmark.md``). Setting ``PALLAS_MIN_ROWS`` to ``sys.maxsize``
before the first trace makes every sum XLA's (e.g. where Pallas' Triton lowering is not available).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

PALLAS_MIN_ROWS = 512  # shorter inputs take XLA's reduction (one kernel there)
_TILE_ELEMENTS = 8192  # elements of one row tile (rows = this / C)
_PROGRAMS = 264  # partial rows: two per SM of an H100
_MAX_COLUMNS = 1024

TileFn = Callable[[Sequence[jax.Array], Sequence[jax.Array]], tuple[jax.Array, ...]]


def xla_column_sums(fn: TileFn, arrays: Sequence[jax.Array], vectors: Sequence[jax.Array]) -> tuple[jax.Array, ...]:
    """The reference path: ``fn`` on the whole arrays, then XLA's reduction (in ``fn``'s dtype)."""
    outputs = fn(arrays, vectors)
    # one reduction of the outputs stacked: on GPUs one partial and one final kernel, not one final each
    sums = jnp.sum(jnp.stack(outputs, axis=-2), axis=0)
    return tuple(sums[i] for i in range(len(outputs)))


def pallas_column_sums(
    fn: TileFn, arrays: Sequence[jax.Array], vectors: Sequence[jax.Array], *, interpret: bool = False
) -> tuple[jax.Array, ...]:
    """The Pallas path (``interpret=True`` runs it on any backend, for tests)."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    rows, cols = arrays[0].shape
    block_rows = max(16, _TILE_ELEMENTS // cols)
    tiles = pl.cdiv(rows, block_rows)
    programs = min(_PROGRAMS, tiles)
    tiles_per_program = pl.cdiv(tiles, programs)
    n_arrays = len(arrays)
    n_sums = len(jax.eval_shape(fn, arrays, vectors))

    def kernel(*refs):
        array_refs, vector_refs, out_ref = refs[:n_arrays], refs[n_arrays:-1], refs[-1]
        vecs = [r[...].astype(jnp.float32) for r in vector_refs]
        first_tile = pl.program_id(0) * tiles_per_program

        def body(t, acc):
            start = (first_tile + t) * block_rows
            inside = jnp.broadcast_to((start + jnp.arange(block_rows) < rows)[:, None], (block_rows, cols))
            tiles_ = [plgpu.load(r.at[pl.ds(start, block_rows), :], mask=inside, other=0) for r in array_refs]
            return tuple(a + jnp.sum(jnp.where(inside, u, 0.0), axis=0) for a, u in zip(acc, fn(tiles_, vecs), strict=True))

        sums = jax.lax.fori_loop(0, tiles_per_program, body, (jnp.zeros((cols,), jnp.float32),) * n_sums)
        for i, total in enumerate(sums):
            out_ref[0, i, :] = total

    partials = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((programs, n_sums, cols), jnp.float32),
        grid=(programs,),
        in_specs=[pl.BlockSpec(memory_space=pl.ANY)] * n_arrays + [pl.BlockSpec((cols,), lambda i: (0,))] * len(vectors),
        out_specs=pl.BlockSpec((1, n_sums, cols), lambda i: (i, 0, 0)),
        compiler_params=plgpu.CompilerParams(num_warps=4),
        interpret=interpret,
    )(*arrays, *vectors)
    sums = jnp.sum(partials, axis=0)
    return tuple(sums[i] for i in range(n_sums))


def pallas_applies(arrays: Sequence[jax.Array]) -> bool:
    """Whether the shapes and dtypes suit the kernel: 2-D, equal shapes, >= ``PALLAS_MIN_ROWS`` rows,
    a power-of-two width up to 1024 (Triton's blocks), float32 or narrower."""
    shape = arrays[0].shape
    if len(shape) != 2 or any(a.shape != shape for a in arrays):
        return False
    rows, cols = shape
    narrow = all(jnp.issubdtype(a.dtype, jnp.floating) and jnp.dtype(a.dtype).itemsize <= 4 for a in arrays)
    return narrow and rows >= PALLAS_MIN_ROWS and 0 < cols <= _MAX_COLUMNS and cols & (cols - 1) == 0


def column_sums(fn: TileFn, arrays: Sequence[jax.Array], vectors: Sequence[jax.Array]) -> tuple[jax.Array, ...]:
    """Column sums of each output of ``fn(tiles, vectors)`` (a tuple of ``(rows, C)`` arrays).

    ``arrays``: ``(rows, C)`` arrays of one shape; ``vectors``: ``(C,)`` arrays; ``fn`` must be
    elementwise along the rows (the kernel gives it row tiles, and ``vectors`` as float32) and return
    float32 for float32 and narrower inputs (the kernel sums in float32). Not differentiable on the
    GPU: it serves hand-written forward and backward passes.
    """
    n_sums = len(jax.eval_shape(fn, arrays, vectors))
    if not pallas_applies(arrays) or n_sums & (n_sums - 1) or jax.device_count() != 1:
        return xla_column_sums(fn, arrays, vectors)

    def xla(*args):
        return xla_column_sums(fn, args[: len(arrays)], args[len(arrays):])

    def pallas(*args):
        return pallas_column_sums(fn, args[: len(arrays)], args[len(arrays):])

    return jax.lax.platform_dependent(*arrays, *vectors, cuda=pallas, default=xla)
