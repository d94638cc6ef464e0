"""The grain streaming pipeline (spinal_jax.data.streaming): threads vs worker processes, closing, errors."""

import multiprocessing
import pickle
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("grain")

from spinal_jax import data
from spinal_jax.data import HostPreprocess, preprocess, streaming

SPEC = HostPreprocess(resize=(10, 10), rotate=15.0, crop=(8, 8), hflip=True, normalize=((0.5,), (0.25,)))


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    """The digits test split (360 images of 8x8x1) as an array cache, written without TFDS."""
    dd = tmp_path_factory.mktemp("dd")
    with pytest.MonkeyPatch.context() as mp:  # restores only this entry: modules imported meanwhile stay
        mp.setitem(sys.modules, "tensorflow_datasets", None)
        x, y = data.load_arrays("digits", "test", dd)
    return dd, x, y


def _expected_epoch(x, y, seed, epoch, batch_size):
    """The batches of one shuffled epoch, computed directly from the documented recipe."""
    order = np.random.default_rng((seed, epoch)).permutation(len(y))
    images = np.stack([preprocess.apply(x[k], SPEC, np.random.default_rng((seed, epoch, int(k)))) for k in order])
    return [(images[i : i + batch_size], y[order[i : i + batch_size]]) for i in range(0, len(y), batch_size)]


def _assert_same(got, want):
    assert len(got) == len(want)
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        assert gx.dtype == wx.dtype and gy.dtype == np.int32 and type(gx) is np.ndarray
        np.testing.assert_array_equal(gx, wx)
        np.testing.assert_array_equal(gy, wy)


def test_threads_and_workers_give_the_same_batches(digits_dir):
    dd, x, y = digits_dir
    want = _expected_epoch(x, y, 7, 0, 64) + _expected_epoch(x, y, 7, 1, 64)
    assert [len(b[1]) for b in want] == [64] * 5 + [40] + [64] * 5 + [40]  # no batch straddles two epochs
    for kwargs in ({"num_threads": 1}, {"num_threads": 4}, {"num_workers": 2, "num_threads": 1}):
        got = list(data.stream("digits", "test", 64, SPEC, seed=7, shuffle=True, epochs=2, data_dir=dd, **kwargs))
        _assert_same(got, want)
    # drop_remainder drops each epoch's partial batch; without shuffling the order is the source's
    got = list(data.stream("digits", "test", 100, None, epochs=2, drop_remainder=True, data_dir=dd, num_threads=3))
    _assert_same(got, 2 * [(x[i : i + 100], y[i : i + 100]) for i in (0, 100, 200)])


def _grain_children():
    return [p for p in multiprocessing.active_children() if p.name.startswith("grain")]


def _grain_threads():
    return [t for t in threading.enumerate() if t.name.startswith("grain") and t.is_alive()]


def _wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_closing_early_stops_threads_and_workers(digits_dir):
    dd, _, _ = digits_dir
    gen = data.stream("digits", "test", 10, SPEC, epochs=None, data_dir=dd, num_threads=2)
    next(gen)
    assert _grain_threads()
    gen.close()
    assert _wait_until(lambda: not _grain_threads())
    gen = data.stream("digits", "test", 10, SPEC, epochs=None, data_dir=dd, num_workers=2, num_threads=1)
    next(gen)
    assert len(_grain_children()) == 2
    gen.close()
    assert _wait_until(lambda: not _grain_children())
    next(data.stream("digits", "test", 10, None, epochs=None, data_dir=dd, num_workers=1))  # dropped at once
    assert _wait_until(lambda: not _grain_children())


_EXIT_SCRIPT = """
from spinal_jax import data

if __name__ == "__main__":
    gen = data.stream("digits", "test", 10, None, epochs=None, data_dir={dd!r}, num_workers=2)
    next(gen)
    print("took a batch", flush=True)  # exits without closing the stream
"""


def test_exit_with_an_open_worker_stream_does_not_hang(digits_dir, tmp_path):
    script = tmp_path / "exit_open.py"
    script.write_text(_EXIT_SCRIPT.format(dd=str(digits_dir[0])))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "took a batch" in done.stdout
    # the stream was closed before teardown: no errors from half-torn-down finalizers, no shared memory left
    assert "Exception ignored" not in done.stderr and "leaked" not in done.stderr, done.stderr[-2000:]


class _Ragged:
    """A picklable source whose images differ in size (as a folder dataset's do)."""

    def __len__(self):
        return 6

    def __getitem__(self, idx):
        return np.zeros((4 + int(idx), 5, 3), np.uint8), int(idx) % 2


def test_errors(digits_dir):
    dd, _, _ = digits_dir
    with pytest.raises(ValueError, match=r"num_workers must be an int >= 0"):
        data.stream("digits", "test", 10, data_dir=dd, num_workers=-1)
    with pytest.raises(ValueError, match=r"num_threads and prefetch must be positive"):
        data.stream("digits", "test", 10, data_dir=dd, num_threads=0)
    with pytest.raises(ValueError, match=r"holds no batch of 400 with drop_remainder=True"):
        data.stream("digits", "test", 400, epochs=None, drop_remainder=True, data_dir=dd)
    assert list(data.stream("digits", "test", 400, drop_remainder=True, data_dir=dd, num_workers=2)) == []
    with pytest.MonkeyPatch.context() as mp, pytest.raises(ImportError, match=r"pip install 'grain"):
        mp.setitem(sys.modules, "grain", None)
        data.stream("digits", "test", 10, data_dir=dd)
    # a batch of images of different sizes is a ValueError, also when it is built in a worker process
    kwargs = {"seed": 0, "shuffle": False, "epochs": 1, "drop_remainder": False, "num_threads": 1, "prefetch": 1}
    for workers in (0, 2):
        with pytest.raises(ValueError, match=r"images of a batch differ in shape"):
            list(streaming._stream_source(_Ragged(), 3, None, num_workers=workers, **kwargs))
    assert _wait_until(lambda: not _grain_children())


def test_source_pickles_without_its_arrays(digits_dir):
    dd, x, y = digits_dir
    source = streaming._Source("digits", "test", dd)
    blob = pickle.dumps(source)
    assert len(blob) < 2000  # name/split/data_dir, not the 360 images: workers re-open the cache
    again = pickle.loads(blob)
    assert len(again) == 360
    image, label = again[17]
    np.testing.assert_array_equal(image, x[17])
    assert label == y[17]
