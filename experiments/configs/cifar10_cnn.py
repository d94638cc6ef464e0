"""The CIFAR CNN (4096 features) with the default 4096-1024-512 head or the SpinalNet head (V2, width
128) (`CIFAR-10/CNN_dropout_CIFAR10.py`, `CNN_dropout_SpinalFC_CIFAR10.py`, ORIGINAL §2.3).

Command: ``spinal-jax train --config cifar10_cnn --workdir runs/cifar10_cnn``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid cifar10_cnn --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈3–6 min per run (estimate: 500 steps × 160 epochs).

Original's reported accuracy: none.

Quirks and choices:
- Effective schedule of the spinal script (quirk 1.9.3: best_accuracy never updated → constant Adam
  1e-3 for 160 epochs) is used for both heads, the fair comparison. The default script's own
  schedule (quirk 1.9.4) is config `cifar10_cnn_default_faithful`.
"""

from spinal_jax.configs import CIFAR_PAD_FLIP_CROP, SCALE_ONLY, cifar


def get_config():
    """The grid entry ``cifar10_cnn``."""
    return cifar(
        "cifar_cnn",
        "cifar10",
        name="cifar10_cnn",
        epochs=160,
        batch_size=100,
        learning_rate=1e-3,
        lr_rule="none",
        train_augment=CIFAR_PAD_FLIP_CROP + "|" + SCALE_ONLY,
        eval_preprocess=SCALE_ONLY,
    )
