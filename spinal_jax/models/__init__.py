"""The models of the original's benchmark grid, each with its default head and its spinal head.

``get(name, num_classes, head="spinal", **overrides)`` builds a linen Module called as
``model.apply(variables, images_nhwc, train=False)`` → logits; ``init(model, key)`` makes its
variables from ``example_input``. Each model has ``input_shape`` (its default input, without the
batch axis) and ``torch_layouts()`` (the PyTorch key layouts ``spinal_jax.interop.torch`` reads
and writes: the original scripts' keys, torchvision's for the ImageNet backbones).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from spinal_jax.models.cifar import CifarCNN, CifarResNet, CifarVGG19BN
from spinal_jax.models.common import HEADS, check_head_and_classes
from spinal_jax.models.heads import VARIANTS
from spinal_jax.models.imagenet import VGG19BN, AlexNet, ResNet
from spinal_jax.models.mlp import DigitsMLP, RegressionNet
from spinal_jax.models.mnist import VGG5, MnistArch2, MnistCNN

# name -> (class, fixed settings)
_REGISTRY: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "mnist_cnn": (MnistCNN, {}),
    "mnist_arch2": (MnistArch2, {}),
    "vgg5": (VGG5, {}),
    "cifar_cnn": (CifarCNN, {}),
    "cifar_resnet18": (CifarResNet, {"stage_sizes": (2, 2, 2, 2)}),
    "cifar_resnet34": (CifarResNet, {"stage_sizes": (3, 4, 6, 3)}),
    "cifar_vgg19_bn": (CifarVGG19BN, {}),
    "vgg19_bn": (VGG19BN, {}),
    # WRN-101-2 heads: V3 width 512 (STL-10, CIFAR-100 scripts); other widths/variants by override.
    "wide_resnet101_2": (
        ResNet,
        {
            "stage_sizes": (3, 4, 23, 3),
            "bottleneck": True,
            "width_per_group": 128,
            "variant": "v3",
            "width": 512,
            "model_name": "wide_resnet101_2",
        },
    ),
    # ResNet-18: the hymenoptera script's §1.5 head (LeakyReLU, reuse), width 5.
    "resnet18": (
        ResNet,
        {"stage_sizes": (2, 2, 2, 2), "variant": "reuse6", "width": 5, "model_name": "resnet18"},
    ),
    "alexnet": (AlexNet, {}),
    "digits_mlp": (DigitsMLP, {}),
    "regression_net": (RegressionNet, {}),
}


def names() -> tuple[str, ...]:
    """Names accepted by ``get``."""
    return tuple(_REGISTRY)


def get(name: str, num_classes: int, head: str = "spinal", **overrides: Any) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs and its ``"default"`` or ``"spinal"`` head.

    ``overrides`` set the model's fields (e.g. ``width``, ``num_layers``, ``variant``, ``dropout``,
    ``dtype=jnp.bfloat16`` for bf16 compute with float32 params); unknown ones raise ValueError.
    ``mnist_arch2`` exists only with a spinal head: its ``"default"`` is the small CNN's default
    head (``mnist_cnn``), the model the original compares it with.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(names())}")
    check_head_and_classes(head, num_classes, name)
    if name == "mnist_arch2" and head == "default":
        name = "mnist_cnn"
        overrides = {k: v for k, v in overrides.items() if k != "width"}
    cls, fixed = _REGISTRY[name]
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name", "num_classes", "head"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"{name}: unknown override(s) {unknown}; valid ones are {sorted(fields - {'model_name'})}"
        )
    settings = {**fixed, **overrides}
    return cls(num_classes=num_classes, head=head, **settings)


def example_input(model: nn.Module | str, batch: int = 1, dtype: Any = jnp.float32) -> jax.Array:
    """Zeros of the model's default input shape ``(batch, *model.input_shape)``."""
    if isinstance(model, str):
        model = get(model, 10)
    return jnp.zeros((batch, *model.input_shape), dtype)


def init(model: nn.Module, key: jax.Array, batch: int = 1) -> dict[str, Any]:
    """Variables (``params`` and, where the model has BatchNorm, ``batch_stats``) for ``model``."""
    return jax.jit(lambda k: model.init(k, example_input(model, batch), train=False))(key)


def num_params(model: nn.Module) -> int:
    """Number of trainable parameters (no variables are materialised)."""
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), example_input(model), train=False)
    )
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(shapes["params"]))


__all__ = [
    "HEADS",
    "VARIANTS",
    "VGG5",
    "VGG19BN",
    "AlexNet",
    "CifarCNN",
    "CifarResNet",
    "CifarVGG19BN",
    "DigitsMLP",
    "MnistArch2",
    "MnistCNN",
    "RegressionNet",
    "ResNet",
    "example_input",
    "get",
    "init",
    "names",
    "num_params",
]
