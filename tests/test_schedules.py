"""LR rules against hand-computed sequences; optimizers against torch; controller state round trip."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spinal_jax.train.config import Config
from spinal_jax.train.schedules import (
    LRController,
    get_learning_rate,
    make_optimizer,
    set_learning_rate,
)


def _cfg(**kw):
    base = dict(model="m", dataset="d", epochs=5, batch_size=2, learning_rate=0.005)
    base.update(kw)
    return Config(**base)


def _drive(ctrl, metrics):
    """Learning rates used for epochs 1..n and the decisions."""
    decisions = [ctrl.after_epoch(e, m) for e, m in enumerate(metrics)]
    return [d.learning_rate for d in decisions], decisions


def _feed(values):
    it = iter(values)
    return lambda: next(it)


def test_random_on_plateau_ties_count_with_ge():
    cfg = _cfg(lr_rule="random_on_plateau", lr_scale=0.005, lr_power=3, lr_compare=">=")
    ctrl = LRController(cfg, uniform=_feed([0.5, 0.2]))
    lrs, decs = _drive(ctrl, [0.90, 0.90, 0.95, 0.94, 0.96])
    # e0 improves (best 0), e1 ties -> 0.005*0.5^3, e2 improves (lr kept), e3 worse -> 0.005*0.2^3
    assert lrs == pytest.approx([0.005, 0.000625, 0.000625, 0.00004, 0.00004], rel=1e-12)
    assert not any(d.reset_optimizer for d in decs)
    assert ctrl.draws == 2


def test_random_on_plateau_strict_ignores_ties():
    cfg = _cfg(lr_rule="random_on_plateau", lr_scale=0.001, lr_power=5, lr_compare=">")
    ctrl = LRController(cfg, uniform=_feed([0.5]))
    lrs, _ = _drive(ctrl, [0.90, 0.90, 0.95, 0.94, 0.96])
    assert lrs == pytest.approx([0.005, 0.005, 0.005, 0.001 * 0.5**5, 0.001 * 0.5**5], rel=1e-12)
    assert ctrl.draws == 1


def test_divide_on_plateau_is_cumulative():
    cfg = _cfg(epochs=6, learning_rate=1e-3, lr_rule="divide_on_plateau", lr_divisor=3.0)
    lrs, _ = _drive(LRController(cfg), [0.5, 0.4, 0.3, 0.6, 0.6, 0.7])
    assert lrs == pytest.approx([1e-3, 1e-3 / 3, 1e-3 / 9, 1e-3 / 9, 1e-3 / 9, 1e-3 / 9], rel=1e-12)


def test_step_lr_matches_torch_steplr_per_epoch():
    cfg = _cfg(epochs=20, learning_rate=1e-3, optimizer="sgd", momentum=0.9, lr_rule="step")
    lrs, _ = _drive(LRController(cfg), np.linspace(0, 1, 20))
    used = [1e-3, *lrs[:-1]]  # lr used by epochs 0..19
    expected = [1e-3 * 0.1 ** (k // 7) for k in range(20)]
    assert used == pytest.approx(expected, rel=1e-12)
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)
    torch_used = []
    for _ in range(20):
        torch_used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert used == pytest.approx(torch_used, rel=1e-12)


def test_stages_reset_optimizer_and_restart_step():
    cfg = _cfg(
        epochs=12,
        learning_rate=1e-2,
        optimizer="sgd",
        momentum=0.9,
        lr_rule="step",
        stages=((1e-2, 9), (1e-3, 3)),
        stage_start_from_best=True,
    )
    metrics = [0.1, 0.5, 0.9, 0.4, 0.9, 0.3, 0.2, 0.2, 0.2, 0.6, 0.7, 0.8]
    lrs, decs = _drive(LRController(cfg), metrics)
    assert lrs[6] == pytest.approx(1e-3)  # after 7 epochs of stage 0
    assert lrs[7] == pytest.approx(1e-3)
    d = decs[8]  # end of stage 0
    assert (d.learning_rate, d.reset_optimizer, d.restore_epoch, d.stage) == (1e-3, True, 2, 1)
    assert [x.reset_optimizer for x in decs].count(True) == 1
    assert lrs[9:] == pytest.approx([1e-3, 1e-3, 1e-3])


def test_stage_plan_cut_by_epochs():
    cfg = _cfg(epochs=3, learning_rate=1e-2, stages=((1e-2, 2), (1e-3, 5)))
    assert cfg.stage_plan() == ((1e-2, 2), (1e-3, 1))
    lrs, decs = _drive(LRController(cfg), [0.1, 0.2, 0.3])
    assert lrs == pytest.approx([1e-2, 1e-3, 1e-3])
    assert decs[1].reset_optimizer and decs[1].restore_epoch is None


def test_random_every_epoch_resets_from_start_epoch():
    cfg = _cfg(
        epochs=6,
        learning_rate=0.005,
        optimizer="sgd",
        momentum=0.5,
        lr_rule="random_every_epoch",
        lr_scale=0.025,
        lr_power=3,
        lr_start_epoch=3,
    )
    lrs, decs = _drive(LRController(cfg, uniform=_feed([0.1, 0.2, 0.3])), [0.5] * 6)
    # epochs 0..2 at the base lr; epochs 3, 4, 5 each with a fresh optimizer and a new random lr
    assert lrs[:2] == [0.005, 0.005]
    assert lrs[2:5] == pytest.approx([0.025 * 0.1**3, 0.025 * 0.2**3, 0.025 * 0.3**3], rel=1e-12)
    assert [d.reset_optimizer for d in decs[:5]] == [False, False, True, True, True]


def test_divide_at_epochs_cifar10_cnn_quirk():
    cfg = _cfg(epochs=25, learning_rate=1e-3, lr_rule="divide_at_epochs", lr_epochs=(1,), lr_start_epoch=21)
    lrs, _ = _drive(LRController(cfg), [0.5] * 25)
    used = [1e-3, *lrs[:-1]]
    expected = [1e-3] * 2 + [1e-3 / 3] * 20 + [1e-3 / 9, 1e-3 / 27, 1e-3 / 81]
    assert used == pytest.approx(expected, rel=1e-12)


def test_none_rule_constant():
    lrs, _ = _drive(LRController(_cfg(lr_rule="none")), [0.1, 0.0, 0.0, 0.0, 0.0])
    assert lrs == [0.005] * 5


def test_state_round_trip_bitwise_with_real_rng():
    cfg = _cfg(epochs=30, seed=7, lr_rule="random_on_plateau", lr_scale=0.005, lr_power=3, lr_compare=">=")
    rng = np.random.default_rng(0)
    metrics = rng.integers(0, 4, size=30) / 4.0  # many ties and drops
    full, _ = _drive(LRController(cfg), metrics)
    first = LRController(cfg)
    part1 = [first.after_epoch(e, metrics[e]).learning_rate for e in range(11)]
    saved = json.loads(json.dumps(first.state_dict()))
    second = LRController(cfg)
    second.load_state_dict(saved)
    part2 = [second.after_epoch(e, metrics[e]).learning_rate for e in range(11, 30)]
    assert part1 + part2 == full  # exact equality, floats through JSON
    assert second.draws > 3
    other_seed, _ = _drive(LRController(cfg.replace(seed=8)), metrics)
    assert other_seed != full


def test_controller_rejects_bad_calls():
    ctrl = LRController(_cfg())
    with pytest.raises(ValueError, match="expects epoch 0"):
        ctrl.after_epoch(1, 0.5)
    with pytest.raises(ValueError, match="non-finite"):
        ctrl.after_epoch(0, float("nan"))
    with pytest.raises(ValueError, match="lr_rule"):
        LRController(_cfg(lr_rule="divide_on_plateau")).load_state_dict(ctrl.state_dict())


def test_set_learning_rate_keeps_adam_moments():
    tx = make_optimizer(_cfg())
    params = {"w": jnp.arange(3.0)}
    state = tx.init(params)
    _, state = tx.update({"w": jnp.ones(3)}, state, params)
    new = set_learning_rate(state, 0.1)
    assert get_learning_rate(new) == pytest.approx(0.1)
    assert get_learning_rate(state) == pytest.approx(0.005)
    np.testing.assert_array_equal(new.inner_state[0].mu, state.inner_state[0].mu)  # flat moments, unchanged
    assert new.inner_state[0].mu.shape == (3,) and float(jnp.abs(new.inner_state[0].mu).max()) > 0
    with pytest.raises(ValueError, match="make_optimizer"):
        set_learning_rate({"not": "a state"}, 0.1)


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_optimizer_state_is_one_vector_unless_fsdp(opt):
    """The update runs on all parameters as one vector (flat state), except with FSDP, where each
    tensor keeps its own state so that it can be sharded like the tensor."""
    kw = dict(optimizer="sgd", momentum=0.5) if opt == "sgd" else {}
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(4)}
    flat = jax.tree_util.tree_leaves(make_optimizer(_cfg(**kw)).init(params).inner_state)
    per_tensor = jax.tree_util.tree_leaves(make_optimizer(_cfg(fsdp=True, **kw)).init(params).inner_state)
    assert {leaf.shape for leaf in flat if leaf.ndim} == {(10,)}
    assert {leaf.shape for leaf in per_tensor if leaf.ndim} == {(2, 3), (4,)}


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_optimizer_matches_torch_with_lr_change(opt):
    torch = pytest.importorskip("torch")
    kw = dict(optimizer="sgd", momentum=0.5, learning_rate=0.01) if opt == "sgd" else {}
    cfg = _cfg(**kw)
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(4,)).astype(np.float32)
    grads = rng.normal(size=(6, 4)).astype(np.float32)
    lrs = [cfg.learning_rate] * 3 + [0.003] * 3
    tx = make_optimizer(cfg)
    p = {"w": jnp.asarray(w0)}
    s = tx.init(p)
    tp = torch.nn.Parameter(torch.tensor(w0))
    topt = (
        torch.optim.Adam([tp], lr=cfg.learning_rate)
        if opt == "adam"
        else torch.optim.SGD([tp], lr=cfg.learning_rate, momentum=0.5)
    )
    for g, lr in zip(grads, lrs, strict=True):
        s = set_learning_rate(s, lr)
        u, s = tx.update({"w": jnp.asarray(g)}, s, p)
        p = {"w": p["w"] + u["w"]}
        for group in topt.param_groups:
            group["lr"] = lr
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(np.asarray(p["w"]), tp.detach().numpy(), rtol=1e-6, atol=1e-7)
