"""Arch2 (width 300) on Fashion-MNIST (`MNIST/Arch2_Fashion_MNIST.py`, ORIGINAL §2.1).

Command: ``spinal-jax train --config fashion_mnist_arch2 --workdir runs/fashion_mnist_arch2``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid fashion_mnist_arch2 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈4–8 min per run (estimate).

Original's reported accuracy: none.

Quirks and choices:
- From epoch 51 (1-based; 0-based 50) a new SGD(lr = 0.005·5·U³, momentum 0.5) every epoch (quirk
  1.9.6).
- The original fixed seed 1; use `--config.seed=1` to match its choice (numbers are not bitwise
  comparable).
"""

from spinal_jax.configs import FASHION_AUG, NORM_HALF, arch2


def get_config():
    """The grid entry ``fashion_mnist_arch2``."""
    return arch2(
        "fashion_mnist",
        name="fashion_mnist_arch2",
        learning_rate=0.005,
        lr_rule="random_every_epoch",
        lr_scale=0.025,
        lr_power=3.0,
        lr_start_epoch=50,
        model_overrides={"width": 300},
        train_augment=FASHION_AUG + "|" + NORM_HALF,
        eval_preprocess=NORM_HALF,
    )
