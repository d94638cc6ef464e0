"""``prepare(name, data_dir)``: build a catalog dataset with TFDS and write its array cache.

- Stock TFDS datasets: ``download_and_prepare`` (array_record format, so the data can later be read
  without TensorFlow through ``tfds.data_source``). For ``fashion_mnist`` with Debian's
  ``dataset-fashion-mnist`` installed, the original files are restored into TFDS's manual directory
  ``<data_dir>/downloads/manual/`` first and the stock builder takes them from there, with no network.
- ``digits``: this package's builder (scikit-learn's digits, offline).
- Folder datasets: images from ``source_dir`` (default ``<data_dir>/downloads/manual/<name>``).

TFDS writes into a temporary directory and renames it when done; the array caches are written
atomically too, so an interrupted preparation leaves nothing that passes for prepared.
"""

from __future__ import annotations

import os

from spinal_jax.data import arrays, builders, catalog, fashion_offline, folders


def prepare(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    source_dir: str | os.PathLike | None = None,
    write_cache: bool | None = None,
) -> dict[str, int]:
    """Prepares dataset ``name`` under ``data_dir`` (default $TFDS_DATA_DIR or ~/tensorflow_datasets).

    ``source_dir``: folder datasets only, the ImageFolder root. ``write_cache``: write the array caches of
    all splits (default: for device-resident datasets). Returns {split: number of examples}.
    """
    i = catalog.info(name)
    dd = catalog.default_data_dir(data_dir)
    if source_dir is not None and i.source != "folder":
        raise ValueError(f"source_dir is only for folder datasets, not for {name!r}")
    if i.source == "folder":
        src = os.fspath(source_dir) if source_dir is not None else catalog.folder_source_dir(name, dd)
        if not os.path.isdir(src):
            raise catalog.DatasetNotFoundError(
                f"no images for dataset {name!r} at {src}; to get it: {catalog.how_to_get(name, dd)}"
            )
        folders.scan(src)  # clear errors before TFDS starts
        builder = builders.get_builder(name, dd, source_dir=src)
        builder.download_and_prepare()
    elif i.source == "builder":
        builder = builders.get_builder(name, dd)
        builder.download_and_prepare()
    else:
        import tensorflow_datasets as tfds

        builder = builders.get_builder(name, dd, file_format="array_record")
        manual_dir = os.path.join(dd, "downloads", "manual")
        if name == "fashion_mnist" and not builder.is_prepared() and fashion_offline.debian_available():
            fashion_offline.write_manual_files(manual_dir)
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
            )
        except Exception as e:
            raise catalog.DatasetNotFoundError(
                f"preparing dataset {name!r} failed: {type(e).__name__}: {e}\nto get it: "
                f"{catalog.how_to_get(name, dd)}"
            ) from e
    counts = {s: int(v.num_examples) for s, v in builder.info.splits.items()}
    if write_cache if write_cache is not None else i.resident:
        for split in counts:
            path = arrays.cache_path(name, split, dd)
            if not (os.path.isfile(path) and arrays.is_current(path, name)):
                images, labels = builders.read_split(builder, split, transpose=i.transpose)
                meta = {"name": name, "split": split, "upright": True, "source": "tfds"}
                if name in catalog.BUILT_VERSIONS:
                    meta["version"] = catalog.BUILT_VERSIONS[name]
                arrays.write_cache(path, images, labels, meta)
    return counts
