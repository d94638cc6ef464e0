"""Host streaming pipeline for datasets too large for the device (the transfer-learning sets), on grain.

A pure-Python path (no TensorFlow): a ``grain.MapDataset`` whose element j is batch j of the stream.
Building batch j reads its images by random access from the array cache (if present) or TFDS's
array_record ``data_source``, applies the :mod:`~spinal_jax.data.preprocess` transforms (PIL) to each
and stacks them. grain computes several batches at once: in ``num_threads`` threads of this process
(``num_workers=0``; PIL releases the GIL only in part, so this tops out at a few cores), or in
``num_workers`` spawned worker processes, each of which re-opens the source itself and computes every
``num_workers``-th batch with ``num_threads`` threads; batches come back in order. Deterministic and
independent of threads and workers: the order of epoch e is ``default_rng((seed, e))``'s permutation
(``arange`` without shuffling), batches never straddle two epochs (the last one of an epoch is partial
unless ``drop_remainder``), and image k (source index) of epoch e draws its random transform
parameters from ``default_rng((seed, e, k))``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from spinal_jax.data import arrays, catalog, preprocess
from spinal_jax.data.catalog import HostPreprocess


class _RandomAccess(Protocol):
    """What the pipeline reads: ``len`` and ``source[k] -> (uint8 HWC image, int label)``.

    It is pickled into each worker process when ``num_workers > 0`` and called from several threads.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, idx: int) -> tuple[np.ndarray, int]: ...


class _Source:
    """Random access to (uint8 HWC image, label) of one split of a catalog dataset.

    Opened (and checked) on construction; pickles as (name, split, data_dir) and re-opens lazily in
    the process that unpickles it, so each grain worker reads the files itself.
    """

    def __init__(self, name: str, split: str, data_dir: str | os.PathLike | None):
        self.name, self.split, self.data_dir = name, split, data_dir
        self._lock = threading.Lock()
        self._images = self._labels = self._ds = None
        self.cache = arrays.cache_path(name, split, data_dir)
        if not os.path.isfile(self.cache):
            self.cache = None
        self._open(check=True)
        self.n = len(self._labels) if self._labels is not None else len(self._ds)

    def _open(self, check: bool) -> None:
        if self.cache is not None:
            self._images, self._labels = arrays.read_cache(self.cache, self.name, self.split)
            self.transpose = False  # caches are upright already
            return
        from spinal_jax.data import builders

        builder = builders.get_builder(self.name, self.data_dir)
        if check:
            name = self.name
            if not builders.is_prepared(builder):
                raise catalog.DatasetNotFoundError(
                    f"dataset {name!r} is not prepared in {catalog.default_data_dir(self.data_dir)}; to get it: "
                    f"{catalog.how_to_get(name, self.data_dir)}"
                )
            fmt = builder.info.file_format
            if str(getattr(fmt, "value", fmt)) != "array_record":
                raise ValueError(
                    f"dataset {name!r} is stored as {fmt}; streaming reads array_record: prepare it with "
                    "spinal_jax.data.prepare (which writes array_record)"
                )
            if self.split not in builder.info.splits:
                raise ValueError(
                    f"dataset {name!r} has no split {self.split!r}; prepared: {list(builder.info.splits)}"
                )
        self.transpose = catalog.info(self.name).transpose
        self._ds = builder.as_data_source(split=self.split)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_lock", "_images", "_labels", "_ds"):
            del state[key]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._images = self._labels = self._ds = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int) -> tuple[np.ndarray, int]:
        if self._labels is None and self._ds is None:
            with self._lock:
                if self._labels is None and self._ds is None:
                    self._open(check=False)
        if self._labels is not None:
            return self._images[idx], int(self._labels[idx])
        ex = self._ds[int(idx)]
        im = np.asarray(ex["image"], dtype=np.uint8)
        if im.ndim == 2:
            im = im[..., None]
        if self.transpose:
            im = im.transpose(1, 0, 2)
        return im, int(ex["label"])


def stream(
    name: str,
    split: str,
    batch_size: int,
    preprocess_spec: HostPreprocess | None = None,
    *,
    seed: int = 0,
    shuffle: bool | None = None,
    epochs: int | None = 1,
    drop_remainder: bool = False,
    data_dir: str | os.PathLike | None = None,
    num_threads: int = 4,
    prefetch: int = 2,
    num_workers: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (images, labels int32) numpy batches of ``name``/``split``.

    ``preprocess_spec``: host transforms (e.g. ``info(name).train_preprocess``); None = raw uint8 images
    (which must then share one size). ``shuffle`` defaults to True for the dataset's train split.
    ``epochs=None`` repeats forever. Images are float32 when the spec normalises, else uint8.
    ``num_workers=0`` computes batches in ``num_threads`` threads of this process; ``num_workers=N``
    in N spawned worker processes, each with ``num_threads`` threads, which start on the first batch
    (a second or so; like any spawning code, a script needs the ``if __name__ == "__main__":`` guard)
    and pass batches through shared memory (/dev/shm). ``prefetch`` batches are kept ready (per
    worker). The batches do not depend on ``num_threads``, ``num_workers`` or ``prefetch``.
    Closing the generator (or dropping it) stops the threads and worker processes.
    """
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if epochs is not None and (not isinstance(epochs, int) or epochs <= 0):
        raise ValueError(f"epochs must be a positive int or None (forever), got {epochs!r}")
    if num_threads <= 0 or prefetch <= 0:
        raise ValueError(f"num_threads and prefetch must be positive, got {num_threads}, {prefetch}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(
            f"num_workers must be an int >= 0 (0 = threads in this process, N = N worker processes), "
            f"got {num_workers!r}"
        )
    i = catalog.info(name)
    _import_grain()
    source = _Source(name, split, data_dir)
    if shuffle is None:
        shuffle = split == i.train_split
    return _stream_source(
        source, batch_size, preprocess_spec, seed=seed, shuffle=shuffle, epochs=epochs,
        drop_remainder=drop_remainder, num_threads=num_threads, prefetch=prefetch, num_workers=num_workers,
    )


class _Batches:
    """``batch(j)``: batch j of the stream (epoch ``j // per_epoch``), as (images, labels int32).

    Picklable (grain ships it to worker processes) and safe to call from several threads.
    """

    def __init__(self, source: _RandomAccess, batch_size: int, spec: HostPreprocess | None, seed: int,
                 shuffle: bool, drop_remainder: bool):
        self.source, self.batch_size, self.spec, self.seed, self.shuffle = source, batch_size, spec, seed, shuffle
        self.n = len(source)
        self.per_epoch = self.n // batch_size if drop_remainder else -(-self.n // batch_size)
        self._order: tuple[int, np.ndarray] | None = None  # the last epoch's order (one tuple: atomic swap)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_order": None}

    def order(self, epoch: int) -> np.ndarray:
        cached = self._order
        if cached is not None and cached[0] == epoch:
            return cached[1]
        order = np.random.default_rng((self.seed, epoch)).permutation(self.n) if self.shuffle else np.arange(self.n)
        self._order = (epoch, order)
        return order

    def __call__(self, j: int, _element: Any = None) -> tuple[np.ndarray, np.ndarray]:
        epoch, b = divmod(int(j), self.per_epoch)
        idx = self.order(epoch)[b * self.batch_size : (b + 1) * self.batch_size]
        images, labels = [], []
        for k in idx:
            image, label = self.source[k]
            images.append(preprocess.apply(image, self.spec, np.random.default_rng((self.seed, epoch, int(k)))))
            labels.append(label)
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise ValueError(
                f"images of a batch differ in shape {sorted(shapes)}: give a preprocess spec that "
                "ends in a fixed size (resize to (h, w) or a crop)"
            )
        return np.stack(images), np.asarray(labels, np.int32)


def _stream_source(
    source: _RandomAccess,
    batch_size: int,
    spec: HostPreprocess | None,
    *,
    seed: int,
    shuffle: bool,
    epochs: int | None,
    drop_remainder: bool,
    num_threads: int,
    prefetch: int,
    num_workers: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The pipeline of :func:`stream` over any random-access ``source`` (arguments checked by the caller).

    With ``num_workers > 0`` the source must pickle (cloudpickle) and work in a spawned process.
    """
    grain = _import_grain()
    batches = _Batches(source, batch_size, spec, seed, shuffle, drop_remainder)
    if batches.per_epoch == 0 and epochs is None:
        raise ValueError(
            f"an epoch of {batches.n} images holds no batch of {batch_size} with drop_remainder=True, "
            "so epochs=None would wait forever: lower batch_size or set drop_remainder=False"
        )
    if batches.per_epoch == 0:
        num_workers = 0  # nothing to compute: start no processes
    if epochs is None:
        ds = grain.MapDataset.range(batches.per_epoch).repeat(None)
    else:
        ds = grain.MapDataset.range(batches.per_epoch * epochs)
    ds = ds.map_with_index(batches)  # the index is global (counts across epochs), the element unused
    if num_workers == 0:
        ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=num_threads + prefetch))
    else:
        ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=num_threads))
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=prefetch))
    gen = _iterate(ds, from_workers=num_workers > 0)
    _track(gen)
    return gen


_OPEN_STREAMS: weakref.WeakSet = weakref.WeakSet()
_exit_hook_registered = False


def _track(gen: Iterator) -> None:
    """Closes ``gen`` at interpreter exit if it is still open then.

    The hook is registered after grain's (and multiprocessing's) exit hooks, so it runs before them
    and before module teardown: an open worker stream would otherwise be torn down half-way (errors
    ignored in grain's finalizers, shared memory left to the resource tracker).
    """
    global _exit_hook_registered
    if not _exit_hook_registered:
        atexit.register(_close_open_streams)
        _exit_hook_registered = True
    _OPEN_STREAMS.add(gen)


def _close_open_streams() -> None:
    for gen in list(_OPEN_STREAMS):
        # ValueError: "generator already executing" (in another thread): left to grain's own exit hooks
        with contextlib.suppress(ValueError):
            gen.close()


def _import_grain() -> Any:
    try:
        import grain
    except ImportError as e:
        raise ImportError(
            "spinal_jax.data.stream runs on grain (Python >= 3.11): pip install 'grain>=0.2.18' "
            "(or the package's [data] extra)"
        ) from e
    _allow_unparsed_grain_flag()
    return grain


def _allow_unparsed_grain_flag() -> None:
    """Lets grain 0.2.18's ``mp_prefetch`` run in programs that do not parse absl flags.

    With a recent jaxlib it reads ``--grain_enable_multiprocess_worker_profiling`` through
    ``FlagHolder.value``, which raises UnparsedFlagAccessError before ``absl.app`` has parsed the
    command line (google/grain#1355, fixed after 0.2.18). Marking only that flag present makes it read
    its current value (the default, False), as grain does itself for its flags in worker processes.
    """
    from absl import flags

    name = "grain_enable_multiprocess_worker_profiling"
    if not flags.FLAGS.is_parsed() and name in flags.FLAGS:
        flags.FLAGS[name].present = True


def _iterate(ds: Any, from_workers: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    it = iter(ds)
    try:
        for batch in it:
            if from_workers:
                # grain's shared-memory arrays: copied out, so that the shared memory is released now
                # rather than whenever the caller drops the batch
                batch = np.array(batch[0]), np.array(batch[1])
            yield batch
            del batch
    finally:
        it.close()  # stops grain's threads / worker processes (also on an early close of this generator)
        del it
        if from_workers:
            _release_shared_memory()


def _release_shared_memory() -> None:
    """Unlinks the shared-memory batches that grain's closed iterators still hold, before returning.

    grain 0.2.18 keeps the last batch of each worker alive in a reference cycle (the traceback of its
    end-of-data StopIteration) and unlinks released batches on a daemon thread; a program that exits
    right after would leave both to the resource tracker ("leaked shared_memory objects" warnings).
    A collection frees the cycle; a no-op queued behind the unlinks returns once they have run.
    """
    import gc

    gc.collect()
    try:
        from grain._src.python.ipc.shared_memory_array import SharedMemoryArray
    except ImportError:  # another grain layout: nothing to wait for that we know of
        return
    pool = getattr(SharedMemoryArray, "_del_thread_pool", None)
    if pool is not None:
        pool.apply(int)
