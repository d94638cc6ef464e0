"""The small MNIST CNN (conv 10/20, 320 features) with the default 320-50-10 head or the 6-layer
SpinalNet head (seg 160, width 8) (`MNIST/default_pytorch_MNIST.py`, `MNIST/SpinalNet_MNIST.py`,
ORIGINAL §2.1).

Command: ``spinal-jax train --config mnist_cnn --workdir runs/mnist_cnn``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid mnist_cnn --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈10–20 s per run (estimate).

Original's reported accuracy: none recorded (the scripts print integer percentages only).

Quirks and choices:
- The original ran on the CPU with cuDNN off; batch 64, test batch 1000.
"""

from spinal_jax.configs import mnist_cnn


def get_config():
    """The grid entry ``mnist_cnn``."""
    return mnist_cnn("mnist", name="mnist_cnn")
