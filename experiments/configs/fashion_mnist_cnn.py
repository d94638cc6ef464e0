"""The small MNIST CNN on Fashion-MNIST with the 8-epoch MNIST recipe (SGD 0.01, momentum 0.5, batch
64), default or SpinalNet head (no original script: the MNIST recipe applied to Fashion-MNIST).

Command: ``spinal-jax train --config fashion_mnist_cnn --workdir runs/fashion_mnist_cnn``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid fashion_mnist_cnn --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈10–20 s per run (estimate).

Original's reported accuracy: none reported (no original script for this pair).

Quirks and choices:
- MNIST normalisation (0.1307, 0.3081) kept from the recipe, no augmentation.
"""

from spinal_jax.configs import mnist_cnn


def get_config():
    """The grid entry ``fashion_mnist_cnn``."""
    return mnist_cnn("fashion_mnist", name="fashion_mnist_cnn")
