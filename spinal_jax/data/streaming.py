"""Host streaming pipeline for datasets too large for the device (the transfer-learning sets).

A pure-Python path: random access into the array cache (if present) or TFDS's array_record
``data_source`` (no TensorFlow needed), per-image decoding and :mod:`~spinal_jax.data.preprocess`
transforms in a thread pool (PIL releases the GIL), batching, and a background thread that keeps
``prefetch`` batches ready. Deterministic: the order of epoch e is ``default_rng((seed, e))``'s
permutation and image i of epoch e draws its random transform parameters from
``default_rng((seed, e, i))``, independent of threading.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from spinal_jax.data import arrays, catalog, preprocess
from spinal_jax.data.catalog import HostPreprocess


class _Source:
    """Random access to (uint8 HWC image, label) of one split."""

    def __init__(self, name: str, split: str, data_dir):
        i = catalog.info(name)
        self.transpose = i.transpose
        path = arrays.cache_path(name, split, data_dir)
        self.images = self.labels = self.ds = None
        if os.path.isfile(path):
            self.images, self.labels = arrays.read_cache(path, name, split)
            self.transpose = False  # caches are upright already
            self.n = len(self.labels)
            return
        from spinal_jax.data import builders

        builder = builders.get_builder(name, data_dir)
        if not builders.is_prepared(builder):
            raise catalog.DatasetNotFoundError(
                f"dataset {name!r} is not prepared in {catalog.default_data_dir(data_dir)}; to get it: "
                f"{catalog.how_to_get(name, data_dir)}"
            )
        fmt = builder.info.file_format
        if str(getattr(fmt, "value", fmt)) != "array_record":
            raise ValueError(
                f"dataset {name!r} is stored as {fmt}; streaming reads array_record: prepare it with "
                "spinal_jax.data.prepare (which writes array_record)"
            )
        if split not in builder.info.splits:
            raise ValueError(f"dataset {name!r} has no split {split!r}; prepared: {list(builder.info.splits)}")
        self.ds = builder.as_data_source(split=split)
        self.n = len(self.ds)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int) -> tuple[np.ndarray, int]:
        if self.images is not None:
            return self.images[idx], int(self.labels[idx])
        ex = self.ds[int(idx)]
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
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (images, labels) numpy batches of ``name``/``split``.

    ``preprocess_spec``: host transforms (e.g. ``info(name).train_preprocess``); None = raw uint8 images
    (which must then share one size). ``shuffle`` defaults to True for the dataset's train split.
    ``epochs=None`` repeats forever. Images are float32 when the spec normalises, else uint8.
    """
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if epochs is not None and (not isinstance(epochs, int) or epochs <= 0):
        raise ValueError(f"epochs must be a positive int or None (forever), got {epochs!r}")
    if num_threads <= 0 or prefetch <= 0:
        raise ValueError(f"num_threads and prefetch must be positive, got {num_threads}, {prefetch}")
    i = catalog.info(name)
    source = _Source(name, split, data_dir)
    if shuffle is None:
        shuffle = split == i.train_split
    return _generate(source, batch_size, preprocess_spec, seed, shuffle, epochs, drop_remainder, num_threads, prefetch)


_END = object()


def _batches(source, batch_size, spec, seed, shuffle, epochs, drop_remainder, pool):
    epoch = 0
    n = len(source)
    while epochs is None or epoch < epochs:
        order = np.random.default_rng((seed, epoch)).permutation(n) if shuffle else np.arange(n)
        stop = n - n % batch_size if drop_remainder else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]

            def one(k, epoch=epoch):
                image, label = source[k]
                out = preprocess.apply(image, spec, np.random.default_rng((seed, epoch, int(k))))
                return out, label

            results = list(pool.map(one, idx))
            shapes = {r[0].shape for r in results}
            if len(shapes) > 1:
                raise ValueError(
                    f"images of a batch differ in shape {sorted(shapes)}: give a preprocess spec that "
                    "ends in a fixed size (resize to (h, w) or a crop)"
                )
            yield np.stack([r[0] for r in results]), np.asarray([r[1] for r in results], np.int32)
        epoch += 1


def _generate(source, batch_size, spec, seed, shuffle, epochs, drop_remainder, num_threads, prefetch):
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def producer():
        try:
            with ThreadPoolExecutor(num_threads) as pool:
                for batch in _batches(source, batch_size, spec, seed, shuffle, epochs, drop_remainder, pool):
                    if not put(batch):
                        return
            put(_END)
        except BaseException as e:  # handed to the consumer
            put(e)

    thread = threading.Thread(target=producer, daemon=True, name="spinal_jax-stream")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
