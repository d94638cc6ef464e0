"""PyTorch parity of every model: independent torch modules with the original's (or torchvision's)
key names, random weights and running statistics → load_state_dict → same logits.

The torch modules below are written from the facts in ORIGINAL.md (§1, §2, §6) and torchvision's
published architectures, not from spinal_jax's code.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tnn = torch.nn
F = torch.nn.functional

from spinal_jax import models  # noqa: E402
from spinal_jax.interop.torch import load_state_dict, to_state_dict  # noqa: E402

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


# ----------------------------------------------------------------------------------------------
# Independent torch references
# ----------------------------------------------------------------------------------------------
def segment(x, k, s):
    """Layer k's input segment: features (k*s + j) mod D (halves alternate; quadrants in order)."""
    idx = (k * s + torch.arange(s)) % x.shape[1]
    return x[:, idx]


class SpinalSeq(tnn.Module):
    """Sequential-built head: fc_spinal_layerK = [Dropout] Linear [BN] ReLU, fc_out = [Dropout] Linear."""

    def __init__(self, d, w, c, n=4, p=None, bn=False, act=True):
        super().__init__()
        self.s, self.n = d // 2, n
        for k in range(n):
            mods = [tnn.Dropout(p)] if p is not None else []
            mods.append(tnn.Linear(self.s + (w if k else 0), w))
            if bn:
                mods.append(tnn.BatchNorm1d(w))
            mods.append(tnn.ReLU())
            setattr(self, f"fc_spinal_layer{k + 1}", tnn.Sequential(*mods))
        self.fc_out = tnn.Sequential(*([tnn.Dropout(p)] if p is not None else []), tnn.Linear(n * w, c))

    def forward(self, x):
        outs, h = [], None
        for k in range(self.n):
            inp = segment(x, k, self.s) if h is None else torch.cat([segment(x, k, self.s), h], 1)
            h = getattr(self, f"fc_spinal_layer{k + 1}")(inp)
            outs.append(h)
        return self.fc_out(torch.cat(outs, 1))


class SpinalNamed(tnn.Module):
    """Head with named Linear attributes; ``reuse`` maps layer k to the Linear it calls."""

    def __init__(self, d, w, c, names, out_name, splits=2, act=F.relu, reuse=None):
        super().__init__()
        self.s, self.names, self.out_name, self.act = d // splits, names, out_name, act
        self.reuse = reuse or list(range(len(names)))
        for k, name in enumerate(names):
            setattr(self, name, tnn.Linear(self.s + (w if k else 0), w))
        if out_name is not None:
            setattr(self, out_name, tnn.Linear(len(names) * w, c))

    def forward(self, x):
        outs, h = [], None
        for k in range(len(self.names)):
            inp = segment(x, k, self.s) if h is None else torch.cat([segment(x, k, self.s), h], 1)
            h = getattr(self, self.names[self.reuse[k]])(inp)
            h = self.act(h) if self.act is not None else h
            outs.append(h)
        cat = torch.cat(outs, 1)
        return getattr(self, self.out_name)(cat) if self.out_name else cat


class SmallCNN(tnn.Module):
    def __init__(self, head, w=8, c=10):
        super().__init__()
        self.head = head
        self.conv1 = tnn.Conv2d(1, 10, 5)
        self.conv2 = tnn.Conv2d(10, 20, 5)
        self.conv2_drop = tnn.Dropout2d(0.5)
        if head == "default":
            self.fc1, self.fc2 = tnn.Linear(320, 50), tnn.Linear(50, c)
            self.drop = tnn.Dropout(0.5)  # F.dropout(x, training=self.training) in the original
        else:
            self.sp = SpinalNamed(320, w, c, ["fc1"] + [f"fc1_{i}" for i in range(1, 6)], "fc2")

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2)).view(-1, 320)
        if self.head == "spinal":
            return self.sp(x)
        return self.fc2(self.drop(F.relu(self.fc1(x))))

    def state_dict_flat(self):
        return {k.replace("sp.", ""): v for k, v in self.state_dict().items()}


class Arch2(tnn.Module):
    def __init__(self, w=30, c=10):
        super().__init__()
        self.conv1 = tnn.Conv2d(1, 10, 5)
        self.conv2 = tnn.Conv2d(10, 20, 5)
        self.conv2_drop = tnn.Dropout2d(0.5)
        self.s2 = SpinalNamed(320, w, c, ["fc1"] + [f"fc1_{i}" for i in range(1, 8)], None)
        self.s1 = SpinalNamed(1440, w, c, ["fcp"] + [f"fcp_{i}" for i in range(1, 8)], None)
        self.s0 = SpinalNamed(784, w, c, ["fcp2"] + [f"fcp2_{i}" for i in range(1, 10)], None)
        self.fc2, self.fc3 = tnn.Linear(26 * w, 50), tnn.Linear(50, c)

    def forward(self, x):
        raw = x.view(-1, 784)
        c1 = F.relu(F.max_pool2d(self.conv1(x), 2))
        c2 = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(c1)), 2))
        h = torch.cat([self.s0(raw), self.s1(c1.view(-1, 1440)), self.s2(c2.view(-1, 320))], 1)
        return self.fc3(F.relu(self.fc2(h)))

    def state_dict_flat(self):
        return {k.split(".", 1)[1] if k[:2] in ("s0", "s1", "s2") else k: v for k, v in self.state_dict().items()}


def conv_bn_relu(cin, cout):
    return [tnn.Conv2d(cin, cout, 3, padding=1), tnn.BatchNorm2d(cout), tnn.ReLU()]


class VGG5(tnn.Module):
    def __init__(self, head, c=10):
        super().__init__()
        self.head = head
        self.l1 = tnn.Sequential(*conv_bn_relu(1, 64), *conv_bn_relu(64, 64), tnn.MaxPool2d(2, 2))
        self.l2 = tnn.Sequential(*conv_bn_relu(64, 128), *conv_bn_relu(128, 128), tnn.MaxPool2d(2, 2))
        self.l3 = tnn.Sequential(*conv_bn_relu(128, 256), *conv_bn_relu(256, 256), *conv_bn_relu(256, 256), tnn.MaxPool2d(2, 2))
        self.l4 = tnn.Sequential(*conv_bn_relu(256, 256), *conv_bn_relu(256, 256), *conv_bn_relu(256, 256), tnn.MaxPool2d(2, 2))
        if head == "default":
            self.classifier = tnn.Sequential(
                tnn.Dropout(0.5), tnn.Linear(256, 512), tnn.BatchNorm1d(512), tnn.ReLU(), tnn.Dropout(0.5), tnn.Linear(512, c)
            )
        else:
            self.sp = SpinalSeq(256, 128, c, p=0.5, bn=True)

    def forward(self, x):
        x = self.l4(self.l3(self.l2(self.l1(x)))).view(x.shape[0], -1)
        return self.classifier(x) if self.head == "default" else self.sp(x)

    def state_dict_flat(self):
        return {k.replace("sp.", ""): v for k, v in self.state_dict().items()}


class CifarCNN(tnn.Module):
    def __init__(self, head, c=10, w=128):
        super().__init__()
        self.head = head
        self.conv_layer = tnn.Sequential(
            tnn.Conv2d(3, 32, 3, padding=1), tnn.BatchNorm2d(32), tnn.ReLU(), tnn.Conv2d(32, 64, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2, 2),
            tnn.Conv2d(64, 128, 3, padding=1), tnn.BatchNorm2d(128), tnn.ReLU(), tnn.Conv2d(128, 128, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2, 2),
            tnn.Dropout2d(0.05),
            tnn.Conv2d(128, 256, 3, padding=1), tnn.BatchNorm2d(256), tnn.ReLU(), tnn.Conv2d(256, 256, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2, 2),
        )
        if head == "default":
            self.fc_layer = tnn.Sequential(
                tnn.Dropout(0.1), tnn.Linear(4096, 1024), tnn.ReLU(), tnn.Linear(1024, 512), tnn.ReLU(), tnn.Dropout(0.1), tnn.Linear(512, c)
            )
        else:
            self.sp = SpinalSeq(4096, w, c, p=0.1)

    def forward(self, x):
        x = self.conv_layer(x).view(x.shape[0], -1)
        return self.fc_layer(x) if self.head == "default" else self.sp(x)

    state_dict_flat = VGG5.state_dict_flat


class CifarBlock(tnn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = tnn.Sequential(tnn.Conv2d(cin, cout, 3, stride, 1, bias=False), tnn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return y + (x if self.downsample is None else self.downsample(x))  # no ReLU after the add


class CifarResNet(tnn.Module):
    def __init__(self, blocks, head, c=10, w=256):
        super().__init__()
        self.head = head
        self.conv1 = tnn.Conv2d(3, 32, 3, 1, 1, bias=False)
        self.bn = tnn.BatchNorm2d(32)
        self.drop = tnn.Dropout2d(0.02)
        cin = 32
        for i, (n, cout, stride) in enumerate(zip(blocks, (32, 64, 128, 256), (1, 2, 2, 2), strict=True)):
            layers = []
            for m in range(n):
                layers.append(CifarBlock(cin, cout, stride if m == 0 else 1))
                cin = cout
            setattr(self, f"conv{i + 2}_x", tnn.Sequential(*layers))
        if head == "default":
            self.fc_layer = tnn.Linear(256, c)
        else:
            self.sp = SpinalNamed(1024, w, c, ["fc1", "fc1_1", "fc1_2", "fc1_3"], "fc_layer", splits=4)

    def forward(self, x):
        x = self.drop(F.relu(self.bn(self.conv1(x))))
        x = self.conv5_x(self.conv4_x(self.conv3_x(self.conv2_x(x))))
        if self.head == "default":
            return self.fc_layer(F.max_pool2d(x, 4, 1).view(x.shape[0], -1))
        q = F.max_pool2d(x, 2, 2)
        # the four spatial positions in the order 00, 01, 10, 11 are the four segments
        quads = torch.cat([q[:, :, 0, 0], q[:, :, 0, 1], q[:, :, 1, 0], q[:, :, 1, 1]], 1)
        return self.sp(quads)

    state_dict_flat = VGG5.state_dict_flat


def vgg_features(cfg):
    layers, cin = [], 3
    for v in cfg:
        if v == "M":
            layers.append(tnn.MaxPool2d(2, 2))
        else:
            layers += conv_bn_relu(cin, v)
            cin = v
    return tnn.Sequential(*layers)


SMALL_VGG = (8, "M", 16, 16, "M", 16, "M", 32, "M", 32, 32, "M")


class CifarVGG(tnn.Module):
    def __init__(self, head, c=10, cfg=SMALL_VGG, hidden=64, w=512):
        super().__init__()
        self.head = head
        self.features = vgg_features(cfg)
        d = cfg[-2]
        if head == "default":
            self.classifier = tnn.Sequential(
                tnn.Linear(d, hidden), tnn.ReLU(), tnn.Dropout(), tnn.Linear(hidden, hidden), tnn.ReLU(), tnn.Dropout(), tnn.Linear(hidden, c)
            )
        else:
            self.sp = SpinalSeq(d, w, c, p=0.5)

    def forward(self, x):
        x = self.features(x).view(x.shape[0], -1)
        return self.classifier(x) if self.head == "default" else self.sp(x)

    state_dict_flat = VGG5.state_dict_flat


class Regression(tnn.Module):
    def __init__(self, head, w=50):
        super().__init__()
        self.head = head
        if head == "default":
            self.fc1, self.fc2, self.fc3 = tnn.Linear(8, 200), tnn.Linear(200, 100), tnn.Linear(100, 1)
        else:
            names = [f"fc{k}" for k in range(1, 7)]
            self.sp = SpinalNamed(8, w, 1, names, "fcx", act=F.leaky_relu, reuse=[0, 1, 2, 3, 2, 3])

    def forward(self, x):
        if self.head == "spinal":
            return self.sp(x)
        return self.fc3(F.leaky_relu(self.fc2(F.leaky_relu(self.fc1(x)))))

    state_dict_flat = VGG5.state_dict_flat


class Digits(tnn.Module):
    def __init__(self, head):
        super().__init__()
        self.head = head
        if head == "default":
            self.fc1, self.fc2 = tnn.Linear(64, 64), tnn.Linear(64, 10)
        else:
            self.sp = SpinalNamed(64, 16, 10, ["fc1", "fc2", "fc3", "fc4"], "fcx")

    def forward(self, x):
        x = x.reshape(x.shape[0], -1)
        return self.sp(x) if self.head == "spinal" else self.fc2(F.relu(self.fc1(x)))

    state_dict_flat = VGG5.state_dict_flat


# ----------------------------------------------------------------------------------------------
# Harness
# ----------------------------------------------------------------------------------------------
def randomise(net: tnn.Module, seed: int) -> None:
    """Random weights, BN affine and running statistics (so eval mode is a real test)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (tnn.BatchNorm1d, tnn.BatchNorm2d)):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(7)


def no_dropout(net: tnn.Module) -> None:
    for m in net.modules():
        if isinstance(m, (tnn.Dropout, tnn.Dropout2d)):
            m.p = 0.0


def flat_sd(net: tnn.Module) -> dict:
    """The state dict with the original's keys (test-only wrappers removed)."""
    return net.state_dict_flat() if hasattr(net, "state_dict_flat") else net.state_dict()


def to_nhwc(x: torch.Tensor) -> jnp.ndarray:
    return jnp.asarray(x.permute(0, 2, 3, 1).numpy() if x.ndim == 4 else x.numpy())


def check_parity(model, net: tnn.Module, x: torch.Tensor, model_no_dropout, seed: int = 0) -> None:
    randomise(net, seed)
    sd = {k: v.clone() for k, v in flat_sd(net).items()}  # the train forward below updates BN in place
    variables = load_state_dict(model, sd)
    # eval mode
    net.eval()
    with torch.no_grad():
        want = net(x).numpy()
    got = np.asarray(jax.jit(lambda v, xx: model.apply(v, xx, train=False))(variables, to_nhwc(x)))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # train mode, dropout off: batch statistics and the running-stat updates, in float64 on both
    # sides (train-mode BatchNorm over these few examples magnifies float32 round-off to ~1e-4 in
    # either framework, so float32 outputs could not be compared tightly)
    no_dropout(net)
    net64 = copy.deepcopy(net).double().train()
    with torch.no_grad():
        want_train = net64(x.double()).numpy()
    with jax.enable_x64(True):
        variables64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
        got_train, upd = jax.jit(
            lambda v, xx: model_no_dropout.apply(v, xx, train=True, mutable=["batch_stats"])
        )(variables64, to_nhwc(x.double()))
        np.testing.assert_allclose(np.asarray(got_train), want_train, atol=1e-10, rtol=0)
        if "batch_stats" in variables:
            after = to_state_dict(model, {"params": variables64["params"], **upd})
            for k, v in flat_sd(net64).items():
                if k.endswith("running_mean") or k.endswith("running_var"):
                    np.testing.assert_allclose(after[k], v.numpy(), atol=1e-12, rtol=1e-12, err_msg=k)
    # round trips: flax -> torch -> flax exact, and torch keys -> flax -> torch exact
    back = to_state_dict(model, variables)
    want_keys = {k for k in sd if not k.endswith("num_batches_tracked")}
    assert set(back) == want_keys
    for k in want_keys:
        np.testing.assert_array_equal(back[k], sd[k].numpy(), err_msg=k)
    again = load_state_dict(model, back)
    jax.tree_util.tree_map(np.testing.assert_array_equal, again, variables)


def _torch_input(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


CASES = {
    "mnist_cnn-default": (lambda: SmallCNN("default"), "mnist_cnn", 10, "default", {}, {"dropout": 0.0}, (3, 1, 28, 28)),
    "mnist_cnn-spinal": (lambda: SmallCNN("spinal"), "mnist_cnn", 10, "spinal", {}, {"dropout": 0.0}, (3, 1, 28, 28)),
    "mnist_cnn-spinal-w10": (lambda: SmallCNN("spinal", w=10), "mnist_cnn", 10, "spinal", {"width": 10}, {"dropout": 0.0}, (2, 1, 28, 28)),
    "mnist_arch2": (lambda: Arch2(30), "mnist_arch2", 10, "spinal", {}, {"dropout": 0.0}, (3, 1, 28, 28)),
    "vgg5-default": (lambda: VGG5("default"), "vgg5", 10, "default", {}, {"dropout": 0.0}, (3, 1, 28, 28)),
    "vgg5-spinal": (lambda: VGG5("spinal"), "vgg5", 10, "spinal", {}, {"dropout": 0.0}, (3, 1, 28, 28)),
    "cifar_cnn-default": (lambda: CifarCNN("default"), "cifar_cnn", 10, "default", {}, {"dropout": 0.0, "conv_dropout": 0.0}, (2, 3, 32, 32)),
    "cifar_cnn-spinal-c100": (lambda: CifarCNN("spinal", 100, 256), "cifar_cnn", 100, "spinal", {}, {"dropout": 0.0, "conv_dropout": 0.0}, (2, 3, 32, 32)),
    "cifar_resnet18-default": (lambda: CifarResNet((2, 2, 2, 2), "default"), "cifar_resnet18", 10, "default", {}, {"conv_dropout": 0.0}, (2, 3, 32, 32)),
    "cifar_resnet18-spinal": (lambda: CifarResNet((2, 2, 2, 2), "spinal"), "cifar_resnet18", 10, "spinal", {}, {"conv_dropout": 0.0}, (2, 3, 32, 32)),
    "cifar_vgg-default": (lambda: CifarVGG("default"), "cifar_vgg19_bn", 10, "default", {"cfg": SMALL_VGG, "hidden": 64}, {"dropout": 0.0}, (2, 3, 32, 32)),
    "cifar_vgg-spinal": (lambda: CifarVGG("spinal", w=24), "cifar_vgg19_bn", 10, "spinal", {"cfg": SMALL_VGG, "width": 24}, {"dropout": 0.0}, (2, 3, 32, 32)),
    "regression-default": (lambda: Regression("default"), "regression_net", 1, "default", {}, {}, (5, 8)),
    "regression-spinal": (lambda: Regression("spinal"), "regression_net", 1, "spinal", {}, {}, (5, 8)),
    "digits-default": (lambda: Digits("default"), "digits_mlp", 10, "default", {}, {}, (4, 1, 8, 8)),
    "digits-spinal": (lambda: Digits("spinal"), "digits_mlp", 10, "spinal", {}, {}, (4, 1, 8, 8)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_original(case):
    make, name, c, head, overrides, no_drop, shape = CASES[case]
    torch.manual_seed(0)
    net = make()
    model = models.get(name, c, head, **overrides)
    check_parity(model, net, _torch_input(shape), model.clone(**no_drop))


def test_full_cifar_vgg19_layout_matches_torch_keys():
    """The full-size CIFAR VGG-19-bn: the original's key set and shapes load (no forward)."""
    torch.manual_seed(0)
    net = CifarVGG("spinal", cfg=models.cifar.VGG19_CFG, w=512)
    variables = load_state_dict(models.get("cifar_vgg19_bn", 10), net.state_dict_flat())
    assert variables["params"]["spinal"]["hidden_1"]["kernel"].shape == (256 + 512, 512)


def test_wrong_num_classes_for_checkpoint_lists_keys():
    net = SmallCNN("spinal", c=10)
    with pytest.raises(ValueError, match=r"mis-shaped keys \['fc2\.bias.*fc2\.weight"):
        load_state_dict(models.get("mnist_cnn", 47), net.state_dict_flat())


def test_wrong_head_for_checkpoint_lists_keys():
    net = SmallCNN("default")
    with pytest.raises(ValueError, match=r"missing keys.*fc1_1\.weight.*unexpected keys"):
        load_state_dict(models.get("mnist_cnn", 10, "spinal"), net.state_dict_flat())


# ----------------------------------------------------------------------------------------------
# ImageNet backbones: reduced-width instances vs independent torch code with torchvision's keys
# ----------------------------------------------------------------------------------------------
def torch_head(variant, d, w, c):
    """The head module registered as ``fc`` / ``classifier``."""
    if variant == "v1":
        return SpinalSeq(d, w, c)  # Sequential(Linear, ReLU) → index 0
    if variant == "v3":
        return SpinalSeq(d, w, c, p=0.5, bn=True)
    if variant == "v4":
        return SpinalNamed(d, w, c, [f"layer{k}" for k in range(1, 5)], "_out", act=None)
    assert variant == "reuse6"
    return SpinalNamed(d, w, c, [f"fc{k}" for k in range(1, 7)], "fcx", act=F.leaky_relu, reuse=[0, 1, 2, 3, 2, 3])


class TvBasic(tnn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride, wpg):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = tnn.Sequential(tnn.Conv2d(cin, planes, 1, stride, bias=False), tnn.BatchNorm2d(planes))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class TvBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, wpg):
        super().__init__()
        width, out = planes * wpg // 64, planes * 4
        self.conv1 = tnn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.conv2 = tnn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(width)
        self.conv3 = tnn.Conv2d(width, out, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = tnn.Sequential(tnn.Conv2d(cin, out, 1, stride, bias=False), tnn.BatchNorm2d(out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class TvResNet(tnn.Module):
    def __init__(self, block, layers, planes, stem, wpg, head, variant, w, c):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(stem)
        cin = stem
        for i, (n, p) in enumerate(zip(layers, planes, strict=True)):
            blocks = []
            for m in range(n):
                blocks.append(block(cin, p, 2 if (m == 0 and i > 0) else 1, wpg))
                cin = p * block.expansion
            setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
        self.fc = tnn.Linear(cin, c) if head == "default" else torch_head(variant, cin, w, c)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TvVGG(tnn.Module):
    def __init__(self, cfg, hidden, head, variant, w, c):
        super().__init__()
        self.features = vgg_features(cfg)
        d = cfg[-2] * 49
        if head == "default":
            self.classifier = tnn.Sequential(
                tnn.Linear(d, hidden), tnn.ReLU(), tnn.Dropout(), tnn.Linear(hidden, hidden), tnn.ReLU(), tnn.Dropout(), tnn.Linear(hidden, c)
            )
        else:
            self.classifier = torch_head(variant, d, w, c)

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 7), 1))


class TvAlexNet(tnn.Module):
    def __init__(self, ch, hidden, head, variant, w, c):
        super().__init__()
        self.features = tnn.Sequential(
            tnn.Conv2d(3, ch[0], 11, 4, 2), tnn.ReLU(), tnn.MaxPool2d(3, 2),
            tnn.Conv2d(ch[0], ch[1], 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(3, 2),
            tnn.Conv2d(ch[1], ch[2], 3, padding=1), tnn.ReLU(),
            tnn.Conv2d(ch[2], ch[3], 3, padding=1), tnn.ReLU(),
            tnn.Conv2d(ch[3], ch[4], 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(3, 2),
        )
        d = ch[4] * 36
        if head == "default":
            self.classifier = tnn.Sequential(
                tnn.Dropout(), tnn.Linear(d, hidden), tnn.ReLU(), tnn.Dropout(), tnn.Linear(hidden, hidden), tnn.ReLU(), tnn.Linear(hidden, c)
            )
        else:
            self.classifier = torch_head(variant, d, w, c)

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 6), 1))


TINY_VGG = (8, "M", 8, "M", 16, "M", 16, 16, "M", 16, "M")
IMAGENET_CASES = {
    "resnet18-default": ("resnet18", "default", "v1", {}),
    "resnet18-reuse6": ("resnet18", "spinal", "reuse6", {}),
    "resnet18-v4": ("resnet18", "spinal", "v4", {}),
    "wrn-v3": ("wide_resnet101_2", "spinal", "v3", {}),
    "wrn-default": ("wide_resnet101_2", "default", "v3", {}),
    "vgg19_bn-v3": ("vgg19_bn", "spinal", "v3", {}),
    "vgg19_bn-default": ("vgg19_bn", "default", "v3", {}),
    "alexnet-v1": ("alexnet", "spinal", "v1", {}),
    "alexnet-default": ("alexnet", "default", "v1", {}),
}


@pytest.mark.parametrize("case", list(IMAGENET_CASES))
def test_imagenet_backbone_parity_reduced(case):
    name, head, variant, _ = IMAGENET_CASES[case]
    torch.manual_seed(0)
    c, w = 7, 6
    if name in ("resnet18", "wide_resnet101_2"):
        bottleneck = name == "wide_resnet101_2"
        planes, stem, wpg = (4, 8, 8, 8), 8, 128 if bottleneck else 64
        layers = (1, 2, 1, 1) if bottleneck else (2, 2, 2, 2)
        net = TvResNet(TvBottleneck if bottleneck else TvBasic, layers, planes, stem, wpg, head, variant, w, c)
        overrides = {"stage_sizes": layers, "planes": planes, "stem": stem}
        shape = (2, 3, 64, 64)
    elif name == "vgg19_bn":
        net = TvVGG(TINY_VGG, 24, head, variant, w, c)
        overrides = {"cfg": TINY_VGG, "hidden": 24}
        shape = (2, 3, 64, 64)  # 2x2 map, adaptive-pooled up to 7x7
    else:
        ch = (8, 8, 8, 8, 8)
        net = TvAlexNet(ch, 24, head, variant, w, c)
        overrides = {"channels": ch, "hidden": 24}
        shape = (2, 3, 96, 96)  # 2x2 map, adaptive-pooled up to 6x6
    model = models.get(name, c, head, variant=variant, width=w, **overrides)
    check_parity(model, net, _torch_input(shape), model.clone(dropout=0.0))
