"""Bitwise-reproducible runs on the GPU: XLA's deterministic operations, switched on before the backend starts.

On the CPU a run is bitwise reproducible as it is. On the GPU, XLA's defaults allow non-deterministic
operations (atomic scatter-adds and reductions), so two runs of one seed drift apart from the first epoch;
with ``--xla_gpu_deterministic_ops=true`` they are equal (measured on an H100 for the VGG-5, at ~2% of the
epoch time: ``experiments/results/gpu_determinism.md``).
"""

from __future__ import annotations

import os

DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"


def enable_deterministic_gpu_ops() -> str:
    """Add ``--xla_gpu_deterministic_ops=true`` to ``XLA_FLAGS`` (processes started later inherit it).

    Must run before anything starts a JAX backend (``jax.devices()``, the first array): XLA reads its
    flags once. Returns the resulting ``XLA_FLAGS``.
    """
    from jax._src import xla_bridge

    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" in flags:
        if DETERMINISTIC_FLAG not in flags.split():
            raise ValueError(
                f"XLA_FLAGS={flags!r} already sets xla_gpu_deterministic_ops to something else than true; "
                "remove it from XLA_FLAGS to use deterministic operations"
            )
        return flags
    if xla_bridge.backends_are_initialized():
        raise RuntimeError(
            "deterministic GPU operations must be switched on before JAX starts its backend (XLA reads its flags "
            f"once); call enable_deterministic_gpu_ops() first, or start the process with XLA_FLAGS={DETERMINISTIC_FLAG}"
        )
    os.environ["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_FLAG}".strip()
    return os.environ["XLA_FLAGS"]
