"""spinal_jax.train.metrics: atomic writes of run outputs."""

import os

import pytest

from spinal_jax.train import metrics


def test_write_atomic_text_and_bytes_leave_no_temp_files(tmp_path):
    path = tmp_path / "a" / "t.json"
    metrics.write_atomic(path, "one")
    metrics.write_atomic(str(path), b"\x89two")
    assert path.read_bytes() == b"\x89two" and os.listdir(path.parent) == ["t.json"]
    metrics.write_atomic(path, "é")
    assert path.read_text(encoding="utf-8") == "é"


def test_write_atomic_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    metrics.write_atomic(path, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(metrics.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        metrics.write_atomic(path, "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["t.txt"]
