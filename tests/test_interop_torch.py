"""SpinalDense vs independently written PyTorch modules of the original's heads, via the interop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from spinal_jax import SpinalDense
from spinal_jax.interop.torch import load_state_dict, spinal_dense_entries, to_state_dict
from spinal_jax.reference import unstack_layers

torch = pytest.importorskip("torch")
tnn = torch.nn
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_num_threads(1)


class TorchCustomizable(tnn.Module):
    """The customizable model (§1.6): tiled input, sequential segments, fc1..fcN, fcx."""

    def __init__(self, d, splits, width, layers, out, act):
        super().__init__()
        self.s = int(np.round(d / splits))
        self.layers = layers
        self.fc1 = tnn.Linear(self.s, width)
        for k in range(2, layers + 1):
            setattr(self, f"fc{k}", tnn.Linear(self.s + width, width))
        self.fcx = tnn.Linear(width * layers, out)
        self.act = act

    def forward(self, x):
        tiled = x
        while tiled.shape[1] < self.layers * self.s:
            tiled = torch.cat([tiled, x], dim=1)
        outs, prev = [], None
        for k in range(self.layers):
            seg = tiled[:, k * self.s : (k + 1) * self.s]
            inp = seg if prev is None else torch.cat([seg, prev], dim=1)
            prev = self.act(getattr(self, f"fc{k + 1}")(inp))
            outs.append(prev)
        return self.fcx(torch.cat(outs, dim=1))


class TorchVGGHead(tnn.Module):
    """MNIST_VGG spinal head (§1.1 V3): Dropout, Linear, BatchNorm1d, ReLU; halves alternate."""

    def __init__(self, half=128, width=128, out=10, p=0.5):
        super().__init__()
        self.half = half
        for k in range(1, 5):
            n_in = half if k == 1 else half + width
            seq = tnn.Sequential(tnn.Dropout(p), tnn.Linear(n_in, width), tnn.BatchNorm1d(width), tnn.ReLU())
            setattr(self, f"fc_spinal_layer{k}", seq)
        self.fc_out = tnn.Sequential(tnn.Dropout(p), tnn.Linear(4 * width, out))

    def forward(self, x):
        a, b = x[:, : self.half], x[:, self.half : 2 * self.half]
        x1 = self.fc_spinal_layer1(a)
        x2 = self.fc_spinal_layer2(torch.cat([b, x1], dim=1))
        x3 = self.fc_spinal_layer3(torch.cat([a, x2], dim=1))
        x4 = self.fc_spinal_layer4(torch.cat([b, x3], dim=1))
        return self.fc_out(torch.cat([x1, x2, x3, x4], dim=1))


def randomize_bn(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, tnn.BatchNorm1d):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def vgg_pair(p=0.0, seed=0, stack_layers=False):
    torch.manual_seed(seed)
    tm = TorchVGGHead(p=p)
    randomize_bn(tm, seed)
    layer = SpinalDense(10, 128, 4, batch_norm=True, dropout_rate=p, unbiased_running_var=True,
                        stack_layers=stack_layers)
    variables = load_state_dict(layer, tm.state_dict())
    return tm, layer, variables


def assert_close(a, b, rtol=1e-5, atol=1e-5, err_msg=""):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=err_msg)


@pytest.mark.parametrize(("d", "splits", "width", "layers", "act"), [(200, 4, 30, 5, "leaky"), (37, 3, 7, 9, "relu"), (16, 2, 5, 2, "tanh")])
def test_customizable_model_eval(d, splits, width, layers, act):
    torch.manual_seed(1)
    acts = {"leaky": (tnn.LeakyReLU(), lambda v: nn.leaky_relu(v, 0.01)), "relu": (tnn.ReLU(), nn.relu), "tanh": (tnn.Tanh(), jnp.tanh)}
    tm = TorchCustomizable(d, splits, width, layers, 7, acts[act][0]).eval()
    layer = SpinalDense(7, width, layers, num_splits=splits, activation=acts[act][1],
                        stack_layers=layers > 4)
    variables = load_state_dict(layer, tm.state_dict(), in_features=d)
    assert ("hidden_stack" in variables["params"]) == (layers > 4)
    x = np.random.default_rng(0).standard_normal((11, d)).astype(np.float32)
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    assert_close(jax.jit(layer.apply)(variables, x), want, rtol=0, atol=1e-5)
    n_flax = sum(a.size for a in jax.tree_util.tree_leaves(variables))
    assert n_flax == sum(p.numel() for p in tm.parameters())
    if d == 200:  # the example of ORIGINAL §6
        assert n_flax == 12_307


@pytest.mark.parametrize("stack_layers", [False, True])
def test_vgg_head_eval_and_train_forward(stack_layers):
    tm, layer, variables = vgg_pair(stack_layers=stack_layers)
    apply = jax.jit(layer.apply, static_argnames=("train", "mutable"))
    x = np.random.default_rng(0).standard_normal((32, 256)).astype(np.float32)
    tm.eval()
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    assert_close(apply(variables, x), want, rtol=0, atol=1e-5)
    tm.train()
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    y, upd = apply(variables, x, train=True, mutable=("batch_stats",))
    assert_close(y, want, rtol=0, atol=1e-5)
    after = load_state_dict(layer, tm.state_dict())  # running stats updated by torch (unbiased)
    jax.tree_util.tree_map(lambda a, b: assert_close(a, b, rtol=1e-6, atol=1e-7), upd["batch_stats"], after["batch_stats"])


@pytest.mark.parametrize(("opt", "stack_layers"), [("sgd", False), ("adam", True)])
def test_vgg_head_gradients_and_one_step(opt, stack_layers):
    tm, layer, variables = vgg_pair(seed=3, stack_layers=stack_layers)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 256)).astype(np.float32)
    labels = rng.integers(0, 10, 16)
    tm.train()
    if opt == "sgd":
        topt = torch.optim.SGD(tm.parameters(), lr=0.1, momentum=0.9)
        jopt = optax.sgd(0.1, momentum=0.9)
    else:
        topt = torch.optim.Adam(tm.parameters(), lr=1e-3)
        jopt = optax.adam(1e-3)
    loss = tnn.functional.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(labels))
    topt.zero_grad()
    loss.backward()
    tgrads = {k: p.grad.numpy().copy() for k, p in tm.named_parameters()}
    topt.step()

    def jloss(params):
        logits, upd = layer.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), upd

    (jl, upd), grads = jax.jit(jax.value_and_grad(jloss, has_aux=True))(variables["params"])
    assert_close(jl, loss.item(), rtol=1e-5, atol=0)
    gsd = to_state_dict(layer, {"params": grads, "batch_stats": upd["batch_stats"]}, layout="sequential")
    for k, g in tgrads.items():
        assert_close(gsd[k], g, rtol=1e-5, atol=1e-7)
    @jax.jit
    def step(params, grads):
        updates, _ = jopt.update(grads, jopt.init(params), params)
        return optax.apply_updates(params, updates)

    new = step(variables["params"], grads)
    got = to_state_dict(layer, {"params": new, "batch_stats": upd["batch_stats"]}, layout="sequential")
    gmax = max(np.abs(g).max() for g in tgrads.values())
    for k, v in tm.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if opt == "adam" and k.startswith("fc_spinal_layer") and k.endswith(".1.bias"):
            # A bias right before a train-mode BatchNorm has gradient 0 in exact arithmetic; Adam's
            # first step (about lr * sign(g)) turns the round-off into +-lr, so check it is round-off.
            assert np.abs(tgrads[k]).max() < 1e-6 * gmax and np.abs(gsd[k]).max() < 1e-6 * gmax
            continue
        # Adam's first step is lr * g / (|g| + 1e-8): for |g| near 1e-8 it amplifies float32 round-off
        # in g by up to 1e8, so its absolute tolerance is 2e-3 of the step size lr (sgd: 1e-7).
        assert_close(got[k], v.numpy(), rtol=1e-5, atol=1e-7 if opt == "sgd" else 2e-3 * 1e-3, err_msg=k)


def test_round_trip_and_torch_strict_load():
    configs = [(style, bn, stack) for style in ("customizable", "sequential") for bn in (False, True)
               for stack in (False, True)]
    for style, batch_norm, stack in configs:
        layer = SpinalDense(3, 6, 5, num_splits=3, batch_norm=batch_norm, stack_layers=stack)
        rng = np.random.default_rng(len(configs))
        shapes = jax.eval_shape(layer.init, jax.random.key(0), jnp.ones((2, 14)))
        v = jax.tree_util.tree_map(lambda a, rng=rng: jnp.asarray(rng.standard_normal(a.shape), a.dtype), shapes)
        sd = to_state_dict(layer, v, layout=style)
        np.testing.assert_array_equal(sd["fc3.weight" if style == "customizable" else "fc_spinal_layer3.1.weight"],
                                      np.asarray(unstack_layers(v)["params"]["hidden_2"]["kernel"]).T)
        assert not stack or "hidden_stack" in v["params"]
        back = load_state_dict(layer, sd, in_features=14)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), v, back)
        back_t = load_state_dict(layer, {k: torch.from_numpy(a) for k, a in sd.items()}, in_features=14)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), v, back_t)
    default = to_state_dict(SpinalDense(2, 3, 2), SpinalDense(2, 3, 2).init(jax.random.key(0), jnp.ones((1, 8))))
    assert sorted(default) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight", "fcx.bias", "fcx.weight"]
    tm, layer, variables = vgg_pair(seed=5, stack_layers=True)
    fresh = TorchVGGHead(p=0.0)
    fresh.load_state_dict({k: torch.from_numpy(a) for k, a in to_state_dict(layer, variables, "sequential").items()}, strict=True)
    for k, a in tm.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(fresh.state_dict()[k], a), k


def test_one_error_lists_all_problems():
    tm, layer, _ = vgg_pair()
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    del sd["fc_spinal_layer3.1.bias"]
    sd["fc_spinal_layer2.1.weight"] = np.zeros((128, 200), np.float32)
    sd["extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError) as err:
        load_state_dict(layer, sd)
    msg = str(err.value)
    assert "fc_spinal_layer3.1.bias" in msg and "extra.weight" in msg
    assert "fc_spinal_layer2.1.weight: got (128, 200), expected (128, 256)" in msg
    with pytest.raises(ValueError, match="matches no layout"):
        load_state_dict(layer, {"foo.weight": np.zeros(2)})


def test_named_entries_small_cnn_head():
    layer = SpinalDense(10, 8, 6)
    names = ["fc1", "fc1_1", "fc1_2", "fc1_3", "fc1_4", "fc1_5"]
    entries = spinal_dense_entries(layer, "named", prefix="m.", flax_prefix=("head",), hidden_names=names, output_name="fc2")
    assert entries[0].torch_prefix == "m.fc1" and entries[0].flax_path == ("head", "hidden_0")
    assert entries[-1].torch_prefix == "m.fc2" and entries[-1].kind == "linear"
    with pytest.raises(ValueError, match="hidden_names"):
        spinal_dense_entries(layer, "named", hidden_names=names[:3], output_name="fc2")
