"""Atomic file writes: every file the library writes (run outputs, array caches, restored downloads,
figures) goes through a temporary file in the target's folder and ``os.replace``, so a reader or a
resumed run sees the old file or the new one, never a part."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import BinaryIO


def _process_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it, so read it once, at import
    os.umask(mask)
    return mask


_UMASK = _process_umask()


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; on a clean exit it is flushed to disk and
    replaces ``path`` with the permissions a plain ``open`` would leave (an existing file's own, else
    ``0o666`` less the umask; not the temporary file's ``0o600``); on an error it is removed and
    ``path`` is left as it was."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        mode = stat.S_IMODE(os.stat(path).st_mode) if os.path.exists(path) else 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically (see ``atomic_writer``)."""
    with atomic_writer(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)
