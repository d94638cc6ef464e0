"""The CIFAR CNN on CIFAR-100, default head or SpinalNet head (V2, width 256)
(`CIFAR-100/CNN_dropout_Default_and_SpinalFC_CIFAR100.py`, ORIGINAL §2.4).

Command: ``spinal-jax train --config cifar100_cnn --workdir runs/cifar100_cnn``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid cifar100_cnn --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈3–6 min per run (estimate: 250 steps × 160 epochs).

Original's reported accuracy: none.

Quirks and choices:
- lr/3 (cumulative) on no improvement, strict `>`. The spinal width 256 is set in model_overrides.
"""

from spinal_jax.configs import CIFAR_PAD_FLIP_CROP, SCALE_ONLY, cifar


def get_config():
    """The grid entry ``cifar100_cnn``."""
    return cifar(
        "cifar_cnn",
        "cifar100",
        name="cifar100_cnn",
        epochs=160,
        batch_size=200,
        learning_rate=1e-3,
        lr_rule="divide_on_plateau",
        lr_divisor=3.0,
        lr_compare=">",
        model_overrides={"width": 256},
        train_augment=CIFAR_PAD_FLIP_CROP + "|" + SCALE_ONLY,
        eval_preprocess=SCALE_ONLY,
    )
