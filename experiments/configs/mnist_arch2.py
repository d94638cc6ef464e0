"""Arch2 (multi-stack SpinalNet, width 30) on MNIST (`MNIST/Arch2_MNIST.py`, ORIGINAL §1.3, §2.1).
`head=default` is the small CNN's default head (the model Arch2 is compared with).

Command: ``spinal-jax train --config mnist_arch2 --workdir runs/mnist_arch2``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid mnist_arch2 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈4–8 min per run (estimate: 938 steps × 200 epochs).

Original's reported accuracy: none (the script prints the max test accuracy).

Quirks and choices:
- From epoch 101 (1-based; 0-based 100) a new SGD(lr = 0.01·5·U³, momentum 0.5) is created every
  epoch (momentum reset), regardless of improvement (quirk 1.9.6): lr_rule='random_every_epoch',
  lr_start_epoch=100.
"""

from spinal_jax.configs import arch2


def get_config():
    """The grid entry ``mnist_arch2``."""
    return arch2("mnist", name="mnist_arch2", learning_rate=0.01, lr_rule="random_every_epoch",
             lr_scale=0.05, lr_power=3.0, lr_start_epoch=100)
