"""Float64 NumPy reference of ``SpinalDense`` and the static segment plan shared with the JAX layers.

This module imports NumPy only (no JAX), so it can check the JAX layers independently. ``forward``
takes the same parameter tree as the linen layer's variables (``{"params": ..., "batch_stats": ...}``
or the two dicts separately) and computes in float64, in eval mode or in train mode (BatchNorm with
batch statistics; dropout is not modelled).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "STACKED_NAMES",
    "SpinalPlan",
    "check_options",
    "forward",
    "make_plan",
    "restack_layers",
    "segment_size",
    "unstack_layers",
]

#: Stacked entry name -> per-layer name pattern of layers 1..L-1 (``SpinalDense(stack_layers=True)``).
STACKED_NAMES = {"hidden_stack": "hidden_{}", "bn_stack": "bn_{}"}


def unstack_layers(tree: Any, take: Callable[[Any, int], Any] | None = None) -> Any:
    """The per-layer form of a tree holding stacked SpinalDense entries (any nesting depth).

    Every mapping entry ``hidden_stack`` / ``bn_stack`` (leaves with a leading axis of L-1) becomes
    ``hidden_1 .. hidden_{L-1}`` / ``bn_1 .. bn_{L-1}``: the same numbers, sliced along axis 0.
    Works on whole variable dicts, params or batch_stats alone, and model trees; other entries are
    kept (not copied). ``take(leaf, i)`` slices a leaf (default ``leaf[i]``; NumPy or JAX arrays).
    """
    if not isinstance(tree, Mapping):
        return tree
    take = take if take is not None else (lambda a, i: a[i])
    out: dict[str, Any] = {}
    for name, sub in tree.items():
        if name in STACKED_NAMES and isinstance(sub, Mapping):
            depth = next(iter(sub.values())).shape[0]
            for i in range(depth):
                out[STACKED_NAMES[name].format(i + 1)] = {leaf: take(v, i) for leaf, v in sub.items()}
        else:
            out[name] = unstack_layers(sub, take)
    return out


def restack_layers(tree: Any, like: Any, stack: Callable[[list[Any]], Any] = np.stack) -> Any:
    """Inverse of ``unstack_layers``: stack ``hidden_1..`` / ``bn_1..`` back wherever ``like`` (a
    stacked tree of the same structure, arrays or shape structs) has ``hidden_stack`` / ``bn_stack``.
    """
    if not isinstance(tree, Mapping) or not isinstance(like, Mapping):
        return tree
    out = dict(tree)
    for name, sub in like.items():
        if name in STACKED_NAMES and isinstance(sub, Mapping):
            depth = next(iter(sub.values())).shape[0]
            names = [STACKED_NAMES[name].format(i + 1) for i in range(depth)]
            missing = [n for n in names if n not in out]
            if missing:
                raise ValueError(f"cannot stack {name!r}: the tree lacks {missing}")
            layers = [out.pop(n) for n in names]
            out[name] = {leaf: stack([lay[leaf] for lay in layers]) for leaf in sub}
        elif name in out:
            out[name] = restack_layers(out[name], sub, stack)
    return out


def segment_size(in_features: int, num_splits: int) -> int:
    """Size of one input segment: ``round(in_features / num_splits)``, rounding half to even (NumPy)."""
    return int(np.round(in_features / num_splits))


def check_options(
    layer_width: int,
    num_layers: int,
    num_splits: int,
    dropout_rate: float = 0.0,
    output_dropout_rate: float | None = None,
) -> None:
    """Raise ``ValueError`` for hyper-parameters outside their allowed ranges."""
    for name, value in (
        ("num_layers", num_layers),
        ("num_splits", num_splits),
        ("layer_width", layer_width),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name, rate in (("dropout_rate", dropout_rate), ("output_dropout_rate", output_dropout_rate)):
        if rate is not None and not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {rate!r}")


@dataclasses.dataclass(frozen=True)
class SpinalPlan:
    """Static description of which input features and weights each hidden layer uses.

    ``starts[k]`` is the first input feature of layer ``k``'s segment, which covers features
    ``(starts[k] + j) % in_features`` for ``j < segment_size``. ``reuse[k]`` is the index of the
    hidden layer whose weights layer ``k`` uses (``k`` itself without weight sharing). ``groups``
    lists each distinct segment start with the layers that read it, in layer order.
    """

    in_features: int
    num_splits: int
    segment_size: int
    layer_width: int
    num_layers: int
    reuse: tuple[int, ...]
    starts: tuple[int, ...]
    groups: tuple[tuple[int, tuple[int, ...]], ...]

    def hidden_in_features(self, k: int) -> int:
        """Input width of hidden layer ``k``'s Dense: the segment, plus the previous output for k > 0."""
        return self.segment_size + (self.layer_width if k > 0 else 0)

    def segment_pieces(self, start: int) -> tuple[tuple[int, int], ...]:
        """The segment starting at ``start`` as one or two contiguous ``(begin, end)`` slices."""
        end = start + self.segment_size
        if end <= self.in_features:
            return ((start, end),)
        return ((start, self.in_features), (0, end - self.in_features))

    def segment_indices(self, k: int) -> np.ndarray:
        """Input feature indices read by hidden layer ``k``."""
        return (self.starts[k] + np.arange(self.segment_size)) % self.in_features


def make_plan(
    in_features: int,
    num_splits: int,
    layer_width: int,
    num_layers: int,
    weight_sharing: Sequence[int] | None = None,
) -> SpinalPlan:
    """Validate the hyper-parameters against the input width and build the static plan.

    ``weight_sharing`` (length ``num_layers``): entry ``k`` is the hidden layer whose weights layer
    ``k`` uses; layer 0 must use its own, layers k > 0 one of layers 1..num_layers-1. Example, the
    original's regression head (§1.5): ``(0, 1, 2, 3, 2, 3)``; the shared-weight variant (§1.7):
    ``(0,) + (1,) * (num_layers - 1)``.
    """
    check_options(layer_width, num_layers, num_splits)
    if isinstance(in_features, bool) or not isinstance(in_features, (int, np.integer)):
        raise ValueError(f"in_features must be an integer, got {in_features!r}")
    if in_features < 1:
        raise ValueError(f"the input must have at least 1 feature (last axis), got {in_features}")
    if num_splits > in_features:
        raise ValueError(
            f"num_splits must be in [1, {in_features}] (the input's last dimension), got {num_splits}"
        )
    s = segment_size(in_features, num_splits)
    if weight_sharing is None:
        reuse = tuple(range(num_layers))
    else:
        reuse = tuple(int(j) for j in weight_sharing)
        if len(reuse) != num_layers:
            raise ValueError(
                f"weight_sharing must have num_layers={num_layers} entries, got {len(reuse)}"
            )
        if reuse[0] != 0:
            raise ValueError(f"weight_sharing[0] must be 0 (layer 0 has no previous input), got {reuse[0]}")
        for k, j in enumerate(reuse[1:], start=1):
            if not 1 <= j < num_layers:
                raise ValueError(
                    f"weight_sharing[{k}] must be in [1, {num_layers - 1}] (a hidden layer that reads "
                    f"a previous output), got {j}"
                )
    starts = tuple((k * s) % in_features for k in range(num_layers))
    order: dict[int, list[int]] = {}
    for k, st in enumerate(starts):
        order.setdefault(st, []).append(k)
    groups = tuple((st, tuple(users)) for st, users in order.items())
    return SpinalPlan(in_features, num_splits, s, layer_width, num_layers, reuse, starts, groups)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def forward(
    variables: Mapping[str, Any],
    x: np.ndarray,
    *,
    num_splits: int = 2,
    activation: Callable[[np.ndarray], np.ndarray] | None = _relu,
    batch_norm: bool = False,
    train: bool = False,
    bn_epsilon: float = 1e-5,
    weight_sharing: Sequence[int] | None = None,
    batch_stats: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """SpinalDense in float64 from a parameter tree; ``activation`` must be a NumPy function.

    Both parameter forms are accepted (per-layer ``hidden_k``, or stacked ``hidden_stack``).
    ``variables`` is either ``{"params": ..., "batch_stats": ...}`` or the params dict itself (then
    pass ``batch_stats`` separately when ``batch_norm``). ``train=True`` normalises with the batch
    statistics (biased variance, as PyTorch); it does not return updated running statistics.
    Returns the output Dense's result, or the concatenated hidden outputs without an ``output`` entry.
    """
    if "params" in variables:
        params = variables["params"]
        batch_stats = variables.get("batch_stats", batch_stats)
    else:
        params = variables
    params, batch_stats = unstack_layers(params), unstack_layers(batch_stats)
    x = np.asarray(x, dtype=np.float64)
    lead = x.shape[:-1]
    xf = x.reshape(-1, x.shape[-1])
    num_layers = sum(1 for name in params if name.startswith("hidden_"))
    kernel0 = np.asarray(params["hidden_0"]["kernel"])
    layer_width = kernel0.shape[1]
    plan = make_plan(xf.shape[1], num_splits, layer_width, num_layers, weight_sharing)
    if kernel0.shape[0] != plan.segment_size:
        raise ValueError(
            f"input has {xf.shape[1]} features (segment size {plan.segment_size}), but the "
            f"parameters were made for segment size {kernel0.shape[0]}"
        )
    act = activation if activation is not None else (lambda v: v)
    hidden: list[np.ndarray] = []
    prev = None
    for k in range(num_layers):
        seg = xf[:, plan.segment_indices(k)]
        inp = seg if prev is None else np.concatenate([seg, prev], axis=1)
        p = params[f"hidden_{plan.reuse[k]}"]
        z = inp @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)
        if batch_norm:
            bn = params[f"bn_{k}"]
            if train:
                mean = z.mean(axis=0)
                var = ((z - mean) ** 2).mean(axis=0)
            else:
                stats = batch_stats[f"bn_{k}"]
                mean = np.asarray(stats["mean"], np.float64)
                var = np.asarray(stats["var"], np.float64)
            z = (z - mean) / np.sqrt(var + bn_epsilon) * np.asarray(
                bn["scale"], np.float64
            ) + np.asarray(bn["bias"], np.float64)
        prev = act(z)
        hidden.append(prev)
    h = np.concatenate(hidden, axis=1)
    if "output" in params:
        out = params["output"]
        h = h @ np.asarray(out["kernel"], np.float64) + np.asarray(out["bias"], np.float64)
    return h.reshape(*lead, h.shape[-1])
