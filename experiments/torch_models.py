"""Independently written PyTorch models of three networks of the original SpinalNet repository.

Written from the facts of ``shared/ORIGINAL.md`` (§1.2, §1.4, §2.1–2.3, §5, §6), not from the original's
code. They serve two uses: the PyTorch contenders of ``experiments/gpu_benchmark.py``, and parity
references, since their ``state_dict()`` keys and shapes are the original's (§6), so a state dict
from here loads into ``spinal_jax`` through ``spinal_jax.interop.torch`` like an original ``.pth``.

Models (``build(name, head, num_classes)``):

- ``vgg5`` (``MNIST_VGG``): ``VGG`` (default head) and ``SpinalVGG`` (V3 spinal head, seg 128, width 128, 4 layers).
- ``mnist_cnn`` (``MNIST/``): the small CNN, default 320-50-10 head or the 6-layer spinal head (seg 160, width 8).
- ``cifar_resnet18`` (``CIFAR-10/ResNet_default_and_SpinalFC_CIFAR10.py``): the narrow ResNet-18 (32..256
  channels, no ReLU after the residual add), default MaxPool(4,1)+Linear head or the spatial-quadrant spinal head.

All models return logits (the originals' ``log_softmax`` outputs give the same cross-entropy, quirk 1.9.8).
Inputs are NCHW float tensors, normalised as the original scripts do.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import nn

MODELS = ("vgg5", "mnist_cnn", "cifar_resnet18")
HEADS = ("default", "spinal")

# The original scripts' training recipes (ORIGINAL.md §2.1–2.3): what the benchmark's torch steps use.
RECIPES: dict[str, dict[str, Any]] = {
    "vgg5": {
        "optimizer": "adam", "learning_rate": 0.005, "momentum": 0.0, "batch_size": 100,
        "image_shape": (1, 28, 28), "num_train": 60000, "mean": (0.5,), "std": (0.5,),
    },
    "mnist_cnn": {
        "optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.5, "batch_size": 64,
        "image_shape": (1, 28, 28), "num_train": 60000, "mean": (0.1307,), "std": (0.3081,),
    },
    "cifar_resnet18": {
        "optimizer": "adam", "learning_rate": 1e-3, "momentum": 0.0, "batch_size": 200,
        "image_shape": (3, 32, 32), "num_train": 50000,
        "mean": (0.507, 0.487, 0.441), "std": (0.267, 0.256, 0.276),
    },
}


# ------------------------------------------------------------------------------------------------
# VGG-5 (MNIST_VGG)
# ------------------------------------------------------------------------------------------------


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _vgg_block(channels: list[int]) -> nn.Sequential:
    """Convs 3×3 pad 1 (each + BN + ReLU) then MaxPool 2: keys ``0,3[,6]`` conv and ``1,4[,7]`` BN."""
    layers: list[nn.Module] = []
    for cin, cout in itertools.pairwise(channels):
        layers += _conv_bn_relu(cin, cout)
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class _VGG5Backbone(nn.Module):
    """28×28×C → 256 features: blocks (C,64,64), (64,128,128), (128,256,256,256), (256,256,256,256)."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.l1 = _vgg_block([in_channels, 64, 64])
        self.l2 = _vgg_block([64, 128, 128])
        self.l3 = _vgg_block([128, 256, 256, 256])
        self.l4 = _vgg_block([256, 256, 256, 256])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.l4(self.l3(self.l2(self.l1(x)))), 1)

    def _init_backbone(self) -> None:
        # §5: convs N(0, sqrt(2 / (k·k·out))), BN γ=1 β=0; conv biases and Linears keep PyTorch's defaults.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


class VGG(_VGG5Backbone):
    """VGG-5 with the default head: Dropout(0.5), Linear 256→512, BN1d, ReLU, Dropout(0.5), Linear 512→C."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__(in_channels)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(256, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(512, num_classes),
        )
        self._init_backbone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class SpinalVGG(_VGG5Backbone):
    """VGG-5 with the V3 spinal head: 4 layers ``Dropout(0.5) → Linear → BN1d → ReLU`` on alternating
    halves (128 each) of the 256 features, width 128; ``fc_out``: ``Dropout(0.5) → Linear(512 → C)``."""

    half_width = 128
    layer_width = 128

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__(in_channels)
        h, w = self.half_width, self.layer_width

        def layer(fan_in: int) -> nn.Sequential:
            return nn.Sequential(nn.Dropout(0.5), nn.Linear(fan_in, w), nn.BatchNorm1d(w), nn.ReLU(inplace=True))

        self.fc_spinal_layer1 = layer(h)
        self.fc_spinal_layer2 = layer(h + w)
        self.fc_spinal_layer3 = layer(h + w)
        self.fc_spinal_layer4 = layer(h + w)
        self.fc_out = nn.Sequential(nn.Dropout(0.5), nn.Linear(4 * w, num_classes))
        self._init_backbone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        h = self.half_width
        first, second = f[:, :h], f[:, h : 2 * h]
        x1 = self.fc_spinal_layer1(first)
        x2 = self.fc_spinal_layer2(torch.cat([second, x1], dim=1))
        x3 = self.fc_spinal_layer3(torch.cat([first, x2], dim=1))
        x4 = self.fc_spinal_layer4(torch.cat([second, x3], dim=1))
        return self.fc_out(torch.cat([x1, x2, x3, x4], dim=1))


# ------------------------------------------------------------------------------------------------
# The small MNIST CNN
# ------------------------------------------------------------------------------------------------


class MnistCNN(nn.Module):
    """conv1 1→10 k5, maxpool 2, ReLU; conv2 10→20 k5, Dropout2d(0.5), maxpool 2, ReLU → 320 (NCHW flatten).

    Default head: fc1 320→50, ReLU, dropout 0.5, fc2 50→C. Spinal head (§1.2): six layers fc1, fc1_1..fc1_5
    (``Linear → ReLU``) on the alternating halves (channels 0–9 / 10–19) of the 320 features, width
    ``first_hl``; fc2 over the concatenation of all six outputs.
    """

    def __init__(self, num_classes: int = 10, head: str = "default", first_hl: int = 8) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head={head!r}: expected one of {HEADS}")
        self.head = head
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d(0.5)
        if head == "default":
            self.fc1 = nn.Linear(320, 50)
            self.fc2 = nn.Linear(50, num_classes)
        else:
            self.first_hl = first_hl
            self.fc1 = nn.Linear(160, first_hl)
            for i in range(1, 6):
                setattr(self, f"fc1_{i}", nn.Linear(160 + first_hl, first_hl))
            self.fc2 = nn.Linear(6 * first_hl, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(nn.functional.max_pool2d(self.conv1(x), 2))
        x = torch.relu(nn.functional.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = torch.flatten(x, 1)
        if self.head == "default":
            x = nn.functional.dropout(torch.relu(self.fc1(x)), 0.5, training=self.training)
            return self.fc2(x)
        halves = (x[:, :160], x[:, 160:320])
        outs = [torch.relu(self.fc1(halves[0]))]
        for i in range(1, 6):
            layer = getattr(self, f"fc1_{i}")
            outs.append(torch.relu(layer(torch.cat([halves[i % 2], outs[-1]], dim=1))))
        return self.fc2(torch.cat(outs, dim=1))


# ------------------------------------------------------------------------------------------------
# The narrow CIFAR ResNet-18
# ------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """conv3×3(stride) → BN → ReLU → conv3×3 → BN, plus the shortcut; NO ReLU after the add (§2.3).

    The shortcut is ``downsample`` (conv3×3 with the block's stride, bias-free, + BN) when the shape changes.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return y + (x if self.downsample is None else self.downsample(x))


class CifarResNet(nn.Module):
    """Stem conv3×3 3→32 (bias-free), BN, ReLU, Dropout2d(0.02); stages ``conv2_x..conv5_x`` of BasicBlocks,
    32/64/128/256 channels, strides 1/2/2/2 → 256×4×4 for a 32×32 input.

    Default head: MaxPool2d(4, 1) (a global max) + ``fc_layer`` 256→C. Spinal head (§1.4): MaxPool2d(2, 2) →
    256×2×2; the four spatial positions (0,0), (0,1), (1,0), (1,1) are the segments of fc1, fc1_1, fc1_2,
    fc1_3 (``Linear → ReLU``, width ``first_hl``); ``fc_layer`` over the four outputs. Linear biases are 0.
    """

    def __init__(
        self,
        num_classes: int = 10,
        head: str = "default",
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        first_hl: int = 256,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head={head!r}: expected one of {HEADS}")
        self.head = head
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(32)
        self.drop = nn.Dropout2d(0.02)
        cin = 32
        for i, (n, cout, stride) in enumerate(zip(blocks, (32, 64, 128, 256), (1, 2, 2, 2), strict=True)):
            stage = []
            for j in range(n):
                stage.append(BasicBlock(cin, cout, stride if j == 0 else 1))
                cin = cout
            setattr(self, f"conv{i + 2}_x", nn.Sequential(*stage))
        if head == "default":
            self.pool = nn.MaxPool2d(4, stride=1)
            self.fc_layer = nn.Linear(256, num_classes)
        else:
            self.pool = nn.MaxPool2d(2, stride=2)
            self.fc1 = nn.Linear(256, first_hl)
            self.fc1_1 = nn.Linear(256 + first_hl, first_hl)
            self.fc1_2 = nn.Linear(256 + first_hl, first_hl)
            self.fc1_3 = nn.Linear(256 + first_hl, first_hl)
            self.fc_layer = nn.Linear(4 * first_hl, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(torch.relu(self.bn(self.conv1(x))))
        x = self.conv5_x(self.conv4_x(self.conv3_x(self.conv2_x(x))))
        x = self.pool(x)
        if self.head == "default":
            return self.fc_layer(torch.flatten(x, 1))
        x1 = torch.relu(self.fc1(x[:, :, 0, 0]))
        x2 = torch.relu(self.fc1_1(torch.cat([x[:, :, 0, 1], x1], dim=1)))
        x3 = torch.relu(self.fc1_2(torch.cat([x[:, :, 1, 0], x2], dim=1)))
        x4 = torch.relu(self.fc1_3(torch.cat([x[:, :, 1, 1], x3], dim=1)))
        return self.fc_layer(torch.cat([x1, x2, x3, x4], dim=1))


def build(name: str, head: str, num_classes: int = 10) -> nn.Module:
    """The PyTorch model ``name`` (one of ``MODELS``) with its ``"default"`` or ``"spinal"`` head."""
    if name not in MODELS:
        raise ValueError(f"model {name!r} has no PyTorch version here; choose one of {MODELS}")
    if head not in HEADS:
        raise ValueError(f"head={head!r}: expected one of {HEADS}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if name == "vgg5":
        return VGG(num_classes) if head == "default" else SpinalVGG(num_classes)
    if name == "mnist_cnn":
        return MnistCNN(num_classes, head)
    return CifarResNet(num_classes, head)


def num_params(model: nn.Module) -> int:
    """Trainable parameters (BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())
