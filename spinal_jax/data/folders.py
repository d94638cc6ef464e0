"""Folder datasets in torchvision ``ImageFolder`` layout: ``<source_dir>/<split>/<class>/<image>``.

As ImageFolder: classes are the sub-folder names sorted lexicographically (label = index), images are
files with an image extension (case-insensitive), found recursively inside a class folder, and every
image is converted to RGB (grayscale -> 3 equal channels) — or, for a dataset the original read as
grayscale (``qmnist``, 1 channel in the catalog), to grayscale.
"""

from __future__ import annotations

import dataclasses
import os

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Classes (sorted) and, per split, the (path, label) of every image (sorted by path)."""

    classes: list[str]
    files: dict[str, list[tuple[str, int]]]


def _subdirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def scan(source_dir: str | os.PathLike) -> Layout:
    """Reads the layout of ``source_dir``; ValueError if it is missing, empty or has an empty split."""
    src = os.fspath(source_dir)
    if not os.path.isdir(src):
        raise FileNotFoundError(f"folder dataset source {src!r} does not exist (expected <split>/<class>/<image>)")
    splits = _subdirs(src)
    if not splits:
        raise ValueError(f"folder dataset source {src!r} is empty: expected sub-folders <split>/<class>/<image>")
    classes = sorted({c for s in splits for c in _subdirs(os.path.join(src, s))})
    if not classes:
        raise ValueError(f"folder dataset source {src!r} has no class folders inside its splits {splits}")
    index = {c: k for k, c in enumerate(classes)}
    files: dict[str, list[tuple[str, int]]] = {}
    for s in splits:
        found = []
        for c in _subdirs(os.path.join(src, s)):
            for root, dirs, names in os.walk(os.path.join(src, s, c), followlinks=True):
                dirs.sort()
                found.extend(
                    (os.path.join(root, n), index[c])
                    for n in sorted(names)
                    if n.lower().endswith(IMG_EXTENSIONS) and not n.startswith(".")
                )
        if not found:
            raise ValueError(
                f"split folder {os.path.join(src, s)!r} holds no images with extensions {IMG_EXTENSIONS}"
            )
        files[s] = sorted(found)
    return Layout(classes=classes, files=files)


def load_image(path: str, channels: int = 3):
    """Opens an image file as a PIL image converted to RGB (``channels=3``, as ImageFolder) or grayscale
    "L" (``channels=1``); ValueError naming the file if it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    try:
        with Image.open(path) as im:
            return im.convert("RGB" if channels == 3 else "L")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot decode image file {path!r} ({e}); remove or replace it") from e
