"""Whole splits as numpy arrays, with an on-disk cache that needs neither TensorFlow nor TFDS to read.

Cache layout: ``<data_dir>/spinal_jax_arrays/<name>/<split>.npz`` (``name`` may contain a ``/``, e.g.
``emnist/digits``), holding ``images`` (uint8 NHWC, upright), ``labels`` (int32) and ``meta`` (a JSON
string). It is written atomically (temporary file + ``os.replace``) the first time a split is read
through TFDS, by :func:`spinal_jax.data.prepare` for device-resident datasets, and by
:func:`export_arrays`; :func:`load_arrays` reads it first. To use a dataset on a machine without
TensorFlow/TFDS, run ``export_arrays(name, DIR)`` where TFDS works and carry ``DIR``; then pass
``data_dir=DIR`` (or set ``$TFDS_DATA_DIR=DIR``) there.
"""

from __future__ import annotations

import json
import os

import numpy as np

from spinal_jax.data import catalog
from spinal_jax.files import atomic_writer

CACHE_DIRNAME = "spinal_jax_arrays"
CACHE_FORMAT = 1


def cache_path(name: str, split: str, data_dir: str | os.PathLike | None = None) -> str:
    """Path of the array cache of ``name``/``split`` under ``data_dir``."""
    return os.path.join(catalog.default_data_dir(data_dir), CACHE_DIRNAME, *name.split("/"), f"{split}.npz")


def write_cache(path: str, images: np.ndarray, labels: np.ndarray, meta: dict) -> str:
    """Writes an array cache atomically (temp file in the same folder, then ``os.replace``)."""
    with atomic_writer(path) as f:
        np.savez_compressed(
            f,
            images=np.asarray(images, np.uint8),
            labels=np.asarray(labels, np.int32),
            meta=np.asarray(json.dumps({"format": CACHE_FORMAT, **meta})),
        )
    return path


def _read_npz(path: str) -> tuple[dict, np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta"])), z["images"], z["labels"]
    except Exception as e:
        raise ValueError(f"array cache {path} is unreadable ({e}); delete it and run prepare again") from e


def is_current(path: str, name: str) -> bool:
    """False for a cache of a package-built dataset (e.g. digits) written by another version of it."""
    if name not in catalog.BUILT_VERSIONS or not os.path.isfile(path):
        return True
    return _read_npz(path)[0].get("version") == catalog.BUILT_VERSIONS[name]


def read_cache(path: str, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads and checks an array cache; ValueError naming the file if it is not one of ours."""
    meta, images, labels = _read_npz(path)
    if meta.get("format") != CACHE_FORMAT or meta.get("name") != name or meta.get("split") != split:
        raise ValueError(f"array cache {path} holds {meta}, not {name!r}/{split!r}; delete it")
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (images.shape[0],):
        raise ValueError(f"array cache {path} has images {images.dtype}{images.shape}, labels {labels.shape}")
    return images, labels.astype(np.int32, copy=False)


def _check_split(i: catalog.DatasetInfo, split: str) -> None:
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string such as {i.train_split!r}, got {split!r}")
    if i.source != "folder" and split not in i.splits:
        raise ValueError(f"dataset {i.name!r} has no split {split!r}; its splits: {', '.join(i.splits)}")


def load_arrays(
    name: str, split: str, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The whole split ``split`` of dataset ``name`` as (images uint8 (N, H, W, C), labels int32 (N,)).

    Reads the array cache if present (no TensorFlow/TFDS import); otherwise reads the prepared TFDS
    dataset under ``data_dir`` (default $TFDS_DATA_DIR or ~/tensorflow_datasets) and writes the cache.
    ``digits`` is prepared on first use (offline). EMNIST images come out upright.
    Raises ValueError for an unknown name/split and DatasetNotFoundError (naming the ways to get the
    data) when the dataset is not prepared.
    """
    i = catalog.info(name)
    _check_split(i, split)
    path = cache_path(name, split, data_dir)
    if os.path.isfile(path) and is_current(path, name):
        return _check_channels(i, read_cache(path, name, split), path)
    from spinal_jax.data import builders

    meta = {"name": name, "split": split, "upright": True}
    if name in catalog.BUILT_VERSIONS:
        meta["version"] = catalog.BUILT_VERSIONS[name]
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        if name == "digits":  # the embedded default: straight from scikit-learn, same arrays as the builder
            images, labels = builders.digits_arrays(split)
            write_cache(path, images, labels, {**meta, "source": "sklearn"})
            return images, labels
        raise catalog.DatasetNotFoundError(
            f"dataset {name!r} split {split!r}: no array cache at {path} and tensorflow-datasets is not "
            f"installed; to get it: {catalog.how_to_get(name, data_dir)}"
        ) from None
    builder = builders.get_builder(name, data_dir)
    if not builders.is_prepared(builder):
        if name != "digits":
            raise catalog.DatasetNotFoundError(
                f"dataset {name!r} is not prepared in {catalog.default_data_dir(data_dir)}; to get it: "
                f"{catalog.how_to_get(name, data_dir)}"
            )
        builder.download_and_prepare()
    if i.source == "folder" and split not in builder.info.splits:
        raise ValueError(f"dataset {name!r} has no split {split!r}; prepared splits: {list(builder.info.splits)}")
    images, labels = _check_channels(i, builders.read_split(builder, split, transpose=i.transpose), builder.data_dir)
    write_cache(path, images, labels, {**meta, "source": "tfds"})
    return images, labels


def _check_channels(i: catalog.DatasetInfo, arrays: tuple[np.ndarray, np.ndarray], where: str) -> tuple:
    """ValueError if the images' channel count is not the catalog's (e.g. data prepared by an older version)."""
    c = arrays[0].shape[-1]
    if c != i.image_shape[-1]:
        raise ValueError(
            f"dataset {i.name!r} at {where} has {c}-channel images, the catalog expects {i.image_shape[-1]}; "
            f"it was prepared by an older version: delete it and run `spinal-jax prepare {i.name}` again"
        )
    return arrays


def export_arrays(
    name: str,
    out_dir: str | os.PathLike,
    splits: tuple[str, ...] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> list[str]:
    """Writes the array caches of ``splits`` (default: train and eval split) of ``name`` under ``out_dir``.

    ``out_dir`` then works as a ``data_dir`` for :func:`load_arrays` on a machine without TFDS/TF.
    Returns the written paths.
    """
    i = catalog.info(name)
    splits = splits or (i.train_split, i.eval_split)
    out = []
    for split in splits:
        images, labels = load_arrays(name, split, data_dir)
        dst = cache_path(name, split, out_dir)
        if os.path.abspath(dst) != os.path.abspath(cache_path(name, split, data_dir)):
            meta = {"name": name, "split": split, "upright": True, "source": "export"}
            if name in catalog.BUILT_VERSIONS:
                meta["version"] = catalog.BUILT_VERSIONS[name]
            write_cache(dst, images, labels, meta)
        out.append(dst)
    return out
