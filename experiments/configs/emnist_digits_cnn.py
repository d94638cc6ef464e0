"""The small MNIST CNN on EMNIST-Digits, default head or the 6-layer SpinalNet head with width 10
(`MNIST/default_pytorch_EMNIST.py`, `MNIST/SpinalNet_EMNIST_Digits.py`, ORIGINAL §2.1).

Command: ``spinal-jax train --config emnist_digits_cnn --workdir runs/emnist_digits_cnn``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid emnist_digits_cnn --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈30–60 s per run (estimate, 240k images × 8 epochs).

Original's reported accuracy: none recorded.

Quirks and choices:
- The spinal script uses width 10 (MNIST: 8); set here through model_overrides.
- EMNIST is handed out upright by spinal_jax.data (TFDS stores it transposed).
"""

from spinal_jax.configs import mnist_cnn


def get_config():
    """The grid entry ``emnist_digits_cnn``."""
    return mnist_cnn("emnist/digits", name="emnist_digits_cnn", model_overrides={"width": 10})
