"""Folder datasets (ImageFolder layout) and the host streaming path, on tiny generated data."""

import os

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets")

from spinal_jax import data  # noqa: E402
from spinal_jax.data import HostPreprocess, builders, preprocess  # noqa: E402


def _write(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture
def qmnist_src(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    expected = {}
    for split, n in (("train", 2), ("test", 1)):
        for cls in ("10", "2", "0"):  # lexicographic: "0" < "10" < "2"
            for k in range(n):
                arr = rng.integers(0, 256, (28, 28), dtype=np.uint8)  # grayscale
                p = str(src / split / cls / f"img{k}.png")
                # one image stored as RGB with equal channels: read back as the same grey values
                _write(p, np.repeat(arr[..., None], 3, axis=-1) if (split, cls, k) == ("train", "2", 1) else arr)
                expected[p] = (arr, cls)
    return src, expected


def test_folder_dataset_roundtrip(qmnist_src, tmp_path):
    src, expected = qmnist_src
    counts = data.prepare("qmnist", tmp_path / "dd", source_dir=src)
    assert counts == {"train": 6, "test": 3}
    os.remove(data.cache_path("qmnist", "train", tmp_path / "dd"))  # read back through TFDS
    x, y = data.load_arrays("qmnist", "train", tmp_path / "dd")
    # QMNIST is grayscale (torchvision's QMNIST class), unlike ImageFolder's RGB
    assert x.shape == (6, 28, 28, 1) and x.dtype == np.uint8
    assert data.info("qmnist").image_shape == (28, 28, 1)
    classes = ["0", "10", "2"]
    train = sorted((p, v) for p, v in expected.items() if "/train/" in p)
    for k, (_, (arr, cls)) in enumerate(sorted(train, key=lambda t: (classes.index(t[1][1]), t[0]))):
        np.testing.assert_array_equal(x[k], arr[..., None])
        assert y[k] == classes.index(cls)
    x2, _ = data.load_arrays("qmnist", "train", tmp_path / "dd")  # from the cache
    np.testing.assert_array_equal(x2, x)
    with pytest.raises(ValueError, match="no split 'valid'"):
        data.load_arrays("qmnist", "valid", tmp_path / "dd")


def test_stale_rgb_qmnist_cache_is_rejected(tmp_path):
    from spinal_jax.data import arrays, catalog

    path = data.cache_path("qmnist", "test", tmp_path)
    meta = {"name": "qmnist", "split": "test", "upright": True, "version": catalog.BUILT_VERSIONS["qmnist"]}
    arrays.write_cache(path, np.zeros((2, 28, 28, 3), np.uint8), np.zeros(2, np.int32), meta)
    with pytest.raises(ValueError, match=r"3-channel images, the catalog expects 1.*prepare qmnist"):
        data.load_arrays("qmnist", "test", tmp_path)


def test_folder_errors(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match=r"hymenoptera.*<split>/<class>/<image>"):
        data.prepare("hymenoptera", tmp_path / "dd", source_dir=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        data.prepare("hymenoptera", tmp_path / "dd", source_dir=tmp_path / "empty")
    (tmp_path / "noimg" / "train" / "ants").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        data.prepare("hymenoptera", tmp_path / "dd", source_dir=tmp_path / "noimg")
    bad = tmp_path / "bad" / "train" / "ants"
    _write(str(bad / "ok.png"), np.zeros((4, 4, 3), np.uint8))
    (bad / "broken.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"cannot decode image file .*broken\.jpg"):
        data.prepare("hymenoptera", tmp_path / "dd", source_dir=tmp_path / "bad")
    assert not builders.is_prepared(builders.get_builder("hymenoptera", str(tmp_path / "dd")))


@pytest.fixture
def hymenoptera_dd(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    for split in ("train", "val"):
        for cls in ("ants", "bees"):
            for k in range(3):
                h, w = (20 + 3 * k, 30 - 2 * k)
                _write(str(src / split / cls / f"{k}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    dd = tmp_path / "dd"
    assert data.prepare("hymenoptera", dd, source_dir=src) == {"train": 6, "val": 6}
    return dd


def test_varying_sizes_need_stream(hymenoptera_dd):
    with pytest.raises(ValueError, match=r"differ in size.*stream"):
        data.load_arrays("hymenoptera", "train", hymenoptera_dd)


def test_stream_folder_dataset(hymenoptera_dd):
    spec = HostPreprocess(resize=(16, 16), rotate=10.0, crop=(12, 12), hflip=True, normalize=((0.5,) * 3, (0.25,) * 3))
    batches = list(data.stream("hymenoptera", "train", 4, spec, seed=3, data_dir=hymenoptera_dd))
    assert [b[0].shape for b in batches] == [(4, 12, 12, 3), (2, 12, 12, 3)]
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.int32
    assert sorted(np.concatenate([b[1] for b in batches]).tolist()) == [0, 0, 0, 1, 1, 1]
    again = list(data.stream("hymenoptera", "train", 4, spec, seed=3, data_dir=hymenoptera_dd, num_threads=1))
    # worker processes re-open the TFDS array_record data source themselves
    workers = list(data.stream("hymenoptera", "train", 4, spec, seed=3, data_dir=hymenoptera_dd, num_workers=2))
    for a, b, c in zip(batches, again, workers, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], c[0])
        np.testing.assert_array_equal(a[1], c[1])
    other = next(iter(data.stream("hymenoptera", "train", 4, spec, seed=4, data_dir=hymenoptera_dd)))
    assert not np.array_equal(other[0], batches[0][0])
    with pytest.raises(ValueError, match="differ in shape"):
        list(data.stream("hymenoptera", "val", 6, None, data_dir=hymenoptera_dd))


def test_stream_from_cache_epochs_and_errors(tmp_path, monkeypatch):
    import sys

    with monkeypatch.context() as mp:  # (patch.dict would also drop the modules imported meanwhile)
        mp.setitem(sys.modules, "tensorflow_datasets", None)
        x, y = data.load_arrays("digits", "test", tmp_path)  # writes the cache
    it = data.stream("digits", "test", 100, None, seed=0, epochs=2, drop_remainder=True, data_dir=tmp_path, shuffle=True)
    batches = list(it)
    assert len(batches) == 6 and all(b[0].shape == (100, 8, 8, 1) for b in batches)
    e0 = np.concatenate([b[1] for b in batches[:3]])
    order = np.random.default_rng((0, 0)).permutation(360)[:300]
    np.testing.assert_array_equal(e0, y[order])
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches[:3]]), x[order])
    unshuffled = list(data.stream("digits", "test", 360, None, data_dir=tmp_path))
    np.testing.assert_array_equal(unshuffled[0][0], x)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        data.stream("digits", "test", 0, data_dir=tmp_path)
    with pytest.raises(ValueError, match="epochs"):
        data.stream("digits", "test", 10, epochs=0, data_dir=tmp_path)
    gen = data.stream("digits", "test", 10, None, epochs=None, data_dir=tmp_path)
    next(gen)
    gen.close()  # stops the background thread


def test_host_preprocess_against_direct_computation():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
    r = np.random.default_rng(5)
    np.testing.assert_array_equal(preprocess.apply(img, HostPreprocess(rotate=0.0), r), img)
    flips = {preprocess.apply(img, HostPreprocess(hflip=True), np.random.default_rng(s)).tobytes() for s in range(20)}
    assert flips == {img.tobytes(), img[:, ::-1].tobytes()}
    out = preprocess.apply(img, HostPreprocess(center_crop=(4, 6)), r)
    np.testing.assert_array_equal(out, img[3:7, 4:10])
    crops = [preprocess.apply(img, HostPreprocess(crop=(4, 6)), np.random.default_rng(s)) for s in range(30)]
    windows = {img[i : i + 4, j : j + 6].tobytes() for i in range(7) for j in range(9)}
    assert all(c.tobytes() in windows for c in crops) and len({c.tobytes() for c in crops}) > 5
    assert preprocess.apply(img, HostPreprocess(resize=5), r).shape == (5, 7, 3)  # shorter side -> 5
    norm = preprocess.apply(img, HostPreprocess(normalize=((0.5, 0.4, 0.3), (0.2, 0.2, 0.1))), r)
    np.testing.assert_allclose(norm, (img / 255.0 - [0.5, 0.4, 0.3]) / [0.2, 0.2, 0.1], rtol=1e-5, atol=1e-5)
    assert preprocess.apply(img, HostPreprocess(random_resized_crop=(8, 8)), r).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="larger than the image"):
        preprocess.apply(img, HostPreprocess(crop=(20, 20)), r)
