"""Datasets of the SpinalNet grid (ORIGINAL.md §2, §4): TFDS catalog sets, folder sets, ``digits``.

Public API:
- ``load_arrays(name, split, data_dir=None) -> (images uint8 NHWC, labels int32)``
- ``info(name) -> DatasetInfo``, ``names() -> list[str]``
- ``prepare(name, data_dir=None, *, source_dir=None, write_cache=None) -> {split: count}``
- ``export_arrays(name, out_dir, splits=None, data_dir=None) -> [paths]`` (carry to machines without TF)
- ``stream(name, split, batch_size, preprocess=None, *, seed=0, ...)`` host streaming pipeline
- ``synthetic.regression_data(kind, ...)`` the §2.8 regression toy data

Importing this package imports neither TensorFlow nor TFDS.
"""

from spinal_jax.data.arrays import cache_path, export_arrays, load_arrays
from spinal_jax.data.catalog import (
    DatasetInfo,
    DatasetNotFoundError,
    HostPreprocess,
    default_data_dir,
    info,
    names,
)
from spinal_jax.data.prepare import prepare
from spinal_jax.data.streaming import stream

__all__ = [
    "DatasetInfo",
    "DatasetNotFoundError",
    "HostPreprocess",
    "cache_path",
    "default_data_dir",
    "export_arrays",
    "info",
    "load_arrays",
    "names",
    "prepare",
    "stream",
]
