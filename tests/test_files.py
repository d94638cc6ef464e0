"""spinal_jax.files: atomic writes (run outputs, array caches, figures)."""

import os
import stat

import pytest

from spinal_jax import files


def test_write_atomic_text_and_bytes_leave_no_temp_files(tmp_path):
    path = tmp_path / "a" / "t.json"
    files.write_atomic(path, "one")
    files.write_atomic(str(path), b"\x89two")
    assert path.read_bytes() == b"\x89two" and os.listdir(path.parent) == ["t.json"]
    files.write_atomic(path, "é")
    assert path.read_text(encoding="utf-8") == "é"


def test_written_files_get_the_permissions_of_a_plain_open(tmp_path):
    # the temporary file is created 0o600; the result must be readable as any file the user writes
    atomic = tmp_path / "atomic.txt"
    files.write_atomic(atomic, "x")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~files._UMASK
    # rewriting a file keeps its own permissions, as writing it in place would
    atomic.chmod(0o640)
    files.write_atomic(atomic, "y")
    assert stat.S_IMODE(atomic.stat().st_mode) == 0o640 and atomic.read_text() == "y"


def test_write_atomic_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    files.write_atomic(path, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        files.write_atomic(path, "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["t.txt"]


def test_atomic_writer_error_inside_the_block_keeps_the_old_file(tmp_path):
    path = tmp_path / "cache.npz"
    files.write_atomic(path, b"old")
    with pytest.raises(RuntimeError, match="killed"), files.atomic_writer(path) as f:
        f.write(b"half of the new")
        raise RuntimeError("killed")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["cache.npz"]
