"""The narrow CIFAR ResNet-34 ([3,4,6,3]) on CIFAR-100, default head or spatial-quadrant SpinalNet head
(width 512) (`CIFAR-100/ResNet_Default_and_SpinalFC_CIFAR100.py`, ORIGINAL §2.4).

Command: ``spinal-jax train --config cifar100_resnet34 --workdir runs/cifar100_resnet34``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid cifar100_resnet34 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈6–12 min per run (estimate).

Original's reported accuracy: none.

Quirks and choices:
- Random lr 0.001·U⁵ on no improvement, strict `>`. The spinal width 512 is set in model_overrides.
"""

from spinal_jax.configs import CIFAR_CROP_FLIP, NORM_C100, cifar


def get_config():
    """The grid entry ``cifar100_resnet34``."""
    return cifar(
        "cifar_resnet34",
        "cifar100",
        name="cifar100_resnet34",
        epochs=160,
        batch_size=200,
        learning_rate=1e-3,
        lr_rule="random_on_plateau",
        lr_scale=1e-3,
        lr_power=5.0,
        lr_compare=">",
        model_overrides={"width": 512},
        train_augment=CIFAR_CROP_FLIP + "|" + NORM_C100,
        eval_preprocess=NORM_C100,
    )
