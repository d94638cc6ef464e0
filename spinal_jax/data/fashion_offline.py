"""Offline Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package.

Debian ships the original IDX ``.gz`` files with a rewritten gzip header (no stored file name, mtime 0);
the compressed data are byte-identical. Writing the original header back (FNAME flag, original mtime,
original name without ``.gz`` + NUL) reproduces the files TFDS registers (checked against the sha256 in
``tensorflow_datasets/url_checksums/fashion_mnist.txt``), so TFDS's unmodified ``fashion_mnist`` builder
finds them in its manual directory and prepares with no network.
"""

from __future__ import annotations

import hashlib
import os
import struct

from spinal_jax.files import write_atomic

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
ORIGINAL_MTIME = {"train": 1504176606, "t10k": 1504176627}

_FTEXT, _FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 1, 2, 4, 8, 16


def debian_available(debian_dir: str = DEBIAN_DIR) -> bool:
    """Whether all four Debian files are installed."""
    return all(os.path.isfile(os.path.join(debian_dir, f)) for f in FILES)


def restore_header(data: bytes, filename: str) -> bytes:
    """The gzip member ``data`` with the original header of ``filename`` (FNAME + mtime) written back."""
    if data[:3] != b"\x1f\x8b\x08":
        raise ValueError(f"{filename}: not a gzip (deflate) file")
    flags = data[3]
    xfl_os = data[8:10]
    pos = 10
    if flags & _FEXTRA:
        (xlen,) = struct.unpack("<H", data[pos : pos + 2])
        pos += 2 + xlen
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:
            pos = data.index(b"\x00", pos) + 1
    if flags & _FHCRC:
        pos += 2
    mtime = ORIGINAL_MTIME[filename.split("-", 1)[0]]
    name = filename[: -len(".gz")].encode("latin-1") + b"\x00"
    header = b"\x1f\x8b\x08" + bytes([_FNAME | (flags & _FTEXT)]) + struct.pack("<I", mtime) + xfl_os
    return header + name + data[pos:]


def registered_sha256() -> dict[str, str]:
    """file name -> sha256 that TFDS registers for fashion_mnist."""
    import tensorflow_datasets as tfds

    path = os.path.join(os.path.dirname(tfds.__file__), "url_checksums", "fashion_mnist.txt")
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                out[parts[0].rsplit("/", 1)[-1]] = parts[2]
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_manual_files(manual_dir: str, debian_dir: str = DEBIAN_DIR) -> list[str]:
    """Restores Debian's four files into ``manual_dir`` (atomically), each checked against TFDS's sha256.

    Files already there with the right checksum are kept. Returns the paths. ValueError on a mismatch.
    """
    expected = registered_sha256()
    os.makedirs(manual_dir, exist_ok=True)
    paths = []
    for fname in FILES:
        dst = os.path.join(manual_dir, fname)
        paths.append(dst)
        if os.path.isfile(dst):
            with open(dst, "rb") as f:
                if _sha256(f.read()) == expected[fname]:
                    continue
        with open(os.path.join(debian_dir, fname), "rb") as f:
            restored = restore_header(f.read(), fname)
        if _sha256(restored) != expected[fname]:
            raise ValueError(
                f"{os.path.join(debian_dir, fname)} with its gzip header restored does not match TFDS's "
                f"registered sha256 for {fname}; the Debian package may hold different data"
            )
        write_atomic(dst, restored)
    return paths
