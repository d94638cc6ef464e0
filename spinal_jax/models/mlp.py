"""Small fully connected models: the §2.8 toy regression nets and an 8x8-digits classifier."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from spinal_jax.models import heads
from spinal_jax.models.common import (
    check_head_and_classes,
    check_images,
    to_float,
    torch_dense,
)


class RegressionNet(nn.Module):
    """``Regression/Regression_NN_and_SpinalNet.py`` (ORIGINAL.md §1.5, §2.8): inputs (B, 8).

    ``head="default"``: the "normal" net 8→200 LeakyReLU →100 LeakyReLU →``num_classes`` (1).
    ``head="spinal"``: halves of 4, ``width`` 50, 6 LeakyReLU layers, layers 5 and 6 reusing the
    weights of layers 3 and 4 (the original's bug); ``fc5``/``fc6`` exist but stay unused.
    Torch keys: ``fc1, fc2, fc3`` (normal) and ``fc1 … fc6, fcx`` (spinal).
    """

    num_classes: int = 1
    head: str = "spinal"
    width: int = 50
    dtype: Any = None
    input_shape: tuple[int] = (8,)

    def __post_init__(self) -> None:
        check_head_and_classes(self.head, self.num_classes, "regression_net")
        super().__post_init__()

    def spinal(self, detached: bool = False) -> nn.Module:
        """The §1.5 LeakyReLU head with weight reuse."""
        return heads.spinal_head(
            "reuse6", self.num_classes, self.width, dtype=self.dtype, detached=detached
        )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "regression_net", self.input_shape)
        x = to_float(x, self.dtype)
        if self.head == "spinal":
            return self.spinal()(x, train=train)
        d = x.shape[-1]
        h = nn.leaky_relu(torch_dense(200, d, name="fc1", dtype=self.dtype)(x))
        h = nn.leaky_relu(torch_dense(100, 200, name="fc2", dtype=self.dtype)(h))
        return torch_dense(self.num_classes, 100, name="fc3", dtype=self.dtype)(h)

    def torch_layouts(self) -> dict[str, list]:
        """PyTorch key layout (names as listed in the class docstring)."""
        from spinal_jax.interop.torch import TorchEntry

        if self.head == "default":
            return {"original": [TorchEntry(f"fc{i}", (f"fc{i}",), "linear") for i in (1, 2, 3)]}
        return {
            "original": heads.variant_entries(self.spinal(detached=True), "reuse6", ("spinal",))
        }


_ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh}


class DigitsMLP(nn.Module):
    """A classifier for scikit-learn's 8x8 digits, given as (B, 8, 8, 1) images (64 features).

    ``head="default"``: a plain MLP 64→``hidden`` ``activation`` →C. ``head="spinal"``: a V1 SpinalNet
    MLP (halves of 32, ``width`` 16, 4 layers) → C. Torch keys: ``fc1, fc2`` (plain) and the
    customizable model's ``fc1 … fc4, fcx`` (spinal).

    ``activation``: the plain MLP's hidden activation, ``"relu"`` or ``"tanh"`` (a smooth one, for
    comparing runs whose sums differ only in order: a ReLU input within round-off of 0 may switch on
    in one run and off in the other).
    """

    num_classes: int = 10
    head: str = "spinal"
    width: int = 16
    num_layers: int = 4
    hidden: int = 64
    activation: str = "relu"
    dtype: Any = None
    input_shape: tuple[int, int, int] = (8, 8, 1)

    def __post_init__(self) -> None:
        check_head_and_classes(self.head, self.num_classes, "digits_mlp")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"digits_mlp: activation must be one of {tuple(_ACTIVATIONS)}, got {self.activation!r}")
        super().__post_init__()

    def spinal(self, detached: bool = False) -> nn.Module:
        """The V1 spinal MLP."""
        return heads.spinal_head(
            "v1",
            self.num_classes,
            self.width,
            num_layers=self.num_layers,
            dtype=self.dtype,
            detached=detached,
        )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "digits_mlp", self.input_shape)
        x = to_float(x, self.dtype).reshape(x.shape[0], -1)
        if self.head == "spinal":
            return self.spinal()(x, train=train)
        h = _ACTIVATIONS[self.activation](torch_dense(self.hidden, x.shape[-1], name="fc1", dtype=self.dtype)(x))
        return torch_dense(self.num_classes, self.hidden, name="fc2", dtype=self.dtype)(h)

    def torch_layouts(self) -> dict[str, list]:
        """PyTorch key layout (names as listed in the class docstring)."""
        from spinal_jax.interop.torch import TorchEntry

        if self.head == "default":
            return {
                "original": [
                    TorchEntry("fc1", ("fc1",), "linear"),
                    TorchEntry("fc2", ("fc2",), "linear"),
                ]
            }
        names = [f"fc{k + 1}" for k in range(self.num_layers)]
        return {
            "original": heads.named_entries(self.spinal(detached=True), ("spinal",), names, "fcx")
        }
