"""The grid of the original SpinalNet repository as configs (import name ``spinal_jax.configs``).

One module per grid entry, ``<dataset>_<model>.py``, each with ``get_config() -> Config`` and a
docstring (command, estimated H100 runtime, the original's reported accuracy, quirks). The shared
recipes of the original's script families live here, so each entry states only what differs.

List them with ``spinal_jax.train.config.available_configs()``; load one with
``spinal_jax.train.config.load_config(name)``.
"""

from __future__ import annotations

from typing import Any

from spinal_jax.train.config import Config

# --- preprocessing specs (spinal_jax.data.augment.build) --------------------------------------------
NORM_MNIST = "normalize(0.1307, 0.3081)"
NORM_HALF = "normalize(0.5, 0.5)"
NORM_C100 = "normalize((0.507, 0.487, 0.441), (0.267, 0.256, 0.276))"
NORM_CINIC = "normalize((0.47889522, 0.47227842, 0.43047404), (0.24205776, 0.23828046, 0.25874835))"
NORM_IMAGENET = "normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))"
SCALE_ONLY = "to_float"  # ToTensor only: pixels in [0, 1]

PERSP_ROT10 = "perspective(0.5, p=0.5)|rotate(10)"  # RandomPerspective() + RandomRotation(10, fill=0)
FASHION_AUG = "rotate(10)|random_resized_crop(28, scale=(0.95, 1.0))"
# Pad(4) + RandomHorizontalFlip + RandomCrop(32): the flip commutes with the uniformly placed crop, so
# this equals pad_crop(32, 4) then hflip in distribution.
CIFAR_PAD_FLIP_CROP = "pad_crop(32, 4)|hflip"
CIFAR_CROP_FLIP = "pad_crop(32, 4)|hflip"  # RandomCrop(32, padding=4) + HFlip


def _join(*parts: str) -> str:
    return "|".join(p for p in parts if p)


def vgg5(dataset: str, augment: str, norm: str, **kw: Any) -> Config:
    """``MNIST_VGG/*``: VGG-5, Adam 0.005, batch 100, 200 epochs, random lr 0.005·U³ on no
    improvement with ties counted as no improvement (``>=``)."""
    base: dict[str, Any] = dict(
        model="vgg5",
        dataset=dataset,
        epochs=200,
        batch_size=100,
        eval_batch_size=1000,
        optimizer="adam",
        learning_rate=0.005,
        lr_rule="random_on_plateau",
        lr_scale=0.005,
        lr_power=3.0,
        lr_compare=">=",
        train_augment=_join(augment, norm),
        eval_preprocess=norm,
    )
    base.update(kw)
    return Config(**base)


def mnist_cnn(dataset: str, **kw: Any) -> Config:
    """``MNIST/default_pytorch_*`` / ``SpinalNet_*``: the small CNN, SGD 0.01 momentum 0.5, batch 64,
    8 epochs, no augmentation, MNIST normalisation, constant lr."""
    base: dict[str, Any] = dict(
        model="mnist_cnn",
        dataset=dataset,
        epochs=8,
        batch_size=64,
        eval_batch_size=1000,
        optimizer="sgd",
        learning_rate=0.01,
        momentum=0.5,
        train_augment=NORM_MNIST,
        eval_preprocess=NORM_MNIST,
    )
    base.update(kw)
    return Config(**base)


def arch2(dataset: str, **kw: Any) -> Config:
    """``MNIST/Arch2_*``: SGD momentum 0.5, batch 64, 200 epochs (lr and rule per script)."""
    base: dict[str, Any] = dict(
        model="mnist_arch2",
        dataset=dataset,
        epochs=200,
        batch_size=64,
        eval_batch_size=1000,
        optimizer="sgd",
        momentum=0.5,
        train_augment=_join(PERSP_ROT10, NORM_MNIST),
        eval_preprocess=NORM_MNIST,
    )
    base.update(kw)
    return Config(**base)


def cifar(model: str, dataset: str, **kw: Any) -> Config:
    """``CIFAR-10|100/*``: Adam, test every epoch, best test accuracy reported."""
    base: dict[str, Any] = dict(model=model, dataset=dataset, eval_batch_size=1000, optimizer="adam")
    base.update(kw)
    return Config(**base)


def transfer(model: str, dataset: str, **kw: Any) -> Config:
    """``Transfer Learning/*`` and the notebooks: ImageNet-initialised backbone (``init_checkpoint``),
    nothing frozen, SGD momentum 0.9, StepLR(7, 0.1) stepped per epoch, a fresh optimizer and
    scheduler per stage, each stage starting from the previous stage's best weights."""
    base: dict[str, Any] = dict(
        model=model,
        dataset=dataset,
        optimizer="sgd",
        momentum=0.9,
        lr_rule="step",
        lr_step_size=7,
        lr_gamma=0.1,
        stage_start_from_best=True,
        eval_batch_size=64,
    )
    base.update(kw)
    if base.get("stages") and "learning_rate" not in kw:
        base["learning_rate"] = base["stages"][0][0]
    if base.get("stages") and "epochs" not in kw:
        base["epochs"] = sum(n for _, n in base["stages"])
    return Config(**base)


def regression(kind: str, **kw: Any) -> Config:
    """``Regression/Regression_NN_and_SpinalNet.py``: Adam 0.01, MSE, batch 64, 200 epochs."""
    base: dict[str, Any] = dict(
        model="regression_net",
        dataset=f"regression/{kind}",
        num_classes=1,
        loss="mse",
        epochs=200,
        batch_size=64,
        eval_batch_size=1000,
        optimizer="adam",
        learning_rate=0.01,
        validation="fraction:0.1",
    )
    base.update(kw)
    return Config(**base)
