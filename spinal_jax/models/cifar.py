"""The original's CIFAR models (ORIGINAL.md §2.3, §2.4): the CNN with dropout, the narrow
ResNet-18/34 and VGG-19-bn, each with its default head or its spinal head."""

from __future__ import annotations

from typing import Any

import jax
from flax import linen as nn

from spinal_jax.models import heads
from spinal_jax.models.common import (
    batch_norm,
    check_head_and_classes,
    check_images,
    dropout2d,
    flatten_nchw,
    kaiming_normal_fan_out,
    max_pool,
    to_float,
    torch_conv,
    torch_dense,
)
from spinal_jax.models.imagenet import VGG19_CFG, VGGFeatures, vgg_features_entries

CIFAR_SHAPE = (32, 32, 3)


def _auto(value: int | None, num_classes: int, small: int, large: int) -> int:
    """The original's dataset-dependent width: ``small`` for CIFAR-10 (<= 10 classes), else ``large``."""
    if value is not None:
        return value
    return small if num_classes <= 10 else large


# torch index in ``conv_layer`` of each (conv, bn or None) of the CIFAR CNN, with channels.
_CNN_CONVS = (
    (0, 1, 3, 32),
    (3, None, 32, 64),
    (6, 7, 64, 128),
    (9, None, 128, 128),
    (13, 14, 128, 256),
    (16, None, 256, 256),
)


class CifarCNN(nn.Module):
    """The CIFAR CNN with dropout (``CNN_dropout_*``): 6 convs (BN after the 1st of each pair),
    3 max-pools, Dropout2d(0.05) after the second pool → 256x4x4 = 4096 features.

    ``head="default"``: Dropout(0.1), Linear 4096→1024, ReLU, Linear 1024→512, ReLU, Dropout(0.1),
    Linear 512→C. ``head="spinal"``: V2 (Dropout ``dropout``, Linear, ReLU) on channel halves
    (2048 each, NCHW flatten), ``width`` 128 for CIFAR-10 and 256 for CIFAR-100 (automatic).
    """

    num_classes: int = 10
    head: str = "spinal"
    width: int | None = None
    num_layers: int = 4
    dropout: float = 0.1
    conv_dropout: float = 0.05
    dtype: Any = None
    input_shape: tuple[int, int, int] = CIFAR_SHAPE

    def __post_init__(self) -> None:
        check_head_and_classes(self.head, self.num_classes, "cifar_cnn")
        super().__post_init__()

    def spinal(self, detached: bool = False) -> nn.Module:
        """The V2 spinal head."""
        width = _auto(self.width, self.num_classes, 128, 256)
        return heads.spinal_head(
            "v2",
            self.num_classes,
            width,
            num_layers=self.num_layers,
            dropout=self.dropout,
            dtype=self.dtype,
            detached=detached,
        )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "cifar_cnn", self.input_shape)
        x = to_float(x, self.dtype)
        for i, (conv_idx, bn_idx, cin, cout) in enumerate(_CNN_CONVS):
            conv = torch_conv(cout, cin, 3, padding=1, name=f"conv_{conv_idx}", dtype=self.dtype)
            x = conv(x, bias_cancels=train and bn_idx is not None)
            if bn_idx is not None:
                x = batch_norm(f"bn_{bn_idx}", self.dtype)(x, train=train)
            x = max_pool(x, 2, relu=True) if i % 2 == 1 else nn.relu(x)
            if i == 3:
                x = dropout2d(self.conv_dropout)(x, deterministic=not train)
        feats = flatten_nchw(x)
        if self.head == "spinal":
            return self.spinal()(feats, train=train)
        h = nn.Dropout(self.dropout)(feats, deterministic=not train)
        h = nn.relu(torch_dense(1024, 4096, name="fc_1", dtype=self.dtype)(h))
        h = nn.relu(torch_dense(512, 1024, name="fc_3", dtype=self.dtype)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        return torch_dense(self.num_classes, 512, name="fc_6", dtype=self.dtype)(h)

    def torch_layouts(self) -> dict[str, list]:
        """PyTorch key layout of the original ``CNN`` / ``SpinalCNN`` (ORIGINAL.md §6)."""
        from spinal_jax.interop.torch import TorchEntry

        entries = []
        for conv_idx, bn_idx, _, _ in _CNN_CONVS:
            entries.append(TorchEntry(f"conv_layer.{conv_idx}", (f"conv_{conv_idx}",), "conv"))
            if bn_idx is not None:
                entries.append(TorchEntry(f"conv_layer.{bn_idx}", (f"bn_{bn_idx}",), "bn"))
        if self.head == "default":
            entries += [TorchEntry(f"fc_layer.{i}", (f"fc_{i}",), "linear") for i in (1, 3, 6)]
        else:
            entries += heads.variant_entries(self.spinal(detached=True), "v2", ("spinal",))
        return {"original": entries}


class CifarBasicBlock(nn.Module):
    """The narrow CIFAR ResNet's BasicBlock: conv-BN-ReLU-conv-BN plus shortcut, NO final ReLU."""

    cin: int
    cout: int
    stride: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        def conv(name: str, cin: int, stride: int) -> nn.Module:
            return torch_conv(
                self.cout,
                cin,
                3,
                stride=stride,
                padding=1,
                use_bias=False,
                kernel_init=kaiming_normal_fan_out,
                name=name,
                dtype=self.dtype,
            )

        y = nn.relu(batch_norm("bn1", self.dtype)(conv("conv1", self.cin, self.stride)(x), train))
        y = batch_norm("bn2", self.dtype)(conv("conv2", self.cout, 1)(y), train)
        if self.stride != 1 or self.cin != self.cout:
            x = conv("downsample_0", self.cin, self.stride)(x)
            x = batch_norm("downsample_1", self.dtype)(x, train)
        return y + x


_CIFAR_RESNET_CHANNELS = (32, 64, 128, 256)
_CIFAR_RESNET_STRIDES = (1, 2, 2, 2)


class CifarResNet(nn.Module):
    """The narrow CIFAR ResNet (``ResNet_*_SpinalFC_CIFAR*.py``): conv3x3 3→32, BN, ReLU,
    Dropout2d(0.02); BasicBlock stages of 32/64/128/256 channels, strides 1/2/2/2 → 256x4x4.

    ``head="default"``: MaxPool(4, stride 1) (a global max) → Linear 256→C (zero bias).
    ``head="spinal"``: MaxPool(2, 2) → 256x2x2, the four spatial positions [00, 01, 10, 11] are the
    four segments (§1.4), ReLU layers of ``width`` 256 (CIFAR-10) / 512 (CIFAR-100), zero biases.
    Note: the NHWC flatten of the 2x2x256 map already is the quadrant order (no transpose).
    """

    stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
    num_classes: int = 10
    head: str = "spinal"
    width: int | None = None
    conv_dropout: float = 0.02
    dtype: Any = None
    input_shape: tuple[int, int, int] = CIFAR_SHAPE

    def __post_init__(self) -> None:
        check_head_and_classes(self.head, self.num_classes, "cifar_resnet")
        if len(self.stage_sizes) != 4 or min(self.stage_sizes) < 1:
            raise ValueError(f"stage_sizes must be 4 positive ints, got {self.stage_sizes!r}")
        super().__post_init__()

    def spinal(self, detached: bool = False) -> nn.Module:
        """The spatial-quadrant spinal head."""
        width = _auto(self.width, self.num_classes, 256, 512)
        return heads.spinal_head(
            "v1",
            self.num_classes,
            width,
            num_layers=4,
            num_splits=4,
            zero_bias=True,
            dtype=self.dtype,
            detached=detached,
        )

    def _blocks(self):
        cin = _CIFAR_RESNET_CHANNELS[0]
        for s, (n, cout, stride) in enumerate(
            zip(self.stage_sizes, _CIFAR_RESNET_CHANNELS, _CIFAR_RESNET_STRIDES, strict=True)
        ):
            for m in range(n):
                yield f"conv{s + 2}_x_{m}", f"conv{s + 2}_x.{m}", cin, cout, stride if m == 0 else 1
                cin = cout

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "cifar_resnet", self.input_shape)
        x = to_float(x, self.dtype)
        x = torch_conv(
            32,
            x.shape[-1],
            3,
            padding=1,
            use_bias=False,
            kernel_init=kaiming_normal_fan_out,
            name="conv1",
            dtype=self.dtype,
        )(x)
        x = nn.relu(batch_norm("bn", self.dtype)(x, train=train))
        x = dropout2d(self.conv_dropout)(x, deterministic=not train)
        for name, _, cin, cout, stride in self._blocks():
            x = CifarBasicBlock(cin, cout, stride, self.dtype, name=name)(x, train)
        if self.head == "spinal":
            feats = max_pool(x, 2).reshape(x.shape[0], -1)
            return self.spinal()(feats, train=train)
        feats = max_pool(x, 4, 1).reshape(x.shape[0], -1)
        return torch_dense(
            self.num_classes, feats.shape[-1], zero_bias=True, name="fc_layer", dtype=self.dtype
        )(feats)

    def torch_layouts(self) -> dict[str, list]:
        """PyTorch key layout of the original ``ResNet`` / ``SpinalResNet`` (ORIGINAL.md §6)."""
        from spinal_jax.interop.torch import TorchEntry

        entries = [TorchEntry("conv1", ("conv1",), "conv"), TorchEntry("bn", ("bn",), "bn")]
        for name, key, cin, cout, stride in self._blocks():
            for part, kind in (("conv1", "conv"), ("bn1", "bn"), ("conv2", "conv"), ("bn2", "bn")):
                entries.append(TorchEntry(f"{key}.{part}", (name, part), kind))
            if stride != 1 or cin != cout:
                entries.append(TorchEntry(f"{key}.downsample.0", (name, "downsample_0"), "conv"))
                entries.append(TorchEntry(f"{key}.downsample.1", (name, "downsample_1"), "bn"))
        if self.head == "default":
            entries.append(TorchEntry("fc_layer", ("fc_layer",), "linear"))
        else:
            entries += heads.named_entries(
                self.spinal(detached=True),
                ("spinal",),
                ["fc1", "fc1_1", "fc1_2", "fc1_3"],
                "fc_layer",
            )
        return {"original": entries}


class CifarVGG19BN(nn.Module):
    """VGG-19-bn for 32x32 CIFAR (``VGG_*_SpinalFC_CIFAR*.py``): torchvision's ``features`` (cfg E,
    conv bias, BN, ReLU, 5 max-pools) → 512x1x1, PyTorch default init.

    ``head="default"``: Linear 512→4096, ReLU, Dropout, Linear 4096→4096, ReLU, Dropout,
    Linear 4096→C (``classifier.{0,3,6}``). ``head="spinal"``: V2 with ``dropout`` 0.5, halves of
    256, ``width`` 512.
    """

    num_classes: int = 10
    head: str = "spinal"
    width: int = 512
    num_layers: int = 4
    dropout: float = 0.5
    hidden: int = 4096
    cfg: tuple = VGG19_CFG
    dtype: Any = None
    input_shape: tuple[int, int, int] = CIFAR_SHAPE

    def __post_init__(self) -> None:
        check_head_and_classes(self.head, self.num_classes, "cifar_vgg19_bn")
        super().__post_init__()

    def spinal(self, detached: bool = False) -> nn.Module:
        """The V2 spinal head."""
        return heads.spinal_head(
            "v2",
            self.num_classes,
            self.width,
            num_layers=self.num_layers,
            dropout=self.dropout,
            dtype=self.dtype,
            detached=detached,
        )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "cifar_vgg19_bn", self.input_shape)
        x = to_float(x, self.dtype)
        x = VGGFeatures(self.cfg, torchvision_init=False, dtype=self.dtype, name="features")(
            x, train
        )
        feats = flatten_nchw(x)
        if self.head == "spinal":
            return self.spinal()(feats, train=train)
        d = feats.shape[-1]
        h = nn.relu(torch_dense(self.hidden, d, name="classifier_0", dtype=self.dtype)(feats))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = nn.relu(torch_dense(self.hidden, self.hidden, name="classifier_3", dtype=self.dtype)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        return torch_dense(self.num_classes, self.hidden, name="classifier_6", dtype=self.dtype)(h)

    def torch_layouts(self) -> dict[str, list]:
        """Key layout: torchvision ``features.N`` plus the original's ``classifier.{0,3,6}`` or
        ``fc_spinal_layerK.1`` / ``fc_out.1`` head."""
        from spinal_jax.interop.torch import TorchEntry

        entries = vgg_features_entries(self.cfg, ("features",), "features.")
        if self.head == "default":
            entries += [
                TorchEntry(f"classifier.{i}", (f"classifier_{i}",), "linear") for i in (0, 3, 6)
            ]
        else:
            entries += heads.variant_entries(self.spinal(detached=True), "v2", ("spinal",))
        return {"original": entries}
