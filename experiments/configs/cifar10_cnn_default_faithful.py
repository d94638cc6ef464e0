"""The CIFAR CNN with the default head and the default script's schedule as written
(`CIFAR-10/CNN_dropout_CIFAR10.py`, quirk 1.9.4).

Command: ``spinal-jax train --config cifar10_cnn_default_faithful --workdir runs/cifar10_cnn_default_faithful``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid cifar10_cnn_default_faithful --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈3–6 min per run (estimate).

Original's reported accuracy: none.

Quirks and choices:
- lr divided by 3 after epoch 1 and after every epoch > 20 (0-based, as the script's loop):
  lr_rule='divide_at_epochs', lr_epochs=(1,), lr_start_epoch=21; the lr is ≈0 after epoch ~30.
- The original evaluated the test set only on those epochs; here every epoch is evaluated (reporting
  only).
"""

from spinal_jax.configs import CIFAR_PAD_FLIP_CROP, SCALE_ONLY, cifar


def get_config():
    """The grid entry ``cifar10_cnn_default_faithful``."""
    return cifar(
        "cifar_cnn",
        "cifar10",
        name="cifar10_cnn_default_faithful",
        head="default",
        epochs=160,
        batch_size=100,
        learning_rate=1e-3,
        lr_rule="divide_at_epochs",
        lr_divisor=3.0,
        lr_epochs=(1,),
        lr_start_epoch=21,
        train_augment=CIFAR_PAD_FLIP_CROP + "|" + SCALE_ONLY,
        eval_preprocess=SCALE_ONLY,
    )
