"""TFDS paths of spinal_jax.data: the digits builder, offline Fashion-MNIST, mock_data for every catalog set."""

import gzip
import hashlib
import logging
import os
import struct
from unittest import mock

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from spinal_jax import data  # noqa: E402
from spinal_jax.data import arrays, builders, catalog, fashion_offline  # noqa: E402

DEBIAN = fashion_offline.DEBIAN_DIR


def _idx(path):
    """Independent IDX parse: magic, dims, then raw uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    assert zero == 0 and dtype == 0x08
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim :], np.uint8).reshape(dims)


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory):
    pytest.importorskip("tensorflow")
    if not fashion_offline.debian_available():
        pytest.skip("dataset-fashion-mnist (Debian) not installed")
    dd = tmp_path_factory.mktemp("tfds")
    counts = data.prepare("fashion_mnist", dd)
    return dd, counts


def test_restored_headers_match_tfds_checksums(tmp_path):
    if not fashion_offline.debian_available():
        pytest.skip("dataset-fashion-mnist not installed")
    paths = fashion_offline.write_manual_files(str(tmp_path))
    with open(os.path.join(os.path.dirname(tfds.__file__), "url_checksums", "fashion_mnist.txt")) as f:
        registered = {ln.split()[0].rsplit("/", 1)[1]: ln.split()[2] for ln in f if ln.strip()}
    for p in paths:
        with open(p, "rb") as f:
            raw = f.read()
        assert hashlib.sha256(raw).hexdigest() == registered[os.path.basename(p)]
        with open(os.path.join(DEBIAN, os.path.basename(p)), "rb") as f:
            assert gzip.decompress(raw) == gzip.decompress(f.read())
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temp files left


def test_fashion_mnist_offline(fashion_dir):
    dd, counts = fashion_dir
    assert counts == {"train": 60000, "test": 10000}
    for split, prefix, n in (("train", "train", 60000), ("test", "t10k", 10000)):
        x, y = data.load_arrays("fashion_mnist", split, dd)
        assert x.shape == (n, 28, 28, 1) and x.dtype == np.uint8 and y.dtype == np.int32
        assert np.bincount(y, minlength=10).tolist() == [n // 10] * 10
        ref_x = _idx(os.path.join(DEBIAN, f"{prefix}-images-idx3-ubyte.gz"))
        ref_y = _idx(os.path.join(DEBIAN, f"{prefix}-labels-idx1-ubyte.gz"))
        # TFDS stores the examples in its own (hashed) order: compare the full multisets of (image, label).
        got = sorted(hashlib.sha1(x[i].tobytes() + bytes([y[i]])).digest() for i in range(n))
        ref = sorted(hashlib.sha1(ref_x[i].tobytes() + bytes([ref_y[i]])).digest() for i in range(n))
        assert got == ref
        for k in (0, 1, n - 1):  # a few examples pixel for pixel
            hits = np.flatnonzero((x[:, :, :, 0] == ref_x[k]).all(axis=(1, 2)))
            assert len(hits) >= 1 and ref_y[k] in y[hits]
    assert os.path.isfile(arrays.cache_path("fashion_mnist", "train", dd))


def test_fashion_cache_read_without_tfds(fashion_dir, monkeypatch):
    dd, _ = fashion_dir
    import sys

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    x, y = data.load_arrays("fashion_mnist", "test", dd)
    assert x.shape == (10000, 28, 28, 1) and np.bincount(y).tolist() == [1000] * 10


def test_digits_builder(tmp_path):
    counts = data.prepare("digits", tmp_path)
    assert counts == {"train": 1437, "test": 360}
    b = builders.get_builder("digits", str(tmp_path))
    assert b.is_prepared() and str(b.info.file_format.value) == "array_record"
    os.remove(arrays.cache_path("digits", "test", tmp_path))
    x, y = data.load_arrays("digits", "test", tmp_path)  # read back through tfds.data_source
    ex, ey = builders.digits_arrays("test")
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)


def test_interrupted_prepare_leaves_nothing_prepared(tmp_path, monkeypatch):
    real = builders.digits_arrays

    def interrupted(split):
        if split == "test":
            raise KeyboardInterrupt("simulated interruption")
        return real(split)

    monkeypatch.setattr(builders, "digits_arrays", interrupted)
    with pytest.raises(KeyboardInterrupt):
        data.prepare("digits", tmp_path)
    assert not builders.get_builder("digits", str(tmp_path)).is_prepared()
    assert not os.path.exists(tmp_path / "digits" / "1.0.0")
    assert not os.path.exists(tmp_path / "spinal_jax_arrays")
    monkeypatch.undo()
    assert data.prepare("digits", tmp_path) == {"train": 1437, "test": 360}


def test_not_prepared_error_names_the_ways(tmp_path, caplog):
    with pytest.raises(data.DatasetNotFoundError, match=r"'kmnist' is not prepared.*spinal-jax prepare kmnist"):
        data.load_arrays("kmnist", "train", tmp_path)
    # TFDS's own warning about the folder is dropped (the error says what to do); other absl warnings pass.
    assert not [r for r in caplog.records if "Variant folder" in r.getMessage()]
    logging.getLogger("absl").warning("another TFDS warning")
    assert "another TFDS warning" in caplog.text


TFDS_NAMES = [n for n in data.names() if data.info(n).source == "tfds"]


@pytest.mark.parametrize("name", TFDS_NAMES)
def test_mock_data_every_catalog_dataset(name, tmp_path):
    pytest.importorskip("tensorflow")
    i = data.info(name)
    with tfds.testing.mock_data(num_examples=3), mock.patch.object(
        tfds.core.DatasetBuilder, "is_prepared", return_value=True
    ):
        raw = tfds.as_numpy(tfds.builder(i.tfds_name).as_dataset(split="train", as_supervised=True))
        raw = list(raw)
        if None in i.image_shape:  # varying sizes: load_arrays refuses only if shapes differ
            shapes = {im.shape for im, _ in raw}
            if len(shapes) > 1:
                with pytest.raises(ValueError, match="differ in size"):
                    data.load_arrays(name, "train", tmp_path)
                return
        x, y = data.load_arrays(name, "train", tmp_path)
    assert x.dtype == np.uint8 and y.dtype == np.int32 and x.ndim == 4 and len(x) == 3
    if None not in i.image_shape:
        assert x.shape[1:] == i.image_shape
    ref = np.stack([im for im, _ in raw])
    if i.transpose:
        ref = ref.transpose(0, 2, 1, 3)
        assert not np.array_equal(x, np.stack([im for im, _ in raw]))
    np.testing.assert_array_equal(x, ref)  # EMNIST handed out upright (transposed back)
    np.testing.assert_array_equal(y, [lbl for _, lbl in raw])
    assert (y >= 0).all() and (y < i.num_classes).all()
    assert os.path.isfile(arrays.cache_path(name, "train", tmp_path))
    assert catalog.info(name).tfds_name == name
