"""PyTorch state dicts <-> Flax variables, for SpinalDense and (through ``torch_layouts``) whole models.

A *layout* is a list of ``TorchEntry`` (torch module prefix, path in the Flax tree, kind).
Layouts name the per-layer form of SpinalDense parameters (``hidden_k``, ``bn_k``); variables in
the stacked form (``SpinalDense(stack_layers=True)``: ``hidden_stack``, ``bn_stack``, anywhere in a
model tree) are unstacked when writing and stacked back when loading
(``spinal_jax.reference.unstack_layers`` / ``restack_layers``). The engine
here converts every entry and checks every key and shape, raising one ``ValueError`` that lists all
missing, unexpected and mis-shaped keys. PyTorch is not imported: values may be NumPy arrays or
torch tensors (anything with ``.detach()``/``.numpy()``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spinal_jax.layers import SpinalDense, segment_size
from spinal_jax.reference import restack_layers, unstack_layers

__all__ = [
    "TorchEntry",
    "load_state_dict",
    "spinal_dense_entries",
    "to_state_dict",
    "torch_layouts",
]

_KINDS = ("linear", "conv", "bn")


@dataclasses.dataclass(frozen=True)
class TorchEntry:
    """One torch module (``torch_prefix``, e.g. ``"fc1"``) mapped to a Flax sub-tree (``flax_path``).

    ``kind``: ``"linear"`` (weight (out, in) <-> kernel (in, out), bias), ``"conv"`` (weight
    (O, I, kh, kw) <-> kernel (kh, kw, I, O), optional bias) or ``"bn"`` (weight/bias <-> params
    scale/bias, running_mean/var <-> batch_stats mean/var; num_batches_tracked ignored on load).
    """

    torch_prefix: str
    flax_path: tuple[str, ...]
    kind: str

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"TorchEntry kind must be one of {_KINDS}, got {self.kind!r}")


def spinal_dense_entries(
    layer: SpinalDense,
    style: str = "customizable",
    prefix: str = "",
    flax_prefix: tuple[str, ...] = (),
    hidden_names: Sequence[str] | None = None,
    output_name: str | None = None,
) -> list[TorchEntry]:
    """Entries of one SpinalDense in the original's key layouts.

    ``"customizable"``: ``fc1 .. fcL`` and ``fcx`` (§1.6; BatchNorm, if any, as ``bn1 .. bnL``).
    ``"sequential"``: ``fc_spinal_layerK.1`` (Linear), ``fc_spinal_layerK.2`` (BatchNorm1d),
    ``fc_out.1`` (§1.1 V2/V3 classes). ``"named"``: ``hidden_names`` (one per hidden layer) and
    ``output_name`` (e.g. the small CNN's ``fc1, fc1_1 .. fc1_5`` and ``fc2``); BatchNorm not supported.
    ``prefix`` is prepended to torch keys (e.g. ``"fc."``), ``flax_prefix`` to Flax paths.
    """
    L = layer.num_layers
    entries: list[TorchEntry] = []

    def add(name: str, path: str, kind: str) -> None:
        entries.append(TorchEntry(prefix + name, (*flax_prefix, path), kind))

    if style == "customizable":
        for k in range(L):
            add(f"fc{k + 1}", f"hidden_{k}", "linear")
            if layer.batch_norm:
                add(f"bn{k + 1}", f"bn_{k}", "bn")
        if layer.features is not None:
            add("fcx", "output", "linear")
    elif style == "sequential":
        for k in range(L):
            add(f"fc_spinal_layer{k + 1}.1", f"hidden_{k}", "linear")
            if layer.batch_norm:
                add(f"fc_spinal_layer{k + 1}.2", f"bn_{k}", "bn")
        if layer.features is not None:
            add("fc_out.1", "output", "linear")
    elif style == "named":
        if hidden_names is None or len(hidden_names) != L:
            raise ValueError(f"style='named' needs hidden_names with num_layers={L} names")
        if layer.batch_norm:
            raise ValueError("style='named' does not support batch_norm; use 'sequential'")
        for k, name in enumerate(hidden_names):
            add(name, f"hidden_{k}", "linear")
        if layer.features is not None:
            if output_name is None:
                raise ValueError("style='named' needs output_name for a layer with features")
            add(output_name, "output", "linear")
    else:
        raise ValueError(f"style must be 'customizable', 'sequential' or 'named', got {style!r}")
    return entries


def torch_layouts(module: Any) -> dict[str, list[TorchEntry]]:
    """The module's torch layouts (first = default): SpinalDense's two, or ``module.torch_layouts()``."""
    if isinstance(module, SpinalDense):
        return {
            "customizable": spinal_dense_entries(module, "customizable"),
            "sequential": spinal_dense_entries(module, "sequential"),
        }
    if hasattr(module, "torch_layouts"):
        return dict(module.torch_layouts())
    raise ValueError(f"{type(module).__name__} has no torch layouts (no torch_layouts() method)")


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; numpy has no bfloat16, so go through float32
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype not in _np_floats():
            value = value.float()
        return value.numpy().copy()  # torch shares memory with .numpy(); do not alias its buffers
    return np.array(value, copy=True)


def _np_floats():
    import torch  # only reached when torch tensors are passed

    return (torch.float16, torch.float32, torch.float64)


def _torch_keys(entry: TorchEntry, has_bias: bool) -> dict[str, tuple[str, str]]:
    """torch key -> (collection, leaf name) for one entry."""
    p = entry.torch_prefix
    if entry.kind == "bn":
        return {
            f"{p}.weight": ("params", "scale"),
            f"{p}.bias": ("params", "bias"),
            f"{p}.running_mean": ("batch_stats", "mean"),
            f"{p}.running_var": ("batch_stats", "var"),
        }
    keys = {f"{p}.weight": ("params", "kernel")}
    if has_bias:
        keys[f"{p}.bias"] = ("params", "bias")
    return keys


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(tree, Mapping) or name not in tree:
            return None
        tree = tree[name]
    return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def _to_flax(kind: str, leaf: str, value: np.ndarray) -> np.ndarray:
    if leaf == "kernel":
        return value.T if kind == "linear" else value.transpose(2, 3, 1, 0)
    return value


def _to_torch(kind: str, leaf: str, value: np.ndarray) -> np.ndarray:
    if leaf == "kernel":
        return np.ascontiguousarray(value.T if kind == "linear" else value.transpose(3, 2, 0, 1))
    return value


def _abstract_variables(module: Any, state_dict: Mapping[str, Any], layout: list[TorchEntry],
                        in_features: int | None) -> Any:
    """Shapes and dtypes of the module's variables (SpinalDense: input width from the state dict)."""
    if isinstance(module, SpinalDense):
        if in_features is None:
            w0 = state_dict.get(f"{layout[0].torch_prefix}.weight")
            if w0 is None:
                return None
            s = int(np.shape(w0)[1])
            in_features = s * module.num_splits
            if segment_size(in_features, module.num_splits) != s:  # pragma: no cover (cannot happen)
                raise ValueError(f"cannot infer in_features from segment size {s}")
        x = jax.ShapeDtypeStruct((1, in_features), jnp.float32)
    else:
        if in_features is not None:
            raise ValueError("in_features is only used for a SpinalDense")
        shape = tuple(module.input_shape() if callable(module.input_shape) else module.input_shape)
        x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    return jax.eval_shape(lambda xx: module.init(jax.random.key(0), xx), x)


def _match(layout: list[TorchEntry], abstract: Any, state_dict: Mapping[str, Any]):
    """Expected torch keys with their torch shapes; the missing, unexpected, mis-shaped lists."""
    expected: dict[str, tuple[TorchEntry, str, str, tuple[int, ...]]] = {}
    for entry in layout:
        has_bias = _get(abstract, ("params", *entry.flax_path, "bias")) is not None
        for key, (coll, leaf) in _torch_keys(entry, has_bias).items():
            ab = _get(abstract, (coll, *entry.flax_path, leaf))
            if ab is None:
                raise ValueError(f"layout entry {entry} names {coll}/{'/'.join(entry.flax_path)}/{leaf}, which the module lacks")
            shape = tuple(_to_torch(entry.kind, leaf, np.empty(ab.shape, np.bool_)).shape)
            expected[key] = (entry, coll, leaf, shape)
    given = {k for k in state_dict if not k.endswith(".num_batches_tracked")}
    missing = sorted(set(expected) - given)
    unexpected = sorted(given - set(expected))
    misshaped = sorted(
        f"{k}: got {tuple(np.shape(state_dict[k]))}, expected {expected[k][3]}"
        for k in set(expected) & given
        if tuple(np.shape(state_dict[k])) != expected[k][3]
    )
    return expected, missing, unexpected, misshaped


def load_state_dict(
    module: Any, state_dict: Mapping[str, Any], in_features: int | None = None
) -> dict[str, Any]:
    """Flax variables (``{"params", "batch_stats"}``) from a PyTorch state dict.

    The layout is detected from the keys among ``torch_layouts(module)``. For a SpinalDense the
    input width is ``s * num_splits`` (``s`` = in-features of the first hidden Linear) unless
    ``in_features`` is given. Values may be NumPy arrays or torch tensors.
    """
    state_dict = {k: _to_numpy(v) for k, v in state_dict.items()}
    layouts = torch_layouts(module)
    best = None
    for name, layout in layouts.items():
        stacked_abstract = _abstract_variables(module, state_dict, layout, in_features)
        if stacked_abstract is None:
            continue
        abstract = unstack_layers(
            stacked_abstract, take=lambda a, _i: jax.ShapeDtypeStruct(a.shape[1:], a.dtype)
        )
        expected, missing, unexpected, misshaped = _match(layout, abstract, state_dict)
        score = len(missing) + len(unexpected) + len(misshaped)
        if best is None or score < best[0]:
            best = (score, name, abstract, expected, missing, unexpected, misshaped, stacked_abstract)
        if score == 0:
            break
    if best is None:
        firsts = [f"{lay[0].torch_prefix}.weight" for lay in layouts.values()]
        raise ValueError(
            f"state dict matches no layout of {type(module).__name__} ({sorted(layouts)}): "
            f"none of the keys {firsts} is present; got keys {sorted(state_dict)[:20]}"
        )
    _, name, abstract, expected, missing, unexpected, misshaped, stacked_abstract = best
    if missing or unexpected or misshaped:
        raise ValueError(
            f"state dict does not fit {type(module).__name__} (closest layout {name!r}): "
            f"missing keys {missing}; unexpected keys {unexpected}; mis-shaped keys {misshaped}"
        )
    variables: dict[str, Any] = {}
    for key, (entry, coll, leaf, _) in expected.items():
        ab = _get(abstract, (coll, *entry.flax_path, leaf))
        value = _to_flax(entry.kind, leaf, state_dict[key])
        _set(variables, (coll, *entry.flax_path, leaf), jnp.asarray(value, dtype=ab.dtype))
    flax_leaves = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]}
    got_leaves = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(variables)[0]}
    if flax_leaves != got_leaves:
        raise ValueError(
            f"layout {name!r} does not cover the module's variables: {sorted(flax_leaves - got_leaves)}"
        )
    return restack_layers(variables, stacked_abstract, stack=jnp.stack)


def to_state_dict(
    module: Any, variables: Mapping[str, Any], layout: str | None = None
) -> dict[str, np.ndarray]:
    """A PyTorch-style state dict (NumPy arrays) in ``layout`` (default: the module's first layout).

    BatchNorm ``num_batches_tracked`` is not written (``torch.nn.Module.load_state_dict`` fills it).
    """
    layouts = torch_layouts(module)
    name = layout if layout is not None else next(iter(layouts))
    if name not in layouts:
        raise ValueError(f"layout must be one of {sorted(layouts)}, got {layout!r}")
    variables = unstack_layers(variables)
    out: dict[str, np.ndarray] = {}
    for entry in layouts[name]:
        has_bias = _get(variables, ("params", *entry.flax_path, "bias")) is not None
        for key, (coll, leaf) in _torch_keys(entry, has_bias).items():
            value = _get(variables, (coll, *entry.flax_path, leaf))
            if value is None:
                raise ValueError(f"variables lack {coll}/{'/'.join(entry.flax_path)}/{leaf} (for {key})")
            if value.dtype == jnp.bfloat16:
                value = jnp.asarray(value).astype(jnp.float32)
            value = np.array(value, copy=True)  # writable, owned (torch.from_numpy needs writable)
            out[key] = _to_torch(entry.kind, leaf, value)
    return out
