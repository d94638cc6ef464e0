"""spinal_jax.data: catalog, array cache, digits, errors, synthetic data (fast; TFDS parts skip without it)."""

import os
import sys

import numpy as np
import pytest

from spinal_jax import data
from spinal_jax.data import arrays, builders, catalog, synthetic


def test_import_does_not_import_tensorflow():
    import subprocess

    code = "import sys, spinal_jax.data; print('tensorflow' in sys.modules, 'tensorflow_datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_catalog_names_and_info():
    expected = {"mnist", "fashion_mnist", "kmnist", "emnist/digits", "emnist/letters", "emnist/balanced",
                "cifar10", "cifar100", "stl10", "svhn_cropped", "caltech101", "oxford_flowers102", "cars196",
                "qmnist", "bird225", "fruits360", "cinic10", "hymenoptera", "monkeys10", "digits"}  # fmt: skip
    assert set(data.names()) == expected
    fm = data.info("fashion_mnist")
    assert (fm.num_classes, fm.image_shape, fm.normalization, fm.resident) == (10, (28, 28, 1), ((0.5,), (0.5,)), True)
    assert data.info("emnist/letters").transpose and not data.info("mnist").transpose
    assert data.info("oxford_flowers102").eval_split == "validation"
    assert not data.info("cars196").resident and data.info("cars196").train_preprocess.crop == (448, 448)
    for n in data.names():
        i = data.info(n)
        assert i.train_split in i.splits and i.eval_split in i.splits


def test_unknown_name_and_split_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset name 'nope'.*fashion_mnist"):
        data.load_arrays("nope", "train", tmp_path)
    with pytest.raises(ValueError, match=r"no split 'validation'.*train, test"):
        data.load_arrays("mnist", "validation", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset name"):
        data.prepare("nope", tmp_path)


def _sklearn_digits():
    sk = pytest.importorskip("sklearn.datasets")
    d = sk.load_digits()
    return np.rint(d.images * 255.0 / 16.0).astype(np.uint8)[..., None], d.target


def test_digits_arrays_split_and_scaling():
    images, labels = _sklearn_digits()
    tr_x, tr_y = builders.digits_arrays("train")
    te_x, te_y = builders.digits_arrays("test")
    assert tr_x.shape == (1437, 8, 8, 1) and te_x.shape == (360, 8, 8, 1) and tr_x.dtype == np.uint8
    # A stratified split: 36 test images of each class; train and test together are sklearn's digits.
    assert np.bincount(te_y, minlength=10).tolist() == [36] * 10
    both = np.concatenate([tr_x, te_x]).reshape(len(labels), -1)
    order = np.lexsort(both.T[::-1])
    ref_order = np.lexsort(images.reshape(len(labels), -1).T[::-1])
    np.testing.assert_array_equal(both[order], images.reshape(len(labels), -1)[ref_order])
    np.testing.assert_array_equal(np.concatenate([tr_y, te_y])[order], labels[ref_order])
    assert tr_x.max() == 255
    # Deterministic: the same split every call.
    np.testing.assert_array_equal(builders.digits_arrays("test")[1], te_y)


def test_digits_without_tfds_uses_sklearn_and_cache(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails like on the GPU machine
    x, y = data.load_arrays("digits", "test", tmp_path)
    ex, ey = builders.digits_arrays("test")
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
    assert y.dtype == np.int32
    assert os.path.isfile(arrays.cache_path("digits", "test", tmp_path))
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    x2, _ = data.load_arrays("digits", "test", tmp_path)  # now from the cache alone
    np.testing.assert_array_equal(x2, ex)


def test_missing_dataset_error_without_tfds(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(data.DatasetNotFoundError, match=r"fashion_mnist.*spinal-jax prepare fashion_mnist.*apt-get install dataset-fashion-mnist"):
        data.load_arrays("fashion_mnist", "train", tmp_path)
    with pytest.raises(data.DatasetNotFoundError, match=r"bird225.*<split>/<class>/<image>"):
        data.load_arrays("bird225", "train", tmp_path)


def test_data_dir_defaults_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert data.cache_path("emnist/digits", "train") == str(tmp_path / "spinal_jax_arrays/emnist/digits/train.npz")
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert data.default_data_dir() == os.path.expanduser("~/tensorflow_datasets")


def test_cache_write_is_atomic_and_checked(tmp_path, monkeypatch):
    path = arrays.cache_path("digits", "train", tmp_path)
    x = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8, 1)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(KeyboardInterrupt):
        arrays.write_cache(path, x, [1, 2], {"name": "digits", "split": "train"})
    assert os.listdir(os.path.dirname(path)) == []
    monkeypatch.undo()
    current = {"name": "digits", "split": "train", "version": catalog.BUILT_VERSIONS["digits"]}
    arrays.write_cache(path, x, [1, 2], current)
    gx, gy = data.load_arrays("digits", "train", tmp_path)
    np.testing.assert_array_equal(gx, x)
    assert gy.tolist() == [1, 2]
    with pytest.raises(ValueError, match="not 'digits'/'test'"):
        arrays.read_cache(path, "digits", "test")
    with open(path, "wb") as f:
        f.write(b"garbage")
    with pytest.raises(ValueError, match="unreadable"):
        data.load_arrays("digits", "train", tmp_path)


def test_export_arrays(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    paths = data.export_arrays("digits", tmp_path / "out", data_dir=tmp_path / "src")
    assert [os.path.basename(p) for p in paths] == ["train.npz", "test.npz"]
    x, _ = data.load_arrays("digits", "train", tmp_path / "out")
    assert x.shape == (1437, 8, 8, 1)


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_regression_data(kind):
    x, y = synthetic.regression_data(kind)
    assert x.shape == (1000, 8) and y.shape == (1000, 1) and x.dtype == np.float32
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(x, rng.standard_normal((1000, 8)), rtol=1e-6)
    x64 = x.astype(np.float64)
    f = {"multiplication": np.prod(x64, 1), "addition": np.sum(x64, 1)}
    f["sine_multiplication"], f["sine_addition"] = np.sin(f["multiplication"]), np.sin(f["addition"])
    noise = y[:, 0] - f[kind]
    assert noise.min() >= -1e-5 and noise.max() <= 0.2 + 1e-5 and noise.std() > 0.04  # per-sample 0.2*U(0,1)
    with pytest.raises(ValueError, match="kind must be one of"):
        synthetic.regression_data("division")


def test_stale_digits_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    path = arrays.cache_path("digits", "test", tmp_path)
    stale = np.zeros((3, 8, 8, 1), np.uint8)
    arrays.write_cache(path, stale, [0, 1, 2], {"name": "digits", "split": "test", "version": "1.0.0"})
    _, y = data.load_arrays("digits", "test", tmp_path)
    np.testing.assert_array_equal(y, builders.digits_arrays("test")[1])
    assert arrays.is_current(path, "digits")
