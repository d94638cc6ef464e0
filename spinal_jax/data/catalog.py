"""The grid's datasets: names, splits, shapes and the original's preprocessing (ORIGINAL.md §2, §4).

Three kinds of source:
- ``"tfds"``: a stock TFDS catalog builder (``tfds_name``), prepared by ``spinal-jax prepare NAME``.
- ``"folder"``: a folder of images in torchvision ``ImageFolder`` layout (split/class/image) turned into a
  TFDS dataset by :mod:`spinal_jax.data.folders`.
- ``"builder"``: a builder shipped in this package (``digits``: scikit-learn's 8x8 digits, offline).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

Normalization = tuple[tuple[float, ...], tuple[float, ...]]

NORM_MNIST: Normalization = ((0.1307,), (0.3081,))
NORM_HALF: Normalization = ((0.5,), (0.5,))
NORM_C100: Normalization = ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276))
NORM_IMAGENET: Normalization = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NORM_CINIC: Normalization = (
    (0.47889522, 0.47227842, 0.43047404),
    (0.24205776, 0.23828046, 0.25874835),
)

#: Versions of the datasets this package builds itself; an array cache of another version is rebuilt.
#: qmnist 1.1.0: grayscale (28, 28, 1) instead of ImageFolder's RGB.
BUILT_VERSIONS = {"digits": "1.1.0", "qmnist": "1.1.0"}


@dataclasses.dataclass(frozen=True)
class HostPreprocess:
    """The original's torchvision transform chain for the host (streaming) path, applied in this order:
    resize → rotate → center_crop → crop (random) / random_resized_crop → hflip → vflip → normalize.

    ``resize``: int = shorter side (torchvision ``Resize(int)``), (h, w) = exact size.
    ``rotate``: degrees d of ``RandomRotation(d)`` (uniform in [-d, d], nearest, fill 0); 0 = off.
    ``crop``: (h, w) of ``RandomCrop``; ``center_crop``: (h, w) of ``CenterCrop``.
    ``random_resized_crop``: (h, w) of ``RandomResizedCrop`` with ``rrc_scale`` and ratio (3/4, 4/3).
    ``normalize``: (mean, std) over [0, 1] pixels; when set the output is float32, else uint8.
    """

    resize: int | tuple[int, int] | None = None
    rotate: float = 0.0
    center_crop: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    random_resized_crop: tuple[int, int] | None = None
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    hflip: bool = False
    vflip: bool = False
    normalize: Normalization | None = None


def _tl_train(resize, crop, norm=NORM_C100, vflip=False) -> HostPreprocess:
    return HostPreprocess(resize=resize, rotate=15.0, crop=(crop, crop), hflip=True, vflip=vflip, normalize=norm)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know about a dataset.

    ``splits``: all split names; ``train_split``/``eval_split``: the ones the original trained on and
    reported (for folder datasets the names of the expected sub-folders).
    ``image_shape``: (H, W, C); None entries for datasets whose images vary in size. C is also what a
folder dataset's images are converted to on load (1: grayscale "L", 3: RGB).
    ``normalization``: the original's ``Normalize(mean, std)`` (None: ``ToTensor`` only, [0, 1]).
    ``resident``: True if the whole split is meant to live on the device (``load_arrays``); False for the
    transfer-learning sets read with :func:`spinal_jax.data.stream`.
    ``transpose``: images are stored transposed in TFDS (EMNIST) and are handed out upright.
    """

    name: str
    num_classes: int
    image_shape: tuple[int | None, int | None, int]
    splits: tuple[str, ...]
    train_split: str
    eval_split: str
    normalization: Normalization | None
    resident: bool
    source: Literal["tfds", "folder", "builder"]
    tfds_name: str | None = None
    transpose: bool = False
    train_preprocess: HostPreprocess | None = None
    eval_preprocess: HostPreprocess | None = None
    notes: str = ""


def _tfds(name, classes, shape, norm, *, splits=("train", "test"), eval_split="test", resident=True, **kw):
    return DatasetInfo(
        name=name, num_classes=classes, image_shape=shape, splits=splits, train_split="train",
        eval_split=eval_split, normalization=norm, resident=resident, source="tfds", tfds_name=name, **kw,
    )  # fmt: skip


def _folder(name, classes, shape, norm, splits, eval_split, resident=False, **kw):
    return DatasetInfo(
        name=name, num_classes=classes, image_shape=shape, splits=splits, train_split=splits[0],
        eval_split=eval_split, normalization=norm, resident=resident, source="folder", **kw,
    )  # fmt: skip


_G = (28, 28, 1)
_EMNIST_NOTE = "TFDS stores EMNIST transposed; handed out upright (transposed back), as torchvision shows them."
_CATALOG: dict[str, DatasetInfo] = {
    i.name: i
    for i in [
        _tfds("mnist", 10, _G, NORM_MNIST),
        _tfds("fashion_mnist", 10, _G, NORM_HALF),
        _tfds("kmnist", 10, _G, NORM_MNIST),
        _tfds("emnist/digits", 10, _G, NORM_MNIST, transpose=True, notes=_EMNIST_NOTE),
        _tfds("emnist/letters", 37, _G, NORM_MNIST, transpose=True,
              notes=_EMNIST_NOTE + " Labels as TFDS: 1..26 used of 37 (the original's head had 62 logits)."),
        _tfds("emnist/balanced", 47, _G, NORM_MNIST, transpose=True, notes=_EMNIST_NOTE),
        _tfds("cifar10", 10, (32, 32, 3), None,
              notes="CNN/VGG scripts: ToTensor only; ResNet script: CIFAR-100 statistics (NORM_C100)."),
        _tfds("cifar100", 100, (32, 32, 3), NORM_C100, notes="CNN script: ToTensor only."),
        _tfds("stl10", 10, (96, 96, 3), NORM_C100, splits=("train", "test", "unlabelled"), resident=False,
              train_preprocess=_tl_train((272, 272), 256), eval_preprocess=HostPreprocess(resize=256, normalize=NORM_C100)),
        _tfds("svhn_cropped", 10, (32, 32, 3), NORM_C100, splits=("train", "test", "extra"), resident=False,
              train_preprocess=HostPreprocess(resize=(272, 320), rotate=15.0, center_crop=(272, 272), crop=(256, 256), normalize=NORM_C100),
              eval_preprocess=HostPreprocess(resize=(272, 320), center_crop=(256, 256), normalize=NORM_C100)),
        _tfds("caltech101", 102, (None, None, 3), NORM_C100, resident=False,
              train_preprocess=_tl_train(230, 224), eval_preprocess=HostPreprocess(resize=(224, 224), normalize=NORM_C100),
              notes="TFDS split/classes (102 incl. background) differ from the Kaggle 101-class split the original used."),
        _tfds("oxford_flowers102", 102, (None, None, 3), NORM_C100, splits=("train", "validation", "test"),
              eval_split="validation", resident=False,
              train_preprocess=_tl_train(464, 448), eval_preprocess=HostPreprocess(resize=(448, 448), normalize=NORM_C100)),
        _tfds("cars196", 196, (None, None, 3), NORM_C100, resident=False,
              train_preprocess=_tl_train(456, 448), eval_preprocess=HostPreprocess(resize=(448, 448), normalize=NORM_C100)),
        _folder("qmnist", 10, _G, NORM_MNIST, ("train", "test"), "test", resident=True,
                notes="Not in TFDS: images in <source>/{train,test}/<class>/ (e.g. written from torchvision's "
                      "QMNIST(what='train'/'test'); test = the 60k QMNIST test set). Read as grayscale "
                      "(28, 28, 1), as torchvision's QMNIST class gives them."),
        _folder("bird225", 225, (None, None, 3), NORM_C100, ("train", "valid", "test"), "test",
                train_preprocess=_tl_train(230, 224), eval_preprocess=HostPreprocess(normalize=NORM_C100)),
        _folder("fruits360", 131, (None, None, 3), NORM_C100, ("Training", "Test"), "Test",
                train_preprocess=HostPreprocess(resize=140, rotate=15.0, random_resized_crop=(128, 128), hflip=True, vflip=True, normalize=NORM_C100),
                eval_preprocess=HostPreprocess(resize=128, normalize=NORM_C100)),
        _folder("cinic10", 10, (32, 32, 3), NORM_CINIC, ("train", "valid", "test"), "test",
                train_preprocess=_tl_train(456, 448, NORM_CINIC), eval_preprocess=HostPreprocess(resize=(448, 448), normalize=NORM_CINIC)),
        _folder("hymenoptera", 2, (None, None, 3), NORM_IMAGENET, ("train", "val"), "val",
                train_preprocess=HostPreprocess(random_resized_crop=(224, 224), hflip=True, normalize=NORM_IMAGENET),
                eval_preprocess=HostPreprocess(resize=256, center_crop=(224, 224), normalize=NORM_IMAGENET)),
        _folder("monkeys10", 10, (None, None, 3), NORM_C100, ("training", "validation"), "validation",
                train_preprocess=HostPreprocess(resize=320, rotate=15.0, random_resized_crop=(300, 300), hflip=True, vflip=True, normalize=NORM_C100),
                eval_preprocess=HostPreprocess(resize=(300, 300), normalize=NORM_C100)),
        DatasetInfo(name="digits", num_classes=10, image_shape=(8, 8, 1), splits=("train", "test"),
                    train_split="train", eval_split="test", normalization=None, resident=True, source="builder",
                    notes="scikit-learn's bundled 8x8 digits (1,797 images), pixels 0..16 scaled to 0..255 "
                          "(round(v*255/16)); fixed split: first 1,437 images = train, last 360 = test."),
    ]
}  # fmt: skip


class DatasetNotFoundError(FileNotFoundError):
    """A dataset of the catalog is not prepared (or its source files are missing)."""


def names() -> list[str]:
    """All dataset names of the catalog."""
    return list(_CATALOG)


def info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a catalog dataset; ValueError listing the known names otherwise."""
    if name not in _CATALOG:
        raise ValueError(f"unknown dataset name {name!r}; known names: {', '.join(_CATALOG)}")
    return _CATALOG[name]


def default_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """``data_dir`` if given, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (TFDS's own default)."""
    if data_dir is not None:
        return os.fspath(data_dir)
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def folder_source_dir(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """Where a folder dataset's images are expected by default: ``<data_dir>/downloads/manual/<name>``."""
    return os.path.join(default_data_dir(data_dir), "downloads", "manual", name)


def how_to_get(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """A sentence telling the user how to obtain dataset ``name``."""
    i = info(name)
    dd = default_data_dir(data_dir)
    if i.source == "folder":
        return (
            f"put the images in ImageFolder layout <split>/<class>/<image> (splits {', '.join(i.splits)}) under "
            f"{folder_source_dir(name, data_dir)} (or pass source_dir), then run `spinal-jax prepare {name} "
            f"--data-dir {dd}`"
        )
    text = f"run `spinal-jax prepare {name} --data-dir {dd}` (needs tensorflow-datasets"
    text += " and scikit-learn)" if name == "digits" else ", tensorflow-cpu and network access)"
    if name == "fashion_mnist":
        text += "; offline: `apt-get install dataset-fashion-mnist` first, prepare then uses its files"
    text += (
        f"; or copy a cache written by spinal_jax.data.export_arrays({name!r}, DIR) to "
        f"{os.path.join(dd, 'spinal_jax_arrays', name)}"
    )
    return text
