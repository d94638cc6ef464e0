"""Initialisers that draw like PyTorch's defaults, to reproduce the original's training behaviour.

PyTorch's ``nn.Linear`` and ``nn.Conv2d`` draw weights with ``kaiming_uniform_(a=sqrt(5))`` and biases
from U(-1/sqrt(fan_in), 1/sqrt(fan_in)); both bounds equal 1/sqrt(fan_in).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

Initializer = nn.initializers.Initializer

#: Kernel initialiser of ``torch.nn.Linear``/``Conv2d``: U(±1/sqrt(fan_in)), fan_in = prod(shape[:-1]).
torch_kernel_init: Initializer = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

#: Kaiming-normal over fan_out (std sqrt(2/fan_out)), untruncated, as ``kaiming_normal_(mode="fan_out")``.
kaiming_normal_fan_out: Initializer = nn.initializers.variance_scaling(
    2.0, "fan_out", "normal"
)


def torch_bias_init(fan_in: int) -> Initializer:
    """Bias initialiser of ``torch.nn.Linear``/``Conv2d`` for a layer with ``fan_in`` inputs."""
    if fan_in < 1:
        raise ValueError(f"fan_in must be >= 1, got {fan_in}")
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def kernel_and_bias_init(init: str, fan_in: int) -> tuple[Initializer, Initializer]:
    """Initialisers for a Dense/Conv by name: ``"flax"`` (lecun_normal, zeros) or ``"torch"``."""
    if init == "flax":
        return nn.initializers.lecun_normal(), nn.initializers.zeros_init()
    if init == "torch":
        return torch_kernel_init, torch_bias_init(fan_in)
    raise ValueError(f"init must be 'flax' or 'torch', got {init!r}")
