"""VGG-19-BN (CIFAR, 512 features) with the default 512-4096-4096 head or the SpinalNet head (V2, width
512) (`CIFAR-10/VGG_default_and_SpinalFC_CIFAR10.py`, ORIGINAL §2.3).

Command: ``spinal-jax train --config cifar10_vgg19_bn --workdir runs/cifar10_vgg19_bn``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid cifar10_vgg19_bn --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈10–20 min per run (estimate: 500 steps × 200 epochs).

Original's reported accuracy: none.

Quirks and choices:
- Random lr 0.0001·U³ on no improvement, strict `>`; no normalisation (ToTensor only).
"""

from spinal_jax.configs import CIFAR_PAD_FLIP_CROP, SCALE_ONLY, cifar


def get_config():
    """The grid entry ``cifar10_vgg19_bn``."""
    return cifar(
        "cifar_vgg19_bn",
        "cifar10",
        name="cifar10_vgg19_bn",
        epochs=200,
        batch_size=100,
        learning_rate=1e-4,
        lr_rule="random_on_plateau",
        lr_scale=1e-4,
        lr_power=3.0,
        lr_compare=">",
        train_augment=CIFAR_PAD_FLIP_CROP + "|" + SCALE_ONLY,
        eval_preprocess=SCALE_ONLY,
    )
