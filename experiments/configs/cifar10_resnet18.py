"""The narrow CIFAR ResNet-18 (32..256 channels, no ReLU after the residual add) with the default
MaxPool+Linear head or the spatial-quadrant SpinalNet head (width 256)
(`CIFAR-10/ResNet_default_and_SpinalFC_CIFAR10.py`, ORIGINAL §1.4, §2.3).

Command: ``spinal-jax train --config cifar10_resnet18 --workdir runs/cifar10_resnet18``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid cifar10_resnet18 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈4–8 min per run (estimate: 250 steps × 160 epochs).

Original's reported accuracy: none.

Quirks and choices:
- Random lr 0.001·U⁵ on no improvement with strict `>` (ties keep the lr).
"""

from spinal_jax.configs import CIFAR_CROP_FLIP, NORM_C100, cifar


def get_config():
    """The grid entry ``cifar10_resnet18``."""
    return cifar(
        "cifar_resnet18",
        "cifar10",
        name="cifar10_resnet18",
        epochs=160,
        batch_size=200,
        learning_rate=1e-3,
        lr_rule="random_on_plateau",
        lr_scale=1e-3,
        lr_power=5.0,
        lr_compare=">",
        train_augment=CIFAR_CROP_FLIP + "|" + NORM_C100,
        eval_preprocess=NORM_C100,
    )
