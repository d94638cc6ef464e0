"""SpinalDense (linen): float32 JAX vs the float64 NumPy reference, shapes, counts, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from spinal_jax import SpinalDense, layers, reference
from spinal_jax.layers import make_plan, num_params, spinal_forward
from spinal_jax.reference import restack_layers, unstack_layers

ACTIVATIONS = {
    "relu": (nn.relu, lambda v: np.maximum(v, 0.0)),
    "tanh": (jnp.tanh, np.tanh),
    "leaky": (lambda v: nn.leaky_relu(v, 0.01), lambda v: np.where(v >= 0, v, 0.01 * v)),
    "linear": (None, None),
}


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def to_np(tree):
    return jax.tree_util.tree_map(lambda v: np.asarray(v, np.float64), tree)


def jit_apply(layer):
    """``layer.apply`` compiled once per shape (op-by-op eager dispatch is slow on a small CPU)."""
    return jax.jit(layer.apply, static_argnames=("train", "mutable"))


def random_config(rng: np.random.Generator) -> dict:
    d = int(rng.integers(1, 40))
    return dict(
        d=d,
        num_splits=int(rng.integers(1, min(d, 6) + 1)),
        layer_width=int(rng.integers(1, 9)),
        num_layers=int(rng.integers(1, 13)),
        activation=str(rng.choice(list(ACTIVATIONS))),
        batch_norm=bool(rng.integers(0, 2)),
        features=None if rng.random() < 0.2 else int(rng.integers(1, 6)),
        batch=int(rng.integers(2, 7)),
        stack_layers=bool(rng.integers(0, 2)),
    )


def _setup(cfg: dict, seed: int):
    act, np_act = ACTIVATIONS[cfg["activation"]]
    layer = SpinalDense(
        cfg["features"], cfg["layer_width"], cfg["num_layers"], num_splits=cfg["num_splits"],
        activation=act, batch_norm=cfg["batch_norm"], init_scheme="torch",
        stack_layers=cfg["stack_layers"],
    )
    key = jax.random.key(seed)
    kx, kp, ks = jax.random.split(key, 3)
    x = jax.random.normal(kx, (cfg["batch"], cfg["d"]))
    variables = jax.jit(layer.init)(kp, x)
    if cfg["batch_norm"]:  # random affine and running statistics instead of the trivial ones
        leaves, tdef = jax.tree_util.tree_flatten(variables)
        keys = jax.random.split(ks, len(leaves))
        variables = jax.tree_util.tree_unflatten(
            tdef, [v + 0.3 * jnp.abs(jax.random.normal(k, v.shape)) for v, k in zip(leaves, keys, strict=False)]
        )
    return layer, variables, x, np_act


@pytest.fixture(params=["written_out", "loop"])
def chain(request, monkeypatch):
    """Run a test with the chain written out layer by layer (the default for short chains) and as a
    ``lax.scan`` loop (``layers.SCAN_UNROLL_MAX = 0``, the form of deep chains)."""
    if request.param == "loop":
        monkeypatch.setattr(layers, "SCAN_UNROLL_MAX", 0)
    return request.param


@pytest.mark.parametrize("seed", range(8))
def test_matches_float64_reference(seed, chain):
    """Random configurations (either parameter form, either chain form): outputs and gradients
    (directional, per leaf) within 1e-5 relative of the float64 reference."""
    rng = np.random.default_rng(seed)
    cfg = random_config(rng)
    layer, variables, x, np_act = _setup(cfg, seed)
    train = cfg["batch_norm"] and bool(rng.integers(0, 2))
    ref_kw = dict(num_splits=cfg["num_splits"], activation=np_act, batch_norm=cfg["batch_norm"], train=train)
    stats = variables.get("batch_stats", {})
    c = rng.standard_normal((cfg["batch"], cfg["features"] or cfg["num_layers"] * cfg["layer_width"]))

    def loss(params, x):
        y = layer.apply({"params": params, "batch_stats": stats}, x, train=train, mutable=["batch_stats"])[0]
        return jnp.sum(y * c), y

    (_, y), (g_params, g_x) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        variables["params"], x
    )
    p64, s64, x64 = to_np(variables["params"]), to_np(stats), np.asarray(x, np.float64)
    y_ref = reference.forward(p64, x64, batch_stats=s64, **ref_kw)
    assert y.shape == y_ref.shape
    assert rel_err(y, y_ref) <= 1e-5, cfg

    def ref_loss(p, xx):
        return float(np.sum(reference.forward(p, xx, batch_stats=s64, **ref_kw) * c))

    h = 1e-6
    # Directional derivative along a random direction, for the input and for each parameter leaf.
    targets = [("x", g_x, None)] + [
        (jax.tree_util.keystr(path), g, path)
        for path, g in jax.tree_util.tree_flatten_with_path(g_params)[0]
    ]
    # Scale: the RMS of the largest gradient leaf times |v| (leaves that are zero in exact arithmetic,
    # e.g. a bias before a train-mode BatchNorm, only carry float32 round-off).
    rms = max(float(np.sqrt(np.mean(np.square(np.asarray(g, np.float64))))) for _, g, _ in targets)
    for name, g, path in targets:
        g = np.asarray(g, np.float64)
        v = rng.standard_normal(g.shape)

        def shifted(t, path=path, v=v):
            if path is None:
                return p64, x64 + t * v
            p = jax.tree_util.tree_map_with_path(
                lambda q, leaf: leaf + t * v if q == path else leaf, p64
            )
            return p, x64

        fd = (ref_loss(*shifted(h)) - ref_loss(*shifted(-h))) / (2 * h)
        scale = rms * np.linalg.norm(v)
        assert abs(float(np.sum(g * v)) - fd) / scale <= 1e-5, (name, cfg)


def test_plan_segments_wrap_and_round_half_even():
    plan = make_plan(10, 3, 4, 5)
    assert plan.segment_size == 3
    assert plan.segment_indices(3).tolist() == [9, 0, 1]
    assert plan.segment_pieces(9) == ((9, 10), (0, 2))
    assert make_plan(10, 4, 1, 1).segment_size == 2  # 2.5 -> 2
    assert make_plan(6, 4, 1, 1).segment_size == 2  # 1.5 -> 2
    halves = make_plan(8, 2, 3, 4)
    assert [halves.segment_indices(k)[0] for k in range(4)] == [0, 4, 0, 4]


def test_alternating_halves_explicit():
    """num_splits=2, 4 layers written out by hand (the canonical head of the original)."""
    layer = SpinalDense(3, 5, 4)
    x = jax.random.normal(jax.random.key(0), (4, 12))
    v = jax.jit(layer.init)(jax.random.key(1), x)
    p = v["params"]
    halves = [x[:, :6], x[:, 6:]]
    h, outs = None, []
    for k in range(4):
        inp = halves[k % 2] if h is None else jnp.concatenate([halves[k % 2], h], axis=1)
        h = nn.relu(inp @ p[f"hidden_{k}"]["kernel"] + p[f"hidden_{k}"]["bias"])
        outs.append(h)
    want = jnp.concatenate(outs, axis=1) @ p["output"]["kernel"] + p["output"]["bias"]
    assert rel_err(jit_apply(layer)(v, x), want) <= 1e-6


def test_param_tree_and_original_head_counts():
    vgg = SpinalDense(10, 128, 4, batch_norm=True)
    v = jax.eval_shape(vgg.init, jax.random.key(0), jnp.ones((2, 256)))
    assert v["params"]["hidden_0"]["kernel"].shape == (128, 128)
    assert v["params"]["hidden_3"]["kernel"].shape == (256, 128)
    assert v["params"]["output"]["kernel"].shape == (512, 10)
    assert v["params"]["bn_2"]["scale"].shape == (128,)
    assert v["batch_stats"]["bn_3"]["var"].shape == (128,)
    count = sum(a.size for a in jax.tree_util.tree_leaves(v["params"]))
    assert count == 121_354 == num_params(10, 256, 128, 4, batch_norm=True)
    small = SpinalDense(10, 8, 6)
    v = jax.eval_shape(small.init, jax.random.key(0), jnp.ones((2, 320)))
    assert sum(a.size for a in jax.tree_util.tree_leaves(v)) == 8_538 == num_params(10, 320, 8, 6)
    assert "batch_stats" not in v
    # stacked form: the same numbers of the same shapes, layers 1..L-1 along a leading axis
    st = SpinalDense(10, 128, 4, batch_norm=True, stack_layers=True)
    v = jax.eval_shape(st.init, jax.random.key(0), jnp.ones((2, 256)))
    shapes = jax.tree_util.tree_map(lambda a: a.shape, v)
    assert shapes["params"]["hidden_0"] == {"kernel": (128, 128), "bias": (128,)}
    assert shapes["params"]["hidden_stack"] == {"kernel": (3, 256, 128), "bias": (3, 128)}
    assert shapes["params"]["bn_stack"] == {"scale": (3, 128), "bias": (3, 128)}
    assert shapes["batch_stats"] == {"bn_0": {"mean": (128,), "var": (128,)},
                                     "bn_stack": {"mean": (3, 128), "var": (3, 128)}}
    assert sum(a.size for a in jax.tree_util.tree_leaves(v["params"])) == 121_354


def test_features_none_returns_concatenation():
    layer = SpinalDense(None, 3, 5, num_splits=3)
    x = jnp.ones((2, 4, 9))
    v = jax.eval_shape(layer.init, jax.random.key(0), x)
    assert "output" not in v["params"]
    assert jax.eval_shape(layer.apply, v, x).shape == (2, 4, 15)


def test_weight_sharing_regression_variant():
    """The original's regression head (§1.5): layers 5, 6 reuse layers 3, 4; hidden_4/5 unused."""
    share = (0, 1, 2, 3, 2, 3)
    lrelu = ACTIVATIONS["leaky"]
    layer = SpinalDense(1, 5, 6, activation=lrelu[0], weight_sharing=share, init_scheme="torch")
    x = jax.random.normal(jax.random.key(0), (7, 8))
    v = jax.jit(layer.init)(jax.random.key(1), x)
    assert "hidden_5" in v["params"]
    y = jit_apply(layer)(v, x)
    want = reference.forward(to_np(v), np.asarray(x), activation=lrelu[1], weight_sharing=share)
    assert rel_err(y, want) <= 1e-5
    g = jax.jit(jax.grad(lambda p: layer.apply({"params": p}, x).sum()))(v["params"])
    assert float(jnp.abs(g["hidden_4"]["kernel"]).max()) == 0.0
    assert float(jnp.abs(g["hidden_2"]["kernel"]).max()) > 0.0
    plain = SpinalDense(1, 5, 6, activation=lrelu[0])
    assert rel_err(jit_apply(plain)(v, x), y) > 1e-3
    # shared-weight variant (§1.7): one fc2 for layers 2..L
    sw = SpinalDense(2, 4, 5, weight_sharing=(0, 1, 1, 1, 1))
    v = jax.jit(sw.init)(jax.random.key(2), x)
    assert rel_err(jit_apply(sw)(v, x), reference.forward(to_np(v), np.asarray(x), weight_sharing=(0, 1, 1, 1, 1))) <= 1e-5


def test_torch_init_and_zero_bias():
    layer = SpinalDense(4, 16, 3, init_scheme="torch")
    v = jax.jit(layer.init)(jax.random.key(0), jnp.ones((1, 64)))["params"]
    k1 = v["hidden_1"]["kernel"]  # fan_in 32 + 16 = 48
    assert float(jnp.abs(k1).max()) <= 1 / np.sqrt(48)
    assert float(jnp.abs(k1).max()) > 0.8 / np.sqrt(48)
    assert float(jnp.abs(v["hidden_1"]["bias"]).max()) > 0.0
    z = SpinalDense(4, 16, 3, init_scheme="torch", zero_bias=True)
    v = jax.jit(z.init)(jax.random.key(0), jnp.ones((1, 64)))["params"]
    assert all(float(jnp.abs(v[n]["bias"]).max()) == 0.0 for n in v)


def test_leading_dims_vmap_jit_grad():
    layer = SpinalDense(3, 4, 5, num_splits=3)
    x = jax.random.normal(jax.random.key(0), (2, 3, 11))
    v = jax.jit(layer.init)(jax.random.key(1), x)
    y = layer.apply(v, x)  # eager once
    apply = jit_apply(layer)
    flat = apply(v, x.reshape(6, 11)).reshape(2, 3, 3)
    assert rel_err(y, flat) <= 1e-6
    vm = jax.jit(jax.vmap(lambda xx: layer.apply(v, xx)))(x)
    assert rel_err(vm, y) <= 1e-6
    assert rel_err(apply(v, x), y) <= 1e-6
    g = jax.jit(jax.grad(lambda p: layer.apply({"params": p}, x).sum()))(v["params"])
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves(g))


def test_bfloat16():
    x = jax.random.normal(jax.random.key(0), (8, 32))
    f32 = SpinalDense(4, 16, 4, batch_norm=True)
    v = jax.jit(f32.init)(jax.random.key(1), x)
    want = jit_apply(f32)(v, x)
    bf = SpinalDense(4, 16, 4, batch_norm=True, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    vb = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), v)
    vb["batch_stats"] = v["batch_stats"]
    bf_apply = jit_apply(bf)
    got = bf_apply(vb, x.astype(jnp.bfloat16))
    assert got.dtype == jnp.bfloat16
    assert rel_err(got.astype(jnp.float32), want) < 5e-2
    vb2 = jax.eval_shape(bf.init, jax.random.key(1), x)
    assert vb2["params"]["hidden_1"]["kernel"].dtype == jnp.bfloat16
    y, upd = bf_apply(vb, x, train=True, mutable=("batch_stats",))
    assert y.dtype == jnp.bfloat16 and upd["batch_stats"]["bn_0"]["mean"].dtype == jnp.float32


@pytest.mark.parametrize("one_draw", [False, True])
def test_dropout_masks(monkeypatch, one_draw):
    """The hidden and output dropout multipliers: 0 or 1 / (1 - rate), each with its own rate, independent of
    each other, the same for the same key, ``None`` for a zero rate. Without ``ONE_DROPOUT_DRAW`` they are the
    Bernoulli draws of the split key (the stream of earlier versions); with it, one draw of uniforms cut in two."""
    monkeypatch.setattr(layers, "ONE_DROPOUT_DRAW", one_draw)
    key, shapes = jax.random.key(5), ((4, 500, 96), (4, 500, 32))
    hidden, out = layers._dropout_masks(key, (0.3, 0.6), shapes, jnp.float32)
    assert hidden.shape == shapes[0] and out.shape == shapes[1]
    for mask, rate in ((hidden, 0.3), (out, 0.6)):
        values = np.unique(np.asarray(mask))
        np.testing.assert_allclose(values, [0.0, 1.0 / (1.0 - rate)], rtol=1e-6)
        assert abs(float(np.mean(np.asarray(mask) == 0)) - rate) < 0.01  # 192k / 64k draws: ~0.001 / 0.002 sd
    both = np.concatenate([np.asarray(hidden)[..., :32] == 0, np.asarray(out) == 0])
    assert abs(float(np.mean(both[:4] & both[4:])) - 0.3 * 0.6) < 0.01  # independent
    again = layers._dropout_masks(key, (0.3, 0.6), shapes, jnp.float32)
    for a, b in zip(again, (hidden, out), strict=True):
        np.testing.assert_array_equal(a, b)
    assert layers._dropout_masks(key, (0.3, 0.0), shapes, jnp.float32)[1] is None
    if not one_draw:
        hidden_key, out_key = jax.random.split(key)
        np.testing.assert_array_equal(hidden, jax.random.bernoulli(hidden_key, 0.7, shapes[0]) / np.float32(0.7))
        np.testing.assert_array_equal(out, jax.random.bernoulli(out_key, 0.4, shapes[1]) / np.float32(0.4))


def test_dropout():
    layer = SpinalDense(None, 64, 3, dropout_rate=0.5, output_dropout_rate=0.0, activation=None)
    x = jnp.ones((16, 64))
    v = jax.jit(layer.init)(jax.random.key(0), x)
    apply = jit_apply(layer)
    eval_y = apply(v, x)
    assert rel_err(apply(v, x, train=False), eval_y) == 0.0
    with pytest.raises(Exception, match="dropout"):
        apply(v, x, train=True)
    a = apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
    b = apply(v, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert rel_err(a, b) > 1e-3
    assert rel_err(a, apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})) == 0.0
    # first layer's input is all ones: its dropout keeps ~half the features, scaled by 2
    only_out = SpinalDense(None, 8, 2, dropout_rate=0.0, output_dropout_rate=0.5)
    vo = jax.jit(only_out.init)(jax.random.key(0), x)
    out_apply = jit_apply(only_out)
    y = out_apply(vo, x, train=True, rngs={"dropout": jax.random.key(3)})
    ref = out_apply(vo, x)
    kept = np.asarray(y != 0)
    assert 0.35 < kept[np.asarray(ref) != 0].mean() < 0.65
    np.testing.assert_allclose(np.asarray(y)[kept], 2 * np.asarray(ref)[kept], rtol=1e-6)


def test_compiles_once_per_shape():
    traces = []

    def counting_relu(v):
        traces.append(1)
        return nn.relu(v)

    layer = SpinalDense(3, 4, 6, activation=counting_relu)
    x = jnp.ones((5, 10))
    v = jax.jit(layer.init)(jax.random.key(0), x)
    f = jax.jit(layer.apply)
    f(v, x)
    n = len(traces)
    assert n > 0
    f(v, x + 1.0)
    f(jax.tree_util.tree_map(lambda a: a * 2, v), x)
    assert len(traces) == n
    f(v, jnp.ones((7, 10)))
    assert len(traces) > n


def test_deep_stack():
    layer = SpinalDense(2, 3, 120, num_splits=4, stack_layers=True)
    x = jax.random.normal(jax.random.key(0), (3, 10))
    v = jax.jit(layer.init)(jax.random.key(1), x)
    want = reference.forward(to_np(v), np.asarray(x), num_splits=4)
    assert rel_err(jit_apply(layer)(v, x), want) <= 1e-5


@pytest.mark.parametrize(
    ("kwargs", "x_shape", "match"),
    [
        (dict(num_layers=0), (2, 8), "num_layers"),
        (dict(num_splits=0), (2, 8), "num_splits"),
        (dict(layer_width=0), (2, 8), "layer_width"),
        (dict(num_splits=9), (2, 8), r"num_splits must be in \[1, 8\]"),
        (dict(dropout_rate=1.0), (2, 8), r"dropout_rate must be in \[0, 1\)"),
        (dict(dropout_rate=-0.1), (2, 8), "dropout_rate"),
        (dict(output_dropout_rate=1.5), (2, 8), "output_dropout_rate"),
        (dict(weight_sharing=(0, 0, 1)), (2, 8), "weight_sharing"),
    ],
)
def test_bad_options(kwargs, x_shape, match):
    opts = dict(features=2, layer_width=3, num_layers=3, num_splits=2) | kwargs
    layer = SpinalDense(**opts)
    with pytest.raises(ValueError, match=match):
        layer.init(jax.random.key(0), jnp.ones(x_shape))


def test_bad_inputs():
    layer = SpinalDense(2, 3, 3)
    v = jax.jit(layer.init)(jax.random.key(0), jnp.ones((2, 8)))
    with pytest.raises(ValueError, match=r"hidden_stack.*stack_layers=True"):
        SpinalDense(2, 3, 3, stack_layers=True).apply(v, jnp.ones((2, 8)))
    with pytest.raises(ValueError, match=r"hidden_1.*stack_layers=False"):
        like = jax.eval_shape(SpinalDense(2, 3, 3, stack_layers=True).init, jax.random.key(0), jnp.ones((2, 8)))
        layer.apply(restack_layers(v, like), jnp.ones((2, 8)))
    with pytest.raises(ValueError, match=r"input last dimension is 12.*segment size 4"):
        layer.apply(v, jnp.ones((2, 12)))
    with pytest.raises(ValueError, match="floating"):
        layer.apply(v, jnp.ones((2, 8), jnp.int32))
    with pytest.raises(ValueError, match="floating"):
        layer.init(jax.random.key(0), jnp.ones((2, 8), jnp.int32))


def test_spinal_forward_is_pure():
    """The shared pure function gives the module's output from the same trees."""
    layer = SpinalDense(3, 4, 4, batch_norm=True)
    x = jax.random.normal(jax.random.key(0), (6, 9))
    v = jax.jit(layer.init)(jax.random.key(1), x)
    fwd = jax.jit(lambda v, x: spinal_forward(v["params"], v["batch_stats"], x, make_plan(9, 2, 4, 4),
                                              batch_norm=True, train=True))
    y, new = fwd(v, x)
    y2, upd = jit_apply(layer)(v, x, train=True, mutable=("batch_stats",))
    assert rel_err(y, y2) == 0.0
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool(jnp.all(a == b)), new, upd["batch_stats"]))


def test_benchmark_quick(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "bench_spinal_dense.py"
    spec = importlib.util.spec_from_file_location("bench_spinal_dense", path)
    bench = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    out = tmp_path / "b.json"
    bench.main(["--quick", "--out", str(out)])
    data = json.loads(out.read_text())
    assert len(data["forward_backward"]) == 1 and data["forward_backward"][0]["spinal_stacked_ms"] > 0
    assert [c["L"] for c in data["compile"]] == [2, 4] and data["compile"][0]["stacked_s"] > 0
    assert out.with_suffix(".md").read_text().startswith("# SpinalDense benchmark")


def _pop_round_off_bias_grads(grads: tuple[dict, ...], num_layers: int) -> None:
    """Remove the hidden biases' gradients from per-layer gradient trees after checking they are round-off.

    A hidden Dense's bias followed by BatchNorm in train mode has gradient exactly 0 (the batch mean
    removes it). What is computed there is float32 round-off of a sum of terms that cancel; its value
    depends on XLA's summation order, not on the layer, so it is checked to be round-off in each tree
    instead of compared between them.
    """
    scale = max(float(jnp.abs(leaf).max()) for leaf in jax.tree_util.tree_leaves(grads[-1]))
    for k in range(num_layers):
        for g in grads:
            bias_grad = g[f"hidden_{k}"].pop("bias")
            assert float(jnp.abs(bias_grad).max()) <= 1e-6 * scale


@pytest.mark.parametrize(
    ("kwargs", "num_layers"),
    [
        (dict(batch_norm=True, dropout_rate=0.3, output_dropout_rate=0.2, unbiased_running_var=True), 5),
        (dict(weight_sharing=(0, 1, 2, 3, 2, 3), activation=jnp.tanh, num_splits=3), 6),
        (dict(batch_norm=True, features=None), 1),
    ],
)
def test_stacked_equals_per_layer(kwargs, num_layers, chain):
    """stack_layers=True computes the same function: outputs, gradients and running statistics."""
    opts = dict(features=3, layer_width=4, num_layers=num_layers, init_scheme="torch") | kwargs
    per, st = SpinalDense(**opts), SpinalDense(**opts, stack_layers=True)
    x = jax.random.normal(jax.random.key(0), (6, 11))
    v = jax.jit(st.init)(jax.random.key(1), x)
    if "batch_stats" in v:
        v["batch_stats"] = jax.tree_util.tree_map(lambda a: a + 0.3, v["batch_stats"])
    vp = unstack_layers(v)
    assert jax.tree_util.tree_structure(restack_layers(vp, v)) == jax.tree_util.tree_structure(v)
    if num_layers > 1:
        assert "hidden_stack" in v["params"] and f"hidden_{num_layers - 1}" in vp["params"]
        np.testing.assert_array_equal(vp["params"]["hidden_2"]["kernel"], v["params"]["hidden_stack"]["kernel"][1])
    c = jax.random.normal(jax.random.key(2), (6, 3 if opts["features"] else num_layers * 4))

    def loss(layer):
        def f(params, stats, x):
            y, upd = layer.apply({"params": params, "batch_stats": stats}, x, train=True,
                                 mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)})
            return jnp.sum(y * c), (y, upd.get("batch_stats", {}))

        return jax.jit(jax.value_and_grad(f, argnums=(0, 2), has_aux=True))

    stats = v.get("batch_stats", {})
    (_, (y_s, new_s)), (g_s, gx_s) = loss(st)(v["params"], stats, x)
    (_, (y_p, new_p)), (g_p, gx_p) = loss(per)(vp["params"], unstack_layers(stats), x)
    np.testing.assert_allclose(y_s, y_p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gx_s, gx_p, rtol=1e-6, atol=1e-7)
    g_su = unstack_layers(g_s)
    if opts.get("batch_norm"):
        _pop_round_off_bias_grads((g_su, g_p), num_layers)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), g_su, g_p)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                           unstack_layers(new_s), new_p)
    if "weight_sharing" in kwargs:  # hidden_4/5 are unused: zero gradient in both forms
        assert float(jnp.abs(g_s["hidden_stack"]["kernel"][3:]).max()) == 0.0


@pytest.mark.parametrize("stack", [False, True])
def test_written_out_chain_equals_loop(stack, monkeypatch):
    """The written-out chain and the scan loop compute the same function, dropout masks included:
    outputs, gradients and running statistics (weight sharing, BatchNorm, both dropouts)."""
    layer = SpinalDense(5, 4, 6, num_splits=3, batch_norm=True, dropout_rate=0.3, output_dropout_rate=0.2,
                        weight_sharing=(0, 1, 2, 1, 2, 1), stack_layers=stack)
    x = jax.random.normal(jax.random.key(0), (7, 10))
    v = layer.init(jax.random.key(1), x)

    def run():
        def loss(params, x):
            y, new = layer.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True,
                                 mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})
            return jnp.sum(y * jnp.arange(5.0)), (y, new)

        (_, aux), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(v["params"], x)
        return aux, grads

    written = run()
    monkeypatch.setattr(layers, "SCAN_UNROLL_MAX", 0)
    looped = run()
    (aux_w, (gp_w, gx_w)), (aux_l, (gp_l, gx_l)) = written, looped
    gp_w, gp_l = unstack_layers(gp_w), unstack_layers(gp_l)
    _pop_round_off_bias_grads((gp_w, gp_l), 6)
    # Per leaf: within 1e-5 relative, or 1e-6 of the leaf's largest entry (float32 sums that cancel).
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.abs(b).max())),
        (aux_w, gp_w, gx_w), (aux_l, gp_l, gx_l),
    )


def test_stacked_program_size_does_not_grow_with_depth():
    """Number of jaxpr equations of forward+grad (BatchNorm, dropout, train): equal at any two depths
    past the written-out range (``layers.SCAN_UNROLL_MAX``) for stack_layers=True (the per-layer form
    grows, which is why the stacked form exists)."""

    def n_eqns(num_layers: int, stack: bool) -> int:
        layer = SpinalDense(3, 4, num_layers, batch_norm=True, dropout_rate=0.1, stack_layers=stack)
        x = jnp.ones((2, 8))
        v = jax.eval_shape(layer.init, jax.random.key(0), x)

        def loss(params, stats):
            y, _ = layer.apply({"params": params, "batch_stats": stats}, x, train=True,
                               mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
            return y.sum()

        return len(jax.make_jaxpr(jax.value_and_grad(loss))(v["params"], v["batch_stats"]).jaxpr.eqns)

    loop_depth = layers.SCAN_UNROLL_MAX + 2
    assert n_eqns(loop_depth, True) == n_eqns(loop_depth + 60, True)
    assert n_eqns(loop_depth + 60, False) > n_eqns(loop_depth, False) + 60
