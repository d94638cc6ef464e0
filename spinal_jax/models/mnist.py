"""The original's MNIST-family models (ORIGINAL.md §2.1, §2.2): the small CNN, Arch2 and VGG-5."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from spinal_jax.models import heads
from spinal_jax.models.common import (
    batch_norm,
    check_head_and_classes,
    check_images,
    dropout2d,
    flatten_nchw,
    max_pool,
    mnist_vgg_conv_init,
    to_float,
    torch_conv,
    torch_dense,
)


def _small_cnn_features(mdl: nn.Module, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    """conv1 1→10 k5, maxpool 2, ReLU; conv2 10→20 k5, Dropout2d(0.5), maxpool 2, ReLU.

    ``mdl.dropout`` is the Dropout2d rate. Returns the conv1 map (B,12,12,10) and the conv2 map (B,4,4,20).
    """
    c1 = max_pool(torch_conv(10, 1, 5, name="conv1", dtype=mdl.dtype)(x), 2, relu=True)
    c2 = torch_conv(20, 10, 5, name="conv2", dtype=mdl.dtype)(c1)
    c2 = dropout2d(mdl.dropout)(c2, deterministic=not train)
    return c1, max_pool(c2, 2, relu=True)


class MnistCNN(nn.Module):
    """The small MNIST CNN (``MNIST/default_pytorch_MNIST.py`` / ``SpinalNet_MNIST.py``).

    ``head="default"``: Linear 320→50, ReLU, Dropout(0.5), Linear 50→C (21,840 params).
    ``dropout`` (0.5) is the rate of both the conv2 Dropout2d and the head's Dropout.
    ``head="spinal"``: 6 ReLU layers on alternating halves (160) of the NCHW-flattened conv map,
    ``width`` 8 (13,818 params; the EMNIST-digits script uses ``width=10``).
    """

    num_classes: int = 10
    head: str = "spinal"
    width: int = 8
    num_layers: int = 6
    dropout: float = 0.5
    dtype: Any = None
    input_shape: tuple[int, int, int] = (28, 28, 1)

    def __post_init__(self) -> None:
        check_head_and_classes(self.head, self.num_classes, "mnist_cnn")
        super().__post_init__()

    def spinal(self, detached: bool = False) -> nn.Module:
        """The spinal head (also used to describe its PyTorch layout)."""
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
        check_images(x, "mnist_cnn", self.input_shape)
        x = to_float(x, self.dtype)
        _, c2 = _small_cnn_features(self, x, train)
        feats = flatten_nchw(c2)
        if self.head == "spinal":
            return self.spinal()(feats, train=train)
        h = nn.relu(torch_dense(50, 320, name="fc1", dtype=self.dtype)(feats))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        return torch_dense(self.num_classes, 50, name="fc2", dtype=self.dtype)(h)

    def torch_layouts(self) -> dict[str, list]:
        """PyTorch key layout of the original ``Net`` (ORIGINAL.md §6)."""
        from spinal_jax.interop.torch import TorchEntry

        body = [TorchEntry("conv1", ("conv1",), "conv"), TorchEntry("conv2", ("conv2",), "conv")]
        if self.head == "default":
            tail = [TorchEntry("fc1", ("fc1",), "linear"), TorchEntry("fc2", ("fc2",), "linear")]
        else:
            names = ["fc1"] + [f"fc1_{i}" for i in range(1, self.num_layers)]
            tail = heads.named_entries(self.spinal(detached=True), ("spinal",), names, "fc2")
        return {"original": body + tail}


class MnistArch2(nn.Module):
    """Arch2 (``MNIST/Arch2_*.py``, ORIGINAL.md §1.3): three spinal stacks on the raw pixels (10
    layers, halves of 392), the conv1 map (8 layers, halves of 720) and the conv2 map (8 layers,
    halves of 160), concatenated → Linear 26w→50 → ReLU → Linear 50→C.

    ``width`` is ``first_HL``: 30 (MNIST), 300 (Fashion-MNIST), 50 (EMNIST digits, KMNIST, QMNIST).
    Arch2 has only a spinal head: ``models.get("mnist_arch2", C, head="default")`` gives the small
    CNN's default head, the original's comparison model.
    """

    num_classes: int = 10
    width: int = 30
    dropout: float = 0.5
    dtype: Any = None
    input_shape: tuple[int, int, int] = (28, 28, 1)
    head: str = "spinal"

    def __post_init__(self) -> None:
        check_head_and_classes(self.head, self.num_classes, "mnist_arch2", ("spinal",))
        super().__post_init__()

    def stacks(self, detached: bool = False) -> dict[str, nn.Module]:
        """The three spinal stacks, by Flax name (no output layer: they return all layer outputs)."""
        return {
            name: heads.spinal_head(
                "v1", None, self.width, num_layers=num_layers, dtype=self.dtype, name=name, detached=detached
            )
            for name, num_layers in (("spinal_raw", 10), ("spinal_conv1", 8), ("spinal_conv2", 8))
        }

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "mnist_arch2", self.input_shape)
        x = to_float(x, self.dtype)
        c1, c2 = _small_cnn_features(self, x, train)
        s = self.stacks()
        parts = [
            s["spinal_raw"](x.reshape(x.shape[0], -1), train=train),
            s["spinal_conv1"](flatten_nchw(c1), train=train),
            s["spinal_conv2"](flatten_nchw(c2), train=train),
        ]
        h = jnp.concatenate(parts, axis=-1)
        h = nn.relu(torch_dense(50, 26 * self.width, name="fc2", dtype=self.dtype)(h))
        return torch_dense(self.num_classes, 50, name="fc3", dtype=self.dtype)(h)

    def torch_layouts(self) -> dict[str, list]:
        """PyTorch key layout of the original Arch2 ``Net`` (ORIGINAL.md §6)."""
        from spinal_jax.interop.torch import TorchEntry

        s = self.stacks(detached=True)
        entries = [TorchEntry("conv1", ("conv1",), "conv"), TorchEntry("conv2", ("conv2",), "conv")]
        for flax_name, base, n in (
            ("spinal_conv2", "fc1", 8),
            ("spinal_conv1", "fcp", 8),
            ("spinal_raw", "fcp2", 10),
        ):
            names = [base] + [f"{base}_{i}" for i in range(1, n)]
            entries += heads.named_entries(s[flax_name], (flax_name,), names, None)
        entries += [TorchEntry("fc2", ("fc2",), "linear"), TorchEntry("fc3", ("fc3",), "linear")]
        return {"original": entries}


_VGG5_BLOCKS = (
    ("l1", (64, 64)),
    ("l2", (128, 128)),
    ("l3", (256, 256, 256)),
    ("l4", (256, 256, 256)),
)


class VGG5(nn.Module):
    """VGG-5 of ``MNIST_VGG/*`` (ORIGINAL.md §2.2): four conv blocks (3x3 conv, BN, ReLU; max-pool)
    28→14→7→3→1 to 256 features.

    ``head="default"``: Dropout(0.5), Linear 256→512, BN, ReLU, Dropout(0.5), Linear 512→C.
    ``head="spinal"``: V3 (Dropout 0.5, Linear, BN, ReLU), halves of 128, ``width`` 128, 4 layers,
    ``fc_out`` Dropout(0.5) → Linear 512→C. Returns logits (the original's log_softmax is
    idempotent under cross-entropy).
    """

    num_classes: int = 10
    head: str = "spinal"
    width: int = 128
    num_layers: int = 4
    dropout: float = 0.5
    dtype: Any = None
    input_shape: tuple[int, int, int] = (28, 28, 1)

    def __post_init__(self) -> None:
        check_head_and_classes(self.head, self.num_classes, "vgg5")
        super().__post_init__()

    def spinal(self, detached: bool = False) -> nn.Module:
        """The V3 spinal head."""
        return heads.spinal_head(
            "v3",
            self.num_classes,
            self.width,
            num_layers=self.num_layers,
            dropout=self.dropout,
            dtype=self.dtype,
            detached=detached,
        )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "vgg5", self.input_shape)
        x = to_float(x, self.dtype)
        cin = x.shape[-1]
        for block, widths in _VGG5_BLOCKS:
            for i, w in enumerate(widths):
                conv = torch_conv(
                    w,
                    cin,
                    3,
                    padding=1,
                    kernel_init=mnist_vgg_conv_init(w),
                    name=f"{block}_conv{i}",
                    dtype=self.dtype,
                )
                # conv -> BatchNorm -> ReLU; the block's last ReLU is taken by its 2x2 max pool
                last = i == len(widths) - 1
                x = batch_norm(f"{block}_bn{i}", self.dtype, relu=not last)(conv(x, bias_cancels=train), train=train)
                cin = w
            x = max_pool(x, 2, relu=True)
        feats = x.reshape(x.shape[0], -1)
        if self.head == "spinal":
            return self.spinal()(feats, train=train)
        h = nn.Dropout(self.dropout)(feats, deterministic=not train)
        h = torch_dense(512, cin, name="classifier_1", dtype=self.dtype)(h)
        h = nn.relu(batch_norm("classifier_2", self.dtype)(h, train=train))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        return torch_dense(self.num_classes, 512, name="classifier_5", dtype=self.dtype)(h)

    def torch_layouts(self) -> dict[str, list]:
        """PyTorch key layout of the original ``VGG`` / ``SpinalVGG`` (ORIGINAL.md §6)."""
        from spinal_jax.interop.torch import TorchEntry

        entries = []
        for block, widths in _VGG5_BLOCKS:
            for i in range(len(widths)):
                entries.append(TorchEntry(f"{block}.{3 * i}", (f"{block}_conv{i}",), "conv"))
                entries.append(TorchEntry(f"{block}.{3 * i + 1}", (f"{block}_bn{i}",), "bn"))
        if self.head == "default":
            entries += [
                TorchEntry("classifier.1", ("classifier_1",), "linear"),
                TorchEntry("classifier.2", ("classifier_2",), "bn"),
                TorchEntry("classifier.5", ("classifier_5",), "linear"),
            ]
        else:
            entries += heads.variant_entries(self.spinal(detached=True), "v3", ("spinal",), "")
        return {"original": entries}
