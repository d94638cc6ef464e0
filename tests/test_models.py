"""Models: parameter counts equal the original's (ORIGINAL.md §6, §2.10), API and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from spinal_jax import models

# (name, num_classes, head, overrides) -> the original's parameter count.
COUNTS = [
    ("mnist_cnn", 10, "default", {}, 21_840),
    ("mnist_cnn", 10, "spinal", {}, 13_818),
    ("mnist_arch2", 10, "spinal", {}, 395_120),
    ("vgg5", 10, "default", {}, 3_646_154),
    ("vgg5", 10, "spinal", {}, 3_629_770),
    ("cifar_cnn", 10, "default", {}, 5_852_170),
    ("cifar_cnn", 10, "spinal", {}, 2_230_282),
    ("cifar_cnn", 100, "default", {}, 5_898_340),
    ("cifar_cnn", 100, "spinal", {}, 3_524_196),
    ("cifar_resnet18", 10, "default", {}, 3_141_674),
    ("cifar_resnet18", 10, "spinal", {}, 3_609_130),
    ("cifar_resnet34", 10, "default", {}, 5_670_570),
    ("cifar_resnet34", 10, "spinal", {"width": 256}, 6_138_026),
    ("wide_resnet101_2", 1000, "default", {}, 126_886_696),  # torchvision's count
    ("resnet18", 1000, "default", {}, 11_689_512),
    ("vgg19_bn", 1000, "default", {}, 143_678_248),
    ("alexnet", 1000, "default", {}, 61_100_840),
]

# Heads of §2.10: (name, num_classes, overrides, default head params, spinal head params).
HEADS = [
    ("cifar_resnet34", 100, {}, 25_700, 1_517_668),
    ("cifar_vgg19_bn", 10, {}, 18_923_530, 1_333_258),
    ("cifar_vgg19_bn", 100, {}, 19_292_260, 1_517_668),
    ("wide_resnet101_2", 10, {}, 20_490, 2_910_218),
    ("wide_resnet101_2", 10, {"variant": "v1", "width": 20}, 20_490, 84_010),
]


@pytest.mark.parametrize(("name", "c", "head", "overrides", "want"), COUNTS)
def test_param_count_equals_original(name, c, head, overrides, want):
    assert models.num_params(models.get(name, c, head, **overrides)) == want


def _head_params(model) -> int:
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), models.example_input(model)))
    tree = shapes["params"]
    keys = [k for k in tree if k.startswith(("spinal", "fc", "classifier"))]
    return sum(int(x.size) for k in keys for x in jax.tree_util.tree_leaves(tree[k]))


@pytest.mark.parametrize(("name", "c", "overrides", "default", "spinal"), HEADS)
def test_head_param_counts_of_section_2_10(name, c, overrides, default, spinal):
    assert _head_params(models.get(name, c, "default", **overrides)) == default
    assert _head_params(models.get(name, c, "spinal", **overrides)) == spinal


def test_dataset_dependent_widths_are_automatic():
    cnn = models.get("cifar_cnn", 100).spinal(detached=True)
    res = models.get("cifar_resnet34", 100).spinal(detached=True)
    assert (cnn.layer_width, res.layer_width) == (256, 512)
    assert models.get("cifar_cnn", 10).spinal(detached=True).layer_width == 128


def test_names_and_every_model_has_layouts_and_input_shape():
    assert set(models.names()) >= {
        "mnist_cnn", "mnist_arch2", "vgg5", "cifar_cnn", "cifar_resnet18", "cifar_resnet34",
        "cifar_vgg19_bn", "vgg19_bn", "wide_resnet101_2", "resnet18", "alexnet", "digits_mlp",
        "regression_net",
    }
    for name in models.names():
        for head in ("default", "spinal"):
            m = models.get(name, 10, head)
            assert models.example_input(m).shape == (1, *m.input_shape)
            assert m.torch_layouts()


@pytest.mark.parametrize("head", ["default", "spinal"])
def test_forward_train_and_bf16(head):
    m = models.get("vgg5", 10, head)
    v = models.init(m, jax.random.key(0), batch=2)
    x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
    y = m.apply(v, x)
    assert y.shape == (4, 10) and y.dtype == jnp.float32
    y_train, upd = m.apply(v, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
    assert y_train.shape == (4, 10)
    assert not np.allclose(upd["batch_stats"]["l1_bn0"]["mean"], v["batch_stats"]["l1_bn0"]["mean"])
    mb = models.get("vgg5", 10, head, dtype=jnp.bfloat16)
    vb = models.init(mb, jax.random.key(0))
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(vb["params"]))
    yb = mb.apply(v, x)
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(yb, np.float32), np.asarray(y), atol=0.1)


def test_arch2_default_is_the_small_cnn_default():
    m = models.get("mnist_arch2", 10, "default")
    assert isinstance(m, models.MnistCNN) and m.head == "default"


def test_unknown_name_head_override_and_num_classes():
    with pytest.raises(ValueError, match=r"unknown model 'lenet'.*mnist_cnn"):
        models.get("lenet", 10)
    with pytest.raises(ValueError, match="head must be one of"):
        models.get("vgg5", 10, "wide")
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['widht'\]"):
        models.get("vgg5", 10, widht=3)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        models.get("vgg5", 0)
    with pytest.raises(ValueError, match="variant must be one of"):
        models.get("wide_resnet101_2", 10, variant="v9")


def test_wrong_image_shapes_raise_before_compute():
    m = models.get("mnist_cnn", 10)
    v = models.init(m, jax.random.key(0))
    with pytest.raises(ValueError, match="expected 1 channel"):
        m.apply(v, jnp.zeros((2, 28, 28, 3)))
    with pytest.raises(ValueError, match=r"expected inputs of shape \(B, 28, 28, 1\)"):
        m.apply(v, jnp.zeros((2, 32, 32, 1)))
    with pytest.raises(ValueError, match="NHWC"):
        m.apply(v, jnp.zeros((28, 28, 1)))
    r = models.get("resnet18", 10)
    with pytest.raises(ValueError, match="at least 32x32"):
        jax.eval_shape(lambda: r.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3))))
    with pytest.raises(ValueError, match="expected 3 channel"):
        jax.eval_shape(lambda: r.init(jax.random.key(0), jnp.zeros((1, 224, 224, 1))))


def test_imagenet_models_accept_other_input_sizes():
    m = models.get("resnet18", 5, planes=(4, 4, 8, 8), stem=4, width=4)
    out = jax.eval_shape(lambda: m.init_with_output(jax.random.key(0), jnp.zeros((2, 112, 112, 3))))
    assert out[0].shape == (2, 5)


def test_adaptive_avg_pool_matches_pytorch_bins():
    from spinal_jax.models.common import adaptive_avg_pool

    x = jnp.arange(5 * 5, dtype=jnp.float32).reshape(1, 5, 5, 1)
    y = adaptive_avg_pool(x, (3, 3))[0, :, :, 0]
    # PyTorch bins for 5 -> 3: [0, 2), [1, 4), [3, 5)
    want = np.array([[np.mean(np.arange(25).reshape(5, 5)[a:b, c:d]) for c, d in ((0, 2), (1, 4), (3, 5))]
                     for a, b in ((0, 2), (1, 4), (3, 5))])
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-6)


@pytest.mark.parametrize("rows_multiple", [1, 32])
@pytest.mark.parametrize(("cin", "k", "stride", "padding", "size"), [(1, 3, 1, 1, 28), (3, 5, 2, 2, 9), (8, 3, 1, 1, 3)])
def test_conv_as_matmul_is_nn_conv(monkeypatch, cin, k, stride, padding, size, rows_multiple):
    """PatchConv (im2col + one matmul) has nn.Conv's parameters, values and gradients (float64, so
    that the two summation orders agree to round-off), with its patch rows padded to a multiple of 32
    (the last two cases: 100 and 36 rows) or not."""
    from flax import linen as nn

    from spinal_jax.models import common
    from spinal_jax.models.common import PatchConv

    monkeypatch.setattr(common, "MATMUL_ROWS_MULTIPLE", rows_multiple)

    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.PRNGKey(0), (4, size, size, cin), jnp.float64)
        f64 = {"param_dtype": jnp.float64, "dtype": jnp.float64}
        patch = PatchConv(6, k, stride=stride, padding=padding, bias_init=nn.initializers.normal(1.0), **f64)
        conv = nn.Conv(6, (k, k), strides=(stride, stride), padding=((padding, padding), (padding, padding)), **f64)
        params = patch.init(jax.random.PRNGKey(1), x)
        assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, conv.init(jax.random.PRNGKey(1), x))

        def loss(module, p, x):
            return jnp.sum(jnp.sin(module.apply(p, x)))

        np.testing.assert_allclose(patch.apply(params, x), conv.apply(params, x), rtol=1e-12, atol=1e-12)
        for a, b in zip(jax.grad(loss, argnums=(1, 2))(patch, params, x),
                        jax.grad(loss, argnums=(1, 2))(conv, params, x), strict=True):
            jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-11, atol=1e-11), a, b)


def test_conv_as_matmul_rejects_a_kernel_larger_than_the_input():
    from spinal_jax.models.common import conv_as_matmul

    with pytest.raises(ValueError, match="does not fit"):
        conv_as_matmul(jnp.zeros((1, 2, 2, 1)), jnp.zeros((3, 3, 1, 4)))


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize(("size", "k"), [((8, 8), 2), ((7, 7), 2), ((9, 10), 3), ((3, 3), 2)])
def test_max_pool_matches_torch_values_and_gradients(size, k, relu):
    """common.max_pool (and max_pool(relu(x)) as one op) against torch's max_pool2d (after F.relu):
    values and gradients bit for bit, on inputs full of ties (rounded values, ReLU zeros, all-equal
    and all-negative windows) and on odd sizes (floor mode: trailing rows and columns get no gradient)."""
    torch = pytest.importorskip("torch")
    from spinal_jax.models.common import max_pool

    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=(3, *size, 5)), 1).astype(np.float32)
    x[0, :k, :k, :] = 0.5  # a window of equal values
    x[1, :k, :k, :] = -1.0  # a window with no positive value
    g = rng.normal(size=(3, size[0] // k, size[1] // k, 5)).astype(np.float32)

    out, vjp = jax.vjp(lambda a: max_pool(a, k, relu=relu), jnp.asarray(x))
    (dx,) = vjp(jnp.asarray(g))

    xt = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_(True)
    yt = torch.nn.functional.max_pool2d(torch.relu(xt) if relu else xt, k)
    yt.backward(torch.tensor(g).permute(0, 3, 1, 2))
    np.testing.assert_array_equal(np.asarray(out), yt.detach().permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(np.asarray(dx), xt.grad.permute(0, 2, 3, 1).numpy())


def test_max_pool_with_relu_under_jit_and_bf16():
    """The fused ReLU + pool keeps the input dtype and equals relu-then-pool under jit."""
    from flax import linen as nn

    from spinal_jax.models.common import max_pool

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 4)).astype(jnp.bfloat16)
    fused = jax.jit(lambda a: max_pool(a, 2, relu=True))(x)
    assert fused.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(fused, np.float32), np.asarray(max_pool(nn.relu(x), 2), np.float32))
    grads = [jax.grad(lambda a, f=f: jnp.sum(f(a).astype(jnp.float32) * jnp.arange(36.0).reshape(1, 3, 3, 4)))(x)
             for f in (lambda a: max_pool(a, 2, relu=True), lambda a: max_pool(nn.relu(a), 2))]
    np.testing.assert_array_equal(np.asarray(grads[0], np.float32), np.asarray(grads[1], np.float32))



def test_vgg5_biases_cancelled_by_batch_norm_get_zero_gradient():
    """VGG-5 in training: the convolution and spinal hidden-layer biases feed train-mode BatchNorm,
    which cancels them, so their gradient is exactly zero (not computed as round-off)."""
    model = models.get("vgg5", 10, "spinal", dropout=0.0)
    x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
    variables = model.init(jax.random.key(1), x)

    def loss(params):
        out = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])[0]
        return jnp.sum(out**2)

    g = jax.jit(jax.grad(loss))(variables["params"])
    biases = [g[f"l{b}_conv{i}"]["bias"] for b, n in ((1, 2), (2, 2), (3, 3), (4, 3)) for i in range(n)]
    biases += [g["spinal"][f"hidden_{k}"]["bias"] for k in range(4)]
    assert all(float(jnp.max(jnp.abs(b))) == 0.0 for b in biases)
    assert float(jnp.max(jnp.abs(g["l1_conv0"]["kernel"]))) > 0
    assert float(jnp.max(jnp.abs(g["spinal"]["output"]["bias"]))) > 0  # not before a BatchNorm


class _ConvBatchNormSpinal(nn.Module):
    @nn.compact
    def __call__(self, x, train):
        from spinal_jax import SpinalDense
        from spinal_jax.models.common import batch_norm, torch_conv

        x = torch_conv(4, 1, 3, padding=1, name="conv")(x, bias_cancels=train)
        x = batch_norm("bn", None, relu=True)(x, train=train).reshape(x.shape[0], -1)
        return SpinalDense(3, layer_width=4, num_layers=3, batch_norm=True)(x, train=train)


def test_cancelled_bias_gradient_is_round_off_when_computed(monkeypatch):
    """The switch off computes those gradients: round-off next to the kernels' gradients, and the same
    loss. In eval mode the biases matter and get real gradients."""
    from spinal_jax import normalization

    model = _ConvBatchNormSpinal()
    x = jax.random.uniform(jax.random.key(0), (5, 6, 6, 1))
    variables = model.init(jax.random.key(1), x, False)

    def grads(train):
        def loss(params):
            out = model.apply({**variables, "params": params}, x, train, mutable=["batch_stats"])[0]
            return jnp.sum(out**2)

        return jax.jit(jax.value_and_grad(loss))(variables["params"])

    loss, g = grads(True)
    assert float(jnp.max(jnp.abs(g["conv"]["bias"]))) == 0.0
    assert float(jnp.max(jnp.abs(g["SpinalDense_0"]["hidden_1"]["bias"]))) == 0.0
    monkeypatch.setattr(normalization, "SKIP_CANCELLED_BIAS_GRADIENT", False)
    loss_computed, g_computed = grads(True)
    assert float(loss_computed) == float(loss)
    for layer in (g_computed["conv"], g_computed["SpinalDense_0"]["hidden_1"]):
        assert float(jnp.max(jnp.abs(layer["bias"]))) < 1e-5 * float(jnp.max(jnp.abs(layer["kernel"])))
    _, g_eval = grads(False)
    assert float(jnp.max(jnp.abs(g_eval["conv"]["bias"]))) > 0
    assert float(jnp.max(jnp.abs(g_eval["SpinalDense_0"]["hidden_1"]["bias"]))) > 0
