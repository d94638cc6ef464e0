"""TFDS builders of this package (digits, folder datasets) and the TFDS read path. Imports TFDS lazily."""

from __future__ import annotations

import functools
import logging
import os
import re
from typing import Any

import numpy as np

from spinal_jax.data import catalog

DIGITS_TRAIN = 1437  # 1,437 of sklearn's 1,797 digits are train, 360 test (a stratified 80/20 split)
DIGITS_SPLIT_SEED = 0


def digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as (uint8 (N, 8, 8, 1) in 0..255, int32 labels); split "train" / "test".

    Pixels 0..16 are scaled by round(v * 255 / 16). The split is fixed: a stratified 80/20 split drawn
    with numpy seed 0 (36 test images per class; 1,437 train, 360 test), each part in sklearn's order.
    A sequential split (last 360 as test) is avoided on purpose: sklearn ships the digits grouped by
    writer, so the last 360 come from writers unseen in training and measure writer shift instead.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split {split!r} of digits: use 'train' or 'test'")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise catalog.DatasetNotFoundError(
            "dataset 'digits' needs scikit-learn (pip install scikit-learn) or a cache: "
            + catalog.how_to_get("digits")
        ) from e
    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = d.target.astype(np.int32)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    is_test = np.zeros(len(labels), dtype=bool)
    per_class = (len(labels) - DIGITS_TRAIN) // 10
    for c in range(10):
        is_test[rng.choice(np.flatnonzero(labels == c), per_class, replace=False)] = True
    keep = is_test if split == "test" else ~is_test
    return images[keep], labels[keep]


def _drop_missing_variant_warning(record: logging.LogRecord) -> bool:
    """TFDS warns "Variant folder DIR has no dataset_info.json" (or features.json) whenever a builder looks for
    a dataset that is not (fully) prepared; spinal_jax checks that itself and says how to prepare, so that
    warning goes (TFDS's other warnings stay)."""
    return not str(record.msg).startswith("Variant folder %s has no ")


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "tensorflow-datasets is not installed: pip install 'spinal_jax[data]' (or read datasets from a "
            "cache written by spinal_jax.data.export_arrays)"
        ) from e
    absl_logger = logging.getLogger("absl")
    if _drop_missing_variant_warning not in absl_logger.filters:
        absl_logger.addFilter(_drop_missing_variant_warning)
    return tfds


@functools.cache
def _digits_cls() -> type:
    tfds = _tfds()

    class DigitsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """scikit-learn's 8x8 digits (offline): see :func:`digits_arrays`."""

        name = "digits"
        VERSION = tfds.core.Version(catalog.BUILT_VERSIONS["digits"])
        RELEASE_NOTES = {  # noqa: RUF012
            "1.0.0": "First 1,437 images train, last 360 test.",
            "1.1.0": "Stratified 80/20 split (numpy seed 0, 36 test images per class).",
        }

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description="scikit-learn's bundled 8x8 handwritten digits, pixels scaled 0..16 -> 0..255.",
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                        "label": tfds.features.ClassLabel(num_classes=10),
                    }
                ),
                supervised_keys=("image", "label"),
                disable_shuffling=True,  # keep the generator's order (sklearn's / sorted paths)
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {s: self._generate_examples(s) for s in ("train", "test")}

        def _generate_examples(self, split):
            images, labels = digits_arrays(split)
            for i in range(len(labels)):
                yield i, {"image": images[i], "label": int(labels[i])}

    return DigitsBuilder


@functools.cache
def _folder_cls(name: str) -> type:
    from spinal_jax.data import folders

    tfds = _tfds()
    channels = catalog.info(name).image_shape[-1]

    class FolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """Images in ImageFolder layout <source_dir>/<split>/<class>/<image>."""

        VERSION = tfds.core.Version(catalog.BUILT_VERSIONS.get(name, "1.0.0"))
        source_dir: str | None = None

        def _info(self):
            classes = folders.scan(self.source_dir).classes if self.source_dir else None
            if classes is None:
                raise ValueError(f"building {self.name} needs source_dir")
            return tfds.core.DatasetInfo(
                builder=self,
                description=f"{self.name} from an ImageFolder-layout folder.",
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(None, None, channels)),
                        "label": tfds.features.ClassLabel(names=classes),
                    }
                ),
                supervised_keys=("image", "label"),
                disable_shuffling=True,  # keep the generator's order (sklearn's / sorted paths)
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            layout = folders.scan(self.source_dir)
            return {s: self._generate_examples(layout.files[s]) for s in layout.files}

        def _generate_examples(self, files):
            for key, (path, label) in enumerate(files):
                yield key, {"image": folders.load_image(path, channels), "label": label}

    FolderBuilder.name = name.lower()
    return FolderBuilder


def get_builder(name: str, data_dir: str | None = None, *, source_dir: str | None = None,
                file_format: str | None = None) -> Any:
    """The TFDS builder of catalog dataset ``name`` under ``data_dir`` (default: see ``default_data_dir``)."""  # fmt: skip
    i = catalog.info(name)
    tfds = _tfds()
    dd = catalog.default_data_dir(data_dir)
    if i.source == "tfds":
        kw = {"file_format": file_format} if file_format else {}
        return tfds.builder(i.tfds_name, data_dir=dd, **kw)
    if i.source == "builder":
        return _digits_cls()(data_dir=dd, file_format="array_record")
    cls = _folder_cls(name)
    if source_dir is None:
        # Reading a prepared folder dataset: restore the builder from its own metadata.
        path = os.path.join(dd, cls.name)
        if os.path.isdir(path) and any(os.scandir(path)):
            try:
                return tfds.builder_from_directory(_latest_version_dir(path))
            except Exception:
                pass
        return None
    b_cls = type(cls.__name__, (cls,), {"source_dir": os.fspath(source_dir), "name": cls.name},
                 skip_registration=True)  # fmt: skip
    return b_cls(data_dir=dd, file_format="array_record")


def _latest_version_dir(path: str) -> str:
    versions = sorted(
        (d for d in os.listdir(path) if re.fullmatch(r"\d+\.\d+\.\d+", d) and os.path.isdir(os.path.join(path, d))),
        key=lambda v: tuple(int(p) for p in v.split(".")),
    )
    if not versions:
        raise FileNotFoundError(path)
    return os.path.join(path, versions[-1])


def is_prepared(builder: Any) -> bool:
    """Whether the builder's data are fully prepared (TFDS only marks a finished preparation)."""
    return builder is not None and bool(builder.is_prepared())


def read_split(builder: Any, split: str, *, transpose: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A whole prepared split as (uint8 NHWC images, int32 labels).

    array_record data go through ``builder.as_data_source`` (no TensorFlow needed); tfrecord data through
    ``tfds.as_numpy(builder.as_dataset(batch_size=-1))`` (needs TensorFlow). Images must share one shape.
    """
    tfds = _tfds()
    fmt = builder.info.file_format
    if fmt is not None and str(getattr(fmt, "value", fmt)) == "array_record":
        source = builder.as_data_source(split=split)
        n = len(source)
        examples = []
        for start in range(0, n, 4096):
            examples.extend(source.__getitems__(list(range(start, min(n, start + 4096)))))
        images = [np.asarray(ex["image"]) for ex in examples]
        labels = np.asarray([int(ex["label"]) for ex in examples], dtype=np.int32)
    else:  # tfrecord (e.g. prepared elsewhere by tfds.load): needs TensorFlow
        pairs = list(tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True)))
        images = [np.asarray(im) for im, _ in pairs]
        labels = np.asarray([int(lbl) for _, lbl in pairs], dtype=np.int32)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(
            f"{builder.name} split {split!r}: images differ in size ({len(shapes)} shapes); read it with "
            "spinal_jax.data.stream(name, split, batch_size, preprocess) which resizes them"
        )
    if not images:
        raise ValueError(f"{builder.name} split {split!r} is empty")
    images = np.stack(images)
    if images.ndim == 3:
        images = images[..., None]
    if transpose:
        images = np.ascontiguousarray(images.transpose(0, 2, 1, 3))
    return images.astype(np.uint8, copy=False), labels
