"""Data parallelism with ``jax.sharding``: meshes, shardings, several hosts, FSDP rules.

The trainer jits its step over *global* arrays: the batch is sharded over the mesh axis
``"data"`` and the train state is replicated (or, with ``fsdp=True``, its large leaves are
sharded too). XLA inserts the collectives, so BatchNorm statistics, losses and gradients are
those of the global batch: N devices give the numbers of one device at the same global batch,
with no ``pmap``/``axis_name``.

Typical use::

    parallel.initialize_distributed()                  # no-op for one process
    mesh = parallel.make_mesh()                        # every device of every process
    parallel.check_batch_size(config.batch_size, mesh)
    state = jax.device_put(state, parallel.state_shardings(mesh, state, fsdp=config.fsdp))
    rows = parallel.process_batch_slice(config.batch_size)   # this host's rows of a global batch
    batch = parallel.host_batch_to_global({"image": x[rows], "label": y[rows]}, mesh)
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
# Leaves with fewer elements than this stay replicated under FSDP (biases, BatchNorm, small kernels).
FSDP_MIN_SIZE = 2**16

__all__ = [
    "DATA_AXIS",
    "FSDP_MIN_SIZE",
    "batch_sharding",
    "check_batch_size",
    "check_mesh",
    "host_batch_to_global",
    "initialize_distributed",
    "make_mesh",
    "mesh_size",
    "process_batch_slice",
    "process_shard",
    "replicated",
    "state_shardings",
]


# ---------------------------------------------------------------------------------------------
# Meshes
# ---------------------------------------------------------------------------------------------


def check_mesh(num_devices: int | None = None, devices: Sequence[Any] | None = None) -> list[Any]:
    """Validate a mesh request and return the devices it will use, in mesh order.

    ``devices`` defaults to ``jax.devices()`` (all processes). ``num_devices`` takes that many of
    them, the same number from every process. Raises ``ValueError`` when the request does not fit.
    """
    available = list(jax.devices()) if devices is None else list(devices)
    if not available:
        raise ValueError("devices: an empty device list cannot form a mesh; pass None to use jax.devices()")
    if len({(d.process_index, d.id) for d in available}) != len(available):
        raise ValueError("devices: the device list contains duplicates; pass each device once")
    # Process-major order: each process's devices form one contiguous block of the batch axis,
    # so a host's rows of the global batch are contiguous (see process_batch_slice).
    available.sort(key=lambda d: (d.process_index, d.id))
    processes = sorted({d.process_index for d in available})
    per_process = {p: [d for d in available if d.process_index == p] for p in processes}
    counts = {len(v) for v in per_process.values()}
    if len(counts) != 1:
        raise ValueError(
            f"devices: processes contribute unequal numbers of devices "
            f"({ {p: len(v) for p, v in per_process.items()} }); a data mesh needs the same number per process"
        )
    if num_devices is None:
        return available
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(f"num_devices={num_devices!r}: expected a positive int (or None for all devices)")
    if num_devices > len(available):
        platform = available[0].platform
        raise ValueError(
            f"num_devices={num_devices} but only {len(available)} {platform} device(s) are available "
            f"({len(processes)} process(es)); ask for at most {len(available)} or leave it unset to use all"
        )
    if num_devices % len(processes):
        raise ValueError(
            f"num_devices={num_devices} does not divide over the {len(processes)} processes; "
            f"use a multiple of {len(processes)} so every host feeds the same number of devices"
        )
    take = num_devices // len(processes)
    return [d for p in processes for d in per_process[p][:take]]


def make_mesh(
    num_devices: int | None = None, devices: Sequence[Any] | None = None, axis_name: str = DATA_AXIS
) -> Mesh:
    """A one-axis mesh ``(axis_name,)`` over ``num_devices`` of ``devices`` (default: all, global)."""
    chosen = check_mesh(num_devices, devices)
    return Mesh(np.asarray(chosen, dtype=object), (axis_name,))


def mesh_size(mesh: Mesh, axis_name: str = DATA_AXIS) -> int:
    """Number of devices along the batch axis of ``mesh``."""
    if axis_name not in mesh.shape:
        raise ValueError(f"mesh has axes {tuple(mesh.shape)}, not {axis_name!r}; build it with make_mesh()")
    return int(mesh.shape[axis_name])


def _mesh_processes(mesh: Mesh) -> list[int]:
    return sorted({d.process_index for d in mesh.devices.flat})


# ---------------------------------------------------------------------------------------------
# Shardings
# ---------------------------------------------------------------------------------------------


def batch_sharding(mesh: Mesh, axis_name: str = DATA_AXIS) -> NamedSharding:
    """Leading (batch) axis split over ``axis_name``; other axes whole."""
    return NamedSharding(mesh, P(axis_name))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], n: int, min_size: int, axis_name: str) -> P:
    if n == 1 or math.prod(shape) < min_size:
        return P()
    candidates = [i for i, dim in enumerate(shape) if dim % n == 0]
    if not candidates:
        return P()
    # Largest divisible axis; ties go to the last one (the output-feature axis of kernels).
    axis = max(candidates, key=lambda i: (shape[i], i))
    return P(*([None] * axis + [axis_name]))


def state_shardings(
    mesh: Mesh,
    tree: Any,
    fsdp: bool = False,
    min_size: int = FSDP_MIN_SIZE,
    axis_name: str = DATA_AXIS,
) -> Any:
    """Shardings for a train state (or any pytree of arrays / ``ShapeDtypeStruct``).

    Replicated by default. With ``fsdp=True`` each leaf of at least ``min_size`` elements is
    split along its largest axis that divides over the mesh; the rule depends only on the shape,
    so a parameter and its optimizer-state twins (momentum, Adam moments) get the same sharding.
    Smaller leaves and leaves with no divisible axis stay replicated.
    """
    n = mesh_size(mesh, axis_name)

    def one(leaf: Any) -> NamedSharding:
        shape = tuple(getattr(leaf, "shape", ()))
        if not fsdp:
            return replicated(mesh)
        return NamedSharding(mesh, _fsdp_spec(shape, n, min_size, axis_name))

    return jax.tree.map(one, tree)


# ---------------------------------------------------------------------------------------------
# Batches over devices and hosts
# ---------------------------------------------------------------------------------------------


def check_batch_size(
    global_batch_size: int, mesh: Mesh, name: str = "batch_size", axis_name: str = DATA_AXIS
) -> int:
    """Check that ``global_batch_size`` splits evenly over the devices and hosts of ``mesh``.

    Returns the per-process batch size (the rows each host feeds). Raises ``ValueError`` with
    the nearest valid sizes otherwise.
    """
    if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, (int, np.integer)):
        raise ValueError(f"{name}={global_batch_size!r}: expected a positive int")
    if global_batch_size < 1:
        raise ValueError(f"{name}={global_batch_size}: expected a positive int")
    n = mesh_size(mesh, axis_name)
    processes = len(_mesh_processes(mesh))
    if global_batch_size % n:
        lower = (global_batch_size // n) * n
        upper = lower + n
        hint = f"{lower} or {upper}" if lower else f"{upper}"
        raise ValueError(
            f"{name}={global_batch_size} does not divide over the {n} devices of the mesh "
            f"({processes} process(es)); use a multiple of {n} (e.g. {hint}) or run on fewer devices "
            f"(a mesh of a number of devices that divides {global_batch_size})"
        )
    # n divisible by processes (check_mesh), so this holds whenever the device check passes.
    return int(global_batch_size) // processes


def process_batch_slice(
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> slice:
    """Rows of a global batch that process ``process_index`` feeds (contiguous, equal sizes).

    With every host drawing the same global batch (same seed, same permutation) and feeding
    these rows to ``host_batch_to_global``, the global array is exactly that batch.
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if global_batch_size % count:
        raise ValueError(
            f"global batch size {global_batch_size} does not divide over {count} processes; "
            f"use a multiple of {count}"
        )
    per = global_batch_size // count
    return slice(index * per, (index + 1) * per)


def process_shard(
    num_examples: int,
    process_index: int | None = None,
    process_count: int | None = None,
    drop_remainder: bool = True,
) -> slice:
    """The slice of a dataset of ``num_examples`` that process ``process_index`` reads.

    Contiguous blocks in process order. ``drop_remainder=True`` gives every host the same number
    of examples (the last ``num_examples % process_count`` are dropped, as training needs equal
    step counts); ``False`` spreads them like ``numpy.array_split`` (for evaluation).
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if num_examples < 0:
        raise ValueError(f"num_examples={num_examples}: expected >= 0")
    if not 0 <= index < count:
        raise ValueError(f"process_index={index} out of range for process_count={count}")
    per, rest = divmod(num_examples, count)
    if drop_remainder:
        return slice(index * per, (index + 1) * per)
    start = index * per + min(index, rest)
    return slice(start, start + per + (1 if index < rest else 0))


def host_batch_to_global(batch: Any, mesh: Mesh, axis_name: str = DATA_AXIS) -> Any:
    """Global ``jax.Array`` s sharded over the batch axis from this process's rows (numpy tree).

    Every process calls it with its own rows (``process_batch_slice``), the same number on every
    host; the global leading size is ``local rows x processes in the mesh``. In a single process
    this is a sharded ``device_put`` of the whole batch.
    """
    sharding = batch_sharding(mesh, axis_name)
    processes = len(_mesh_processes(mesh))
    local_devices = mesh_size(mesh, axis_name) // processes

    def one(x: Any) -> jax.Array:
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError("host_batch_to_global: batch leaves need a leading batch axis, got a scalar")
        if x.shape[0] % local_devices:
            raise ValueError(
                f"host_batch_to_global: {x.shape[0]} local rows do not divide over this process's "
                f"{local_devices} devices; feed a multiple of {local_devices} rows per process"
            )
        global_shape = (x.shape[0] * processes, *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(one, batch)


# ---------------------------------------------------------------------------------------------
# Several hosts
# ---------------------------------------------------------------------------------------------


def _detected_cluster_processes() -> int | None:
    """Process count of a cluster JAX can auto-detect (Slurm, Open MPI, TPU pods, ...), else None."""
    try:
        from jax._src.clusters import ClusterEnv  # private; guarded, only used for detection
    except Exception:  # pragma: no cover - JAX moved it
        return None
    for env in ClusterEnv._cluster_types:
        try:
            if not env.opt_in_only_method and env.is_env_present():
                return int(env.get_process_count())
        except Exception:  # a half-configured environment is treated as absent
            continue
    return None


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r}: expected an integer") from None


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
    initialization_timeout: int = 300,
) -> bool:
    """Join a multi-process JAX job; returns True if ``jax.distributed`` was initialized.

    Arguments fall back to ``JAX_COORDINATOR_ADDRESS`` (``host:port``), ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``; with none of them set, a cluster JAX detects by itself (Slurm, Open MPI,
    Cloud TPU, ...) is used. A single process (nothing set, or ``num_processes=1``) is a no-op.
    Must run before anything touches a JAX device. CPU processes exchange data through gloo.
    """
    if jax.distributed.is_initialized():
        return True
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")

    explicit = coordinator_address is not None or num_processes is not None or process_id is not None
    if not explicit:
        detected = _detected_cluster_processes()
        if detected is None or detected <= 1:
            return False
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(initialization_timeout=initialization_timeout)
        return True

    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes={num_processes}: expected >= 1")
    if num_processes == 1 and process_id in (None, 0):
        return False
    missing = [
        flag
        for flag, value in (
            ("--coordinator-address / JAX_COORDINATOR_ADDRESS", coordinator_address),
            ("--num-processes / JAX_NUM_PROCESSES", num_processes),
            ("--process-id / JAX_PROCESS_ID", process_id),
        )
        if value is None
    ]
    if missing:
        raise ValueError(
            "distributed initialization needs all of coordinator address, number of processes and "
            f"process id outside an auto-detected cluster; missing: {', '.join(missing)}"
        )
    if not re.fullmatch(r"\[?[\w.\-:]+\]?:\d+", coordinator_address):
        raise ValueError(
            f"coordinator_address={coordinator_address!r}: expected 'host:port', e.g. '10.0.0.1:1234'"
        )
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id={process_id} out of range for num_processes={num_processes} (0..{num_processes - 1})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
    )
    return True
