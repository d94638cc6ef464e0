"""ImageNet backbones of the transfer-learning grid (ORIGINAL.md §2.5, §2.7) in torchvision's
architecture and key names: ``vgg19_bn``, ``wide_resnet101_2``, ``resnet18``, ``alexnet``.

Each takes its default classifier (``head="default"``) or a spinal head in its place
(``head="spinal"``, ``variant`` v1/v2/v3/v4, or ``reuse6`` for the §1.5 head of the
hymenoptera script), registered where the original registered it: ``fc`` for ResNets and
``classifier`` for VGG/AlexNet. Random init follows torchvision (pretrained weights come
through ``spinal_jax.interop.torch.load_state_dict``). Width/stage fields exist so tests can
build reduced instances of the same code.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from spinal_jax.models import heads
from spinal_jax.models.common import (
    adaptive_avg_pool,
    batch_norm,
    check_head_and_classes,
    check_images,
    flatten_nchw,
    kaiming_normal_fan_out,
    max_pool,
    to_float,
    torch_conv,
    torch_dense,
)
from spinal_jax.normalization import stats_dtype

IMAGENET_SHAPE = (224, 224, 3)
#: torchvision's cfg "E" (VGG-19); "M" = max-pool 2x2.
VGG19_CFG = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
)


class VGGFeatures(nn.Module):
    """torchvision's VGG-bn ``features``: per conv 3x3 pad 1 (bias) → BN → ReLU; "M" max-pool 2.

    Flax names ``conv_N`` / ``bn_N`` carry the torchvision ``features`` index N.
    ``torchvision_init``: kaiming-normal fan_out convs with zero bias (torchvision); otherwise
    PyTorch's ``Conv2d`` default.
    """

    cfg: tuple = VGG19_CFG
    torchvision_init: bool = True
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        idx, cin = 0, x.shape[-1]
        for v in self.cfg:
            if v == "M":
                x = max_pool(x, 2)
                idx += 1
                continue
            x = torch_conv(
                v,
                cin,
                3,
                padding=1,
                name=f"conv_{idx}",
                dtype=self.dtype,
                kernel_init=kaiming_normal_fan_out if self.torchvision_init else None,
                zero_bias=self.torchvision_init,
            )(x, bias_cancels=train)
            x = nn.relu(batch_norm(f"bn_{idx + 1}", self.dtype)(x, train=train))
            idx, cin = idx + 3, v
        return x


def vgg_features_entries(cfg: tuple, flax_prefix: tuple[str, ...], torch_prefix: str) -> list:
    """Torch entries of ``VGGFeatures`` (``features.N`` conv, ``features.N+1`` BN)."""
    from spinal_jax.interop.torch import TorchEntry

    entries, idx = [], 0
    for v in cfg:
        if v == "M":
            idx += 1
            continue
        entries.append(TorchEntry(f"{torch_prefix}{idx}", (*flax_prefix, f"conv_{idx}"), "conv"))
        entries.append(
            TorchEntry(f"{torch_prefix}{idx + 1}", (*flax_prefix, f"bn_{idx + 1}"), "bn")
        )
        idx += 3
    return entries


def _check_variant(self: nn.Module, name: str) -> None:
    check_head_and_classes(self.head, self.num_classes, name)
    heads.check_variant(self.variant, name)


def _variant_head(self: nn.Module, name: str, detached: bool) -> nn.Module:
    """The model's spinal head (``variant``, ``width``, ``num_layers``, ``dropout``) registered as ``name``."""
    return heads.spinal_head(
        self.variant,
        self.num_classes,
        self.width,
        num_layers=self.num_layers,
        dropout=self.dropout,
        dtype=self.dtype,
        name=name,
        detached=detached,
    )


_normal_001 = nn.initializers.normal(0.01)


class VGG19BN(nn.Module):
    """torchvision ``vgg19_bn``: features → AdaptiveAvgPool(7) → classifier.

    ``head="default"``: ``classifier`` Linear 25088→4096, ReLU, Dropout, Linear 4096→4096, ReLU,
    Dropout, Linear 4096→C (torchvision init: N(0, 0.01), zero bias).
    ``head="spinal"`` (registered as ``classifier``): ``variant`` (default v3, as
    ``Transfer_Learning_MNIST.py``) on the channel halves of the NCHW-flattened 512x7x7 map
    (12,544 each), ``width`` 1024.
    """

    num_classes: int = 1000
    head: str = "spinal"
    variant: str = "v3"
    width: int = 1024
    num_layers: int = 4
    dropout: float | None = None
    hidden: int = 4096
    cfg: tuple = VGG19_CFG
    dtype: Any = None
    input_shape: tuple[int, int, int] = IMAGENET_SHAPE

    def __post_init__(self) -> None:
        _check_variant(self, "vgg19_bn")
        super().__post_init__()

    def spinal(self, detached: bool = False) -> nn.Module:
        """The spinal head that replaces ``classifier``."""
        return _variant_head(self, "classifier", detached)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "vgg19_bn", self.input_shape, exact=False, min_size=32)
        x = to_float(x, self.dtype)
        x = VGGFeatures(self.cfg, dtype=self.dtype, name="features")(x, train)
        feats = flatten_nchw(adaptive_avg_pool(x, (7, 7)))
        if self.head == "spinal":
            return self.spinal()(feats, train=train)
        rate = 0.5 if self.dropout is None else self.dropout

        def dense(n: int, name: str) -> nn.Dense:
            return torch_dense(
                n, 1, kernel_init=_normal_001, zero_bias=True, name=name, dtype=self.dtype
            )

        h = nn.relu(dense(self.hidden, "classifier_0")(feats))
        h = nn.Dropout(rate)(h, deterministic=not train)
        h = nn.relu(dense(self.hidden, "classifier_3")(h))
        h = nn.Dropout(rate)(h, deterministic=not train)
        return dense(self.num_classes, "classifier_6")(h)

    def torch_layouts(self) -> dict[str, list]:
        """torchvision's key layout, the spinal head under ``classifier.``."""
        from spinal_jax.interop.torch import TorchEntry

        entries = vgg_features_entries(self.cfg, ("features",), "features.")
        if self.head == "default":
            entries += [
                TorchEntry(f"classifier.{i}", (f"classifier_{i}",), "linear") for i in (0, 3, 6)
            ]
        else:
            entries += heads.variant_entries(
                self.spinal(detached=True), self.variant, ("classifier",), "classifier."
            )
        return {"torchvision": entries}


def _tv_conv(features: int, cin: int, k: int, stride: int, name: str, dtype: Any) -> nn.Module:
    return torch_conv(
        features,
        cin,
        k,
        stride=stride,
        padding=k // 2,
        use_bias=False,
        kernel_init=kaiming_normal_fan_out,
        name=name,
        dtype=dtype,
    )


class BasicBlock(nn.Module):
    """torchvision ``BasicBlock`` (ReLU after the residual add)."""

    planes: int
    stride: int = 1
    downsample: bool = False
    width_per_group: int = 64
    dtype: Any = None
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        cin = x.shape[-1]
        y = _tv_conv(self.planes, cin, 3, self.stride, "conv1", self.dtype)(x)
        y = nn.relu(batch_norm("bn1", self.dtype)(y, train))
        y = _tv_conv(self.planes, self.planes, 3, 1, "conv2", self.dtype)(y)
        y = batch_norm("bn2", self.dtype)(y, train)
        if self.downsample:
            x = _tv_conv(self.planes, cin, 1, self.stride, "downsample_0", self.dtype)(x)
            x = batch_norm("downsample_1", self.dtype)(x, train)
        return nn.relu(y + x)


class Bottleneck(nn.Module):
    """torchvision ``Bottleneck`` (v1.5: stride on the 3x3 conv; width = planes * wpg / 64)."""

    planes: int
    stride: int = 1
    downsample: bool = False
    width_per_group: int = 64
    dtype: Any = None
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        cin = x.shape[-1]
        width = self.planes * self.width_per_group // 64
        out = self.planes * self.expansion
        y = _tv_conv(width, cin, 1, 1, "conv1", self.dtype)(x)
        y = nn.relu(batch_norm("bn1", self.dtype)(y, train))
        y = _tv_conv(width, width, 3, self.stride, "conv2", self.dtype)(y)
        y = nn.relu(batch_norm("bn2", self.dtype)(y, train))
        y = _tv_conv(out, width, 1, 1, "conv3", self.dtype)(y)
        y = batch_norm("bn3", self.dtype)(y, train)
        if self.downsample:
            x = _tv_conv(out, cin, 1, self.stride, "downsample_0", self.dtype)(x)
            x = batch_norm("downsample_1", self.dtype)(x, train)
        return nn.relu(y + x)


class ResNet(nn.Module):
    """torchvision ``ResNet``: conv 7x7/2, BN, ReLU, max-pool 3/2, four stages, global average → fc.

    ``head="default"``: ``fc`` Linear(features→C). ``head="spinal"`` (registered as ``fc``):
    ``variant``/``width`` on the halves of the pooled features (WRN-101-2: 2048 → 1024 each).
    """

    stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
    bottleneck: bool = False
    width_per_group: int = 64
    planes: tuple[int, ...] = (64, 128, 256, 512)
    stem: int = 64
    num_classes: int = 1000
    head: str = "spinal"
    variant: str = "v1"
    width: int = 512
    num_layers: int = 4
    dropout: float | None = None
    dtype: Any = None
    input_shape: tuple[int, int, int] = IMAGENET_SHAPE
    model_name: str = "resnet"

    def __post_init__(self) -> None:
        _check_variant(self, self.model_name)
        if len(self.stage_sizes) != len(self.planes) or min(self.stage_sizes) < 1:
            raise ValueError(
                f"{self.model_name}: stage_sizes {self.stage_sizes} must be positive and match planes {self.planes}"
            )
        super().__post_init__()

    @property
    def block(self) -> type[nn.Module]:
        return Bottleneck if self.bottleneck else BasicBlock

    @property
    def num_features(self) -> int:
        """Width of the pooled features the head sees."""
        return self.planes[-1] * self.block.expansion

    def spinal(self, detached: bool = False) -> nn.Module:
        """The spinal head that replaces ``fc``."""
        return _variant_head(self, "fc", detached)

    def _blocks(self):
        cin = self.stem
        for s, (n, planes) in enumerate(zip(self.stage_sizes, self.planes, strict=True)):
            for m in range(n):
                stride = 2 if (m == 0 and s > 0) else 1
                out = planes * self.block.expansion
                yield (
                    f"layer{s + 1}_{m}",
                    f"layer{s + 1}.{m}",
                    planes,
                    stride,
                    stride != 1 or cin != out,
                )
                cin = out

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, self.model_name, self.input_shape, exact=False, min_size=32)
        x = to_float(x, self.dtype)
        x = _tv_conv(self.stem, x.shape[-1], 7, 2, "conv1", self.dtype)(x)
        x = nn.relu(batch_norm("bn1", self.dtype)(x, train))
        x = max_pool(x, 3, 2, padding=1)
        for name, _, planes, stride, down in self._blocks():
            x = self.block(planes, stride, down, self.width_per_group, self.dtype, name=name)(
                x, train
            )
        feats = jnp.mean(x.astype(stats_dtype(x.dtype)), axis=(1, 2)).astype(x.dtype)
        if self.head == "spinal":
            return self.spinal()(feats, train=train)
        return torch_dense(self.num_classes, feats.shape[-1], name="fc", dtype=self.dtype)(feats)

    def torch_layouts(self) -> dict[str, list]:
        """torchvision's key layout, the spinal head under ``fc.``."""
        from spinal_jax.interop.torch import TorchEntry

        entries = [TorchEntry("conv1", ("conv1",), "conv"), TorchEntry("bn1", ("bn1",), "bn")]
        n_conv = 3 if self.bottleneck else 2
        for name, key, _, _, down in self._blocks():
            for i in range(1, n_conv + 1):
                entries.append(TorchEntry(f"{key}.conv{i}", (name, f"conv{i}"), "conv"))
                entries.append(TorchEntry(f"{key}.bn{i}", (name, f"bn{i}"), "bn"))
            if down:
                entries.append(TorchEntry(f"{key}.downsample.0", (name, "downsample_0"), "conv"))
                entries.append(TorchEntry(f"{key}.downsample.1", (name, "downsample_1"), "bn"))
        if self.head == "default":
            entries.append(TorchEntry("fc", ("fc",), "linear"))
        else:
            entries += heads.variant_entries(
                self.spinal(detached=True), self.variant, ("fc",), "fc."
            )
        return {"torchvision": entries}


#: (torchvision features index, out channels, kernel, stride, padding, max-pool after)
_ALEXNET = (
    (0, 64, 11, 4, 2, True),
    (3, 192, 5, 1, 2, True),
    (6, 384, 3, 1, 1, False),
    (8, 256, 3, 1, 1, False),
    (10, 256, 3, 1, 1, True),
)


class AlexNet(nn.Module):
    """torchvision ``alexnet``: five convs, AdaptiveAvgPool(6) → 256x6x6 → classifier.

    ``head="default"``: Dropout, Linear 9216→4096, ReLU, Dropout, Linear 4096→4096, ReLU,
    Linear 4096→C. ``head="spinal"`` (registered as ``classifier``): ``variant`` v1 with
    ``width`` 20 on the channel halves (4,608 each) of the NCHW-flattened map, as the
    10-Monkey notebook.
    """

    num_classes: int = 1000
    head: str = "spinal"
    variant: str = "v1"
    width: int = 20
    num_layers: int = 4
    dropout: float | None = None
    channels: tuple[int, ...] = (64, 192, 384, 256, 256)
    hidden: int = 4096
    dtype: Any = None
    input_shape: tuple[int, int, int] = IMAGENET_SHAPE

    def __post_init__(self) -> None:
        _check_variant(self, "alexnet")
        super().__post_init__()

    def spinal(self, detached: bool = False) -> nn.Module:
        """The spinal head that replaces ``classifier``."""
        return _variant_head(self, "classifier", detached)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "alexnet", self.input_shape, exact=False, min_size=63)
        x = to_float(x, self.dtype)
        cin = x.shape[-1]
        for (idx, _, k, stride, pad, pool), cout in zip(_ALEXNET, self.channels, strict=True):
            x = torch_conv(
                cout, cin, k, stride=stride, padding=pad, name=f"features_{idx}", dtype=self.dtype
            )(x)
            x = nn.relu(x)
            if pool:
                x = max_pool(x, 3, 2)
            cin = cout
        feats = flatten_nchw(adaptive_avg_pool(x, (6, 6)))
        if self.head == "spinal":
            return self.spinal()(feats, train=train)
        rate = 0.5 if self.dropout is None else self.dropout
        h = nn.Dropout(rate)(feats, deterministic=not train)
        h = nn.relu(
            torch_dense(self.hidden, feats.shape[-1], name="classifier_1", dtype=self.dtype)(h)
        )
        h = nn.Dropout(rate)(h, deterministic=not train)
        h = nn.relu(torch_dense(self.hidden, self.hidden, name="classifier_4", dtype=self.dtype)(h))
        return torch_dense(self.num_classes, self.hidden, name="classifier_6", dtype=self.dtype)(h)

    def torch_layouts(self) -> dict[str, list]:
        """torchvision's key layout, the spinal head under ``classifier.``."""
        from spinal_jax.interop.torch import TorchEntry

        entries = [TorchEntry(f"features.{i}", (f"features_{i}",), "conv") for i, *_ in _ALEXNET]
        if self.head == "default":
            entries += [
                TorchEntry(f"classifier.{i}", (f"classifier_{i}",), "linear") for i in (1, 4, 6)
            ]
        else:
            entries += heads.variant_entries(
                self.spinal(detached=True), self.variant, ("classifier",), "classifier."
            )
        return {"torchvision": entries}
