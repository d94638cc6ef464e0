"""Arch2 (width 50) on EMNIST-Digits (`MNIST/Arch2_EMNIST_Digits.py`, ORIGINAL §2.1).

Command: ``spinal-jax train --config emnist_digits_arch2 --workdir runs/emnist_digits_arch2``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid emnist_digits_arch2 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈4–16 min per run (estimate).

Original's reported accuracy: none.

Quirks and choices:
- The script's lr rule changes a Python variable but never the optimizer (quirk 1.9.5): the
  effective schedule, constant SGD lr 0.1 momentum 0.5, is what this config trains (lr_rule='none').
"""

from spinal_jax.configs import arch2


def get_config():
    """The grid entry ``emnist_digits_arch2``."""
    return arch2("emnist/digits", name="emnist_digits_arch2", learning_rate=0.1, model_overrides={"width": 50})
