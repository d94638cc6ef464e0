"""VGG-19-BN (CIFAR) on CIFAR-100, default or SpinalNet head (V2, width 512)
(`CIFAR-100/VGG_Default_and_SpinalFC_CIFAR_100.py`, ORIGINAL §2.4).

Command: ``spinal-jax train --config cifar100_vgg19_bn --workdir runs/cifar100_vgg19_bn``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid cifar100_vgg19_bn --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈8–16 min per run (estimate).

Original's reported accuracy: none.

Quirks and choices:
- Random lr 0.0001·U³ on no improvement, strict `>`; CIFAR-100 normalisation.
"""

from spinal_jax.configs import CIFAR_CROP_FLIP, NORM_C100, cifar


def get_config():
    """The grid entry ``cifar100_vgg19_bn``."""
    return cifar(
        "cifar_vgg19_bn",
        "cifar100",
        name="cifar100_vgg19_bn",
        epochs=200,
        batch_size=200,
        learning_rate=1e-4,
        lr_rule="random_on_plateau",
        lr_scale=1e-4,
        lr_power=3.0,
        lr_compare=">",
        train_augment=CIFAR_CROP_FLIP + "|" + NORM_C100,
        eval_preprocess=NORM_C100,
    )
