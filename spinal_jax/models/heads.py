"""The original's spinal head variants (ORIGINAL.md §1.1, §1.5) as ``SpinalDense`` configurations,
and their PyTorch key layouts."""

from __future__ import annotations

from typing import Any

from flax import linen as nn

from spinal_jax.layers import SpinalDense

#: v1 Linear→ReLU; v2 Dropout→Linear→ReLU; v3 Dropout→Linear→BN→ReLU; v4 Linear only;
#: reuse6 the LeakyReLU 6-layer head whose layers 5 and 6 reuse layers 3 and 4 (§1.5).
VARIANTS = ("v1", "v2", "v3", "v4", "reuse6")

#: dropout rate of each variant when the caller gives none.
DEFAULT_DROPOUT = {"v1": 0.0, "v2": 0.5, "v3": 0.5, "v4": 0.0, "reuse6": 0.0}


def check_variant(variant: str, model: str) -> None:
    """Raise a ValueError for an unknown spinal head variant."""
    if variant not in VARIANTS:
        raise ValueError(f"{model}: variant must be one of {VARIANTS}, got {variant!r}")


def spinal_head(
    variant: str,
    features: int | None,
    width: int,
    *,
    num_layers: int = 4,
    num_splits: int = 2,
    dropout: float | None = None,
    zero_bias: bool = False,
    dtype: Any = None,
    name: str | None = "spinal",
    detached: bool = False,
) -> SpinalDense:
    """A ``SpinalDense`` built as the original's head ``variant``, with PyTorch's default init.

    ``detached``: build it outside any parent module (to describe it, e.g. in ``torch_layouts``).
    """
    check_variant(variant, "spinal_head")
    rate = DEFAULT_DROPOUT[variant] if dropout is None else dropout
    if variant in ("v1", "v4"):
        rate = 0.0
    kwargs: dict[str, Any] = {"parent": None} if detached else {}
    if variant == "reuse6":
        num_layers = 6
        # Layers 5 and 6 (0-based 4, 5) reuse the weights of layers 3 and 4 (0-based 2, 3).
        kwargs["weight_sharing"] = (0, 1, 2, 3, 2, 3)
    activation = {
        "v1": nn.relu,
        "v2": nn.relu,
        "v3": nn.relu,
        "v4": None,
        "reuse6": nn.leaky_relu,
    }[variant]
    return SpinalDense(
        features=features,
        layer_width=width,
        num_layers=num_layers,
        num_splits=num_splits,
        activation=activation,
        dropout_rate=rate,
        batch_norm=variant == "v3",
        unbiased_running_var=True,
        init_scheme="torch",
        zero_bias=zero_bias,
        dtype=dtype,
        name=name,
        **kwargs,
    )


def named_entries(
    layer: SpinalDense,
    flax_prefix: tuple[str, ...],
    hidden_names: list[str],
    output_name: str | None,
    torch_prefix: str = "",
) -> list:
    """Entries for a head whose Linear layers are plain attributes with the given names
    (e.g. ``fc1, fc1_1, ..., fc2``); ``output_name=None`` when the layer has no output Dense."""
    from spinal_jax.interop.torch import spinal_dense_entries

    return spinal_dense_entries(
        layer,
        "named",
        prefix=torch_prefix,
        flax_prefix=flax_prefix,
        hidden_names=hidden_names,
        output_name=output_name,
    )


def variant_entries(
    layer: SpinalDense, variant: str, flax_prefix: tuple[str, ...], torch_prefix: str = ""
) -> list:
    """Entries of the original's head classes for ``variant`` (ORIGINAL.md §1.1, §6).

    v1 ``SpinalNet_ResNet``: ``fc_spinal_layerK.0`` / ``fc_out.0`` (Dropout lines commented out);
    v2/v3 ``fc_spinal_layerK.1`` (+ ``.2`` BatchNorm1d for v3) / ``fc_out.1``;
    v4 ``SpinalNet_Resnet``: ``layerK`` / ``_out``; reuse6 (§1.5): ``fc1 … fc6`` / ``fcx``.
    """
    from spinal_jax.interop.torch import spinal_dense_entries

    check_variant(variant, "variant_entries")
    n = layer.num_layers
    if variant in ("v2", "v3"):
        return spinal_dense_entries(
            layer, "sequential", prefix=torch_prefix, flax_prefix=flax_prefix
        )
    hidden, out = {
        "v1": ([f"fc_spinal_layer{k + 1}.0" for k in range(n)], "fc_out.0"),
        "v4": ([f"layer{k + 1}" for k in range(n)], "_out"),
        "reuse6": ([f"fc{k + 1}" for k in range(n)], "fcx"),
    }[variant]
    return named_entries(layer, flax_prefix, hidden, out, torch_prefix)
