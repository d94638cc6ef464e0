"""spinal_jax.parallel: N devices give the numbers of one device; FSDP; checkpoints across meshes; errors.

The toy run here (``toy_state`` / ``train_run``) is also what tests/test_distributed.py runs in
each of its processes, so its code must work in a multi-process job too.
"""

from __future__ import annotations

import functools
import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from spinal_jax import SpinalDense, parallel
from spinal_jax.normalization import BatchNorm
from spinal_jax.train import steps
from spinal_jax.train.checkpoint import Checkpointer
from spinal_jax.train.state import TrainState, create_train_state

GLOBAL_BATCH = 16
NUM_EXAMPLES = 64
IMAGE_SHAPE = (8, 8, 1)


class ToyNet(nn.Module):
    """Dense -> BatchNorm -> relu -> SpinalDense with BatchNorm and dropout: small enough for CPU.

    The first Dense has no bias: train-mode BatchNorm cancels it, so its gradient would be pure
    round-off, which no tolerance between reduction orders can compare."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(BatchNorm()(nn.Dense(32, use_bias=False)(x), train=train))
        return SpinalDense(10, layer_width=8, num_layers=3, batch_norm=True, dropout_rate=0.1)(x, train=train)


def toy_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed uint8 images and int labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (NUM_EXAMPLES, *IMAGE_SHAPE), dtype=np.uint8)
    labels = rng.integers(0, 10, (NUM_EXAMPLES,), dtype=np.int32)
    return images, labels


def toy_state(seed: int = 0) -> TrainState:
    """A fresh (unsharded) train state of ToyNet with SGD + momentum."""
    tx = optax.sgd(0.05, momentum=0.9)
    example = jnp.zeros((2, *IMAGE_SHAPE), jnp.float32)
    return create_train_state(ToyNet(), tx, example, jax.random.PRNGKey(seed), jax.random.PRNGKey(seed + 1))


def to_host(x: jax.Array) -> np.ndarray:
    """A replicated (possibly multi-process) array as numpy; gathers sharded single-process arrays."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        assert x.is_fully_replicated, "multi-process results must be replicated to be read back"
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def train_run(
    mesh: jax.sharding.Mesh,
    num_steps: int,
    *,
    state: TrainState | None = None,
    fsdp: bool = False,
    min_size: int = parallel.FSDP_MIN_SIZE,
    first_step: int = 0,
) -> tuple[TrainState, list[float]]:
    """``num_steps`` steps of the trainer's ``train_step`` jitted over ``mesh``; returns state, losses.

    Global batch ``i`` is a fixed function of ``i``; each process feeds its rows of it.
    """
    images, labels = toy_data()
    parallel.check_batch_size(GLOBAL_BATCH, mesh)
    state = toy_state() if state is None else state
    state_sh = parallel.state_shardings(mesh, state, fsdp=fsdp, min_size=min_size)
    batch_sh = parallel.batch_sharding(mesh)
    state = jax.device_put(state, state_sh)
    step_fn = jax.jit(
        functools.partial(steps.train_step, batch_sharding=batch_sh),
        in_shardings=(state_sh, batch_sh),
        out_shardings=(state_sh, parallel.replicated(mesh)),
    )
    rows = parallel.process_batch_slice(GLOBAL_BATCH)
    order = np.random.default_rng(123).permutation(NUM_EXAMPLES * 4) % NUM_EXAMPLES
    losses = []
    for i in range(first_step, first_step + num_steps):
        idx = np.take(order, np.arange(i * GLOBAL_BATCH, (i + 1) * GLOBAL_BATCH), mode="wrap")[rows]
        batch = parallel.host_batch_to_global({"image": images[idx], "label": labels[idx]}, mesh)
        state, metrics = step_fn(state, batch)
        losses.append(float(to_host(metrics["loss"]) / to_host(metrics["count"])))
    return state, losses


def state_arrays(state: TrainState) -> dict[str, np.ndarray]:
    """Every array leaf of the state (params, batch_stats, opt_state, step, rng) by key path."""
    leaves = jax.tree_util.tree_leaves_with_path(state)
    return {jax.tree_util.keystr(path): to_host(leaf) for path, leaf in leaves}


def assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray], rtol: float = 1e-5) -> None:
    """Every float leaf within ``rtol`` of its value or of its scale (its largest value); the rest equal.

    The runs differ in the order of their sums (one device against several), and each step carries
    the difference on: an element smaller than its leaf's typical size (a weight crossing zero, a
    momentum trace whose summed gradients nearly cancel) holds the absolute rounding of its whole
    history (~1e-7 here after 90 steps), so the absolute tolerance is ``rtol`` times the leaf's
    largest value. A wrong gradient (one device's, or a wrong average) is off by far more.
    """
    assert a.keys() == b.keys()
    for key in a:
        atol = 1e-7
        if np.issubdtype(np.asarray(b[key]).dtype, np.floating):
            atol = max(atol, rtol * float(np.max(np.abs(b[key]), initial=0.0)))
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol, err_msg=key)


# --- N devices == 1 device ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_device_run() -> tuple[dict[str, np.ndarray], list[float]]:
    state, losses = train_run(parallel.make_mesh(1), 4)
    return state_arrays(state), losses


def test_eight_devices_match_one(one_device_run):
    ref_state, ref_losses = one_device_run
    mesh = parallel.make_mesh()
    assert mesh.devices.size == 8
    state, losses = train_run(mesh, 4)
    # The state stays replicated over the mesh and the losses really change step to step.
    assert state.params["Dense_0"]["kernel"].sharding.is_fully_replicated
    assert len(set(np.round(ref_losses, 6))) == len(ref_losses)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert_same_state(state_arrays(state), ref_state)


def test_fsdp_shards_state_and_matches_one_device(one_device_run):
    ref_state, ref_losses = one_device_run
    mesh = parallel.make_mesh()
    state, losses = train_run(mesh, 4, fsdp=True, min_size=256)
    kernel = state.params["Dense_0"]["kernel"]  # (64, 32): 2048 elements, sharded on axis 0 (64)
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("data")
    assert kernel.addressable_shards[0].data.shape == (8, 32)
    # The momentum twin of the kernel is sharded the same way; small leaves stay replicated.
    trace = state.opt_state[0].trace
    assert trace["Dense_0"]["kernel"].sharding.spec == kernel.sharding.spec
    assert state.params["BatchNorm_0"]["scale"].sharding.is_fully_replicated
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert_same_state(state_arrays(state), ref_state)


def test_step_functions_of_trainer_on_eight_devices(one_device_run):
    """The trainer's own jitted ``StepFunctions`` with the mesh's shardings give the same numbers."""
    ref_state, ref_losses = one_device_run
    mesh = parallel.make_mesh()
    state = toy_state()
    state_sh = parallel.state_shardings(mesh, state)
    fns = steps.StepFunctions(batch_sharding=parallel.batch_sharding(mesh), state_sharding=state_sh)
    state = jax.device_put(state, state_sh)
    images, labels = toy_data()
    order = np.random.default_rng(123).permutation(NUM_EXAMPLES * 4) % NUM_EXAMPLES
    losses = []
    for i in range(4):
        idx = order[i * GLOBAL_BATCH : (i + 1) * GLOBAL_BATCH]
        batch = parallel.host_batch_to_global({"image": images[idx], "label": labels[idx]}, mesh)
        state, metrics = fns.train_step(state, batch)
        losses.append(float(metrics["loss"] / metrics["count"]))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert_same_state(state_arrays(state), ref_state)


def test_batch_norm_statistics_are_over_the_global_batch():
    mesh = parallel.make_mesh()
    # Each device's shard has its own mean (shard k is centred on 10*k), so per-device statistics
    # would give a different running mean than the global batch's.
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(16, 4)) + np.repeat(np.arange(8) * 10.0, 2)[:, None]).astype(np.float32)
    bn = BatchNorm()
    variables = bn.init(jax.random.PRNGKey(0), jnp.zeros((2, 4)))

    @jax.jit
    def forward(variables, x):
        return bn.apply(variables, x, train=True, mutable=["batch_stats"])

    xs = parallel.host_batch_to_global(x, mesh)
    assert len(xs.addressable_shards) == 8
    y, updates = forward(variables, xs)
    mean = np.asarray(updates["batch_stats"]["mean"])
    np.testing.assert_allclose(mean, 0.1 * x.mean(axis=0), rtol=1e-5)
    assert not np.allclose(mean, 0.1 * x[:2].mean(axis=0), rtol=1e-2)
    np.testing.assert_allclose(np.asarray(y), (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-4, atol=1e-5)


# --- checkpoints across meshes ------------------------------------------------------------------


def test_checkpoint_saved_on_eight_devices_restores_on_one(tmp_path):
    """The trainer's Checkpointer: saved from an FSDP-sharded 8-device state, restored onto 1 device."""
    mesh8, mesh1 = parallel.make_mesh(), parallel.make_mesh(1)
    state, _ = train_run(mesh8, 2, fsdp=True, min_size=256)
    saved = state_arrays(state)
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(2, state, {"epoch": 2})

    # The restore target fixes the shardings: a fresh state placed on the 1-device mesh.
    target = toy_state()
    target = jax.device_put(target, parallel.state_shardings(mesh1, target))
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        restored, host = ckpt.restore_latest(target)
    assert host["epoch"] == 2
    assert restored.params["Dense_0"]["kernel"].sharding.mesh.devices.size == 1
    assert_same_state(state_arrays(restored), saved, rtol=0)

    cont8, losses8 = train_run(mesh8, 2, state=state, fsdp=True, min_size=256, first_step=2)
    cont1, losses1 = train_run(mesh1, 2, state=restored, first_step=2)
    np.testing.assert_allclose(losses1, losses8, rtol=1e-5)
    assert_same_state(state_arrays(cont1), state_arrays(cont8))


# --- meshes, shardings, host slices ---------------------------------------------------------------


def test_make_mesh_default_and_subset():
    mesh = parallel.make_mesh()
    assert mesh.axis_names == ("data",)
    assert list(mesh.devices.flat) == sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    assert parallel.mesh_size(parallel.make_mesh(2)) == 2
    assert parallel.batch_sharding(mesh).spec == jax.sharding.PartitionSpec("data")
    assert parallel.replicated(mesh).is_fully_replicated


def test_fsdp_rule_picks_largest_divisible_axis():
    mesh = parallel.make_mesh()
    tree = {
        "conv": jax.ShapeDtypeStruct((3, 3, 64, 128), jnp.float32),  # largest divisible: 128 (axis 3)
        "dense": jax.ShapeDtypeStruct((1000, 512), jnp.float32),  # 1000 = 8 * 125: axis 0
        "odd": jax.ShapeDtypeStruct((999, 333), jnp.float32),  # nothing divides by 8: replicated
        "bias": jax.ShapeDtypeStruct((512,), jnp.float32),  # small: replicated
        "step": jax.ShapeDtypeStruct((), jnp.int32),
    }
    specs = {k: s.spec for k, s in parallel.state_shardings(mesh, tree, fsdp=True).items()}
    P = jax.sharding.PartitionSpec
    assert specs == {"conv": P(None, None, None, "data"), "dense": P("data"), "odd": P(), "bias": P(), "step": P()}
    assert all(s.spec == P() for s in jax.tree.leaves(parallel.state_shardings(mesh, tree)))


def test_process_shard_and_batch_slice_cover_everything():
    for n, count in [(10, 3), (64, 4), (2, 4)]:
        dropped = [parallel.process_shard(n, i, count) for i in range(count)]
        assert {s.stop - s.start for s in dropped} == {n // count}
        kept = [parallel.process_shard(n, i, count, drop_remainder=False) for i in range(count)]
        assert np.concatenate([np.arange(n)[s] for s in kept]).tolist() == list(range(n))
    assert [parallel.process_batch_slice(12, i, 3) for i in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 12)]
    assert parallel.process_batch_slice(12) == slice(0, 12)


# --- errors ---------------------------------------------------------------------------------------


def test_batch_size_errors():
    mesh = parallel.make_mesh()
    assert parallel.check_batch_size(24, mesh) == 24
    with pytest.raises(ValueError, match=r"batch_size=20 does not divide over the 8 devices.*16 or 24"):
        parallel.check_batch_size(20, mesh)
    with pytest.raises(ValueError, match=r"eval_batch_size=3 .* multiple of 8 \(e\.g\. 8\)"):
        parallel.check_batch_size(3, mesh, name="eval_batch_size")
    for bad in (0, -8, 8.0, True):
        with pytest.raises(ValueError, match="positive int"):
            parallel.check_batch_size(bad, mesh)
    with pytest.raises(ValueError, match="do not divide over this process's 8 devices"):
        parallel.host_batch_to_global({"image": np.zeros((12, 2))}, mesh)
    with pytest.raises(ValueError, match="scalar"):
        parallel.host_batch_to_global(np.float32(1.0), mesh)
    with pytest.raises(ValueError, match="does not divide over 3 processes"):
        parallel.process_batch_slice(10, 0, 3)
    with pytest.raises(ValueError, match="out of range"):
        parallel.process_shard(10, 3, 3)


def test_mesh_errors():
    with pytest.raises(ValueError, match=r"num_devices=9 but only 8 cpu device\(s\) are available"):
        parallel.make_mesh(9)
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="positive int"):
            parallel.make_mesh(bad)
    with pytest.raises(ValueError, match="empty"):
        parallel.make_mesh(devices=[])
    with pytest.raises(ValueError, match="duplicates"):
        parallel.make_mesh(devices=[jax.devices()[0]] * 2)
    fake = [types.SimpleNamespace(process_index=p, id=i, platform="gpu") for p, i in [(0, 0), (0, 1), (1, 2)]]
    with pytest.raises(ValueError, match="unequal numbers of devices"):
        parallel.check_mesh(devices=fake)
    fake = [types.SimpleNamespace(process_index=p, id=i, platform="gpu") for p in (0, 1) for i in (2 * p, 2 * p + 1)]
    with pytest.raises(ValueError, match="num_devices=3 does not divide over the 2 processes"):
        parallel.check_mesh(3, devices=fake)
    assert [(d.process_index, d.id) for d in parallel.check_mesh(2, devices=fake)] == [(0, 0), (1, 2)]
    with pytest.raises(ValueError, match="mesh has axes"):
        parallel.mesh_size(jax.sharding.Mesh(np.asarray(jax.devices()), ("batch",)))


@pytest.fixture
def no_cluster_env(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_initialize_distributed_single_process_is_a_noop(no_cluster_env):
    assert parallel.initialize_distributed() is False
    assert parallel.initialize_distributed(num_processes=1) is False
    no_cluster_env.setenv("JAX_NUM_PROCESSES", "1")
    assert parallel.initialize_distributed() is False
    assert not jax.distributed.is_initialized()


def test_initialize_distributed_errors(no_cluster_env):
    with pytest.raises(ValueError, match=r"missing: --coordinator-address.*--process-id"):
        parallel.initialize_distributed(num_processes=2)
    with pytest.raises(ValueError, match="expected 'host:port'"):
        parallel.initialize_distributed("localhost", 2, 0)
    with pytest.raises(ValueError, match="process_id=2 out of range for num_processes=2"):
        parallel.initialize_distributed("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="num_processes=0"):
        parallel.initialize_distributed("127.0.0.1:1234", 0, 0)
    no_cluster_env.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two'"):
        parallel.initialize_distributed()
    no_cluster_env.setenv("JAX_NUM_PROCESSES", "2")
    no_cluster_env.setenv("JAX_PROCESS_ID", "0")
    with pytest.raises(ValueError, match=r"missing: --coordinator-address / JAX_COORDINATOR_ADDRESS$"):
        parallel.initialize_distributed()
    assert not jax.distributed.is_initialized()


# --- the scaling benchmark (smoke test on CPU) ----------------------------------------------------


def test_bench_scaling_quick_writes_json_and_markdown(tmp_path, monkeypatch):
    import importlib.util
    import json
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "bench_scaling.py"
    spec = importlib.util.spec_from_file_location("bench_scaling", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_scaling", bench)  # dataclasses look the module up
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--devices", "1,2", "--modes", "per_device", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "scaling.json").read_text())
    assert {"machine", "versions", "date", "command", "settings", "results"} <= record.keys()
    assert record["machine"]["device_count"] == 8
    rows = record["results"]
    assert [(r["devices"], r["global_batch"], r["per_device_batch"]) for r in rows] == [(1, 4, 4), (2, 8, 4)]
    for r in rows:
        assert r["error"] == "" and r["steps_per_s"] > 0
        assert r["images_per_s"] == pytest.approx(r["steps_per_s"] * r["global_batch"])
    assert rows[0]["efficiency"] == pytest.approx(1.0)
    assert rows[1]["efficiency"] == pytest.approx(rows[1]["images_per_s"] / (2 * rows[0]["images_per_s"]))
    assert "| 2 | 8 | 4 |" in (tmp_path / "scaling.md").read_text()
    with pytest.raises(ValueError, match="must include 1"):
        bench.main(["--quick", "--devices", "2", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match=r"\[16\] not in 1..8"):
        bench.main(["--quick", "--devices", "1,16", "--out", str(tmp_path)])


# --- the training loop (train_and_evaluate) over a mesh -------------------------------------------


def loop_config(**changes: object) -> object:
    """digits_mlp (SGD) for 2 epochs with a 1024-wide hidden layer (its 64x1024 kernel is FSDP-sharded).

    1,437 train examples at batch 32: 44 steps per epoch plus a tail batch of 29 (which does not
    divide over 8 devices, so the loop's unconstrained tail step runs too).
    """
    from spinal_jax.train.config import apply_overrides, load_config

    # SGD with momentum: Adam's m/sqrt(v) magnifies last-bit differences of near-zero gradients, so
    # after 90 steps a few parameters differ by >1e-5 relative between reduction orders. tanh, not
    # ReLU: a hidden unit whose input is within round-off of 0 for some example would be on in one
    # run and off in the other (seen on one CPU: unit 632's gradients 0.2% apart after 90 steps).
    base = {"epochs": 2, "head": "default", "optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9,
            "tensorboard": False, "log_every_steps": 11, "checkpoint_keep": 2}
    config = apply_overrides(load_config("digits_mlp"), {**base, **changes})
    return apply_overrides(config, ["--config.model_overrides.hidden=1024", "--config.model_overrides.activation=tanh"])


def run_history(run_dir: str) -> list[dict]:
    from spinal_jax.train import metrics as metrics_io

    with open(f"{run_dir}/{metrics_io.METRICS_FILE}") as f:
        return [json.loads(line) for line in f]


def final_checkpoint_arrays(run_dir: str) -> dict[str, np.ndarray]:
    """The last checkpoint's train state, read in this process (whatever mesh wrote it)."""
    import orbax.checkpoint as ocp

    ckpt = os.path.join(run_dir, "checkpoints")
    last = max(int(d) for d in os.listdir(ckpt) if d.isdigit())
    path = os.path.join(ckpt, str(last), "state")
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.StandardCheckpointer() as c:
        meta = c.metadata(path)
        meta = getattr(meta, "item_metadata", meta)
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device), meta)
        tree = c.restore(path, target)
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def assert_same_run(history: list[dict], reference: list[dict], num_test: int = 360) -> None:
    """Same losses (rtol 1e-5) and accuracies (up to one example flipped by float rounding)."""
    assert len(history) == len(reference)
    for got, want in zip(history, reference, strict=True):
        for key in ("train_loss", "test_loss", "learning_rate"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)
        assert abs(got["test_accuracy"] - want["test_accuracy"]) <= 1.0 / num_test + 1e-12
    assert history[0]["train_loss"] != history[1]["train_loss"]  # the numbers really move


def _one_device_run(tmp_path_factory, **changes: object) -> tuple[list[dict], dict[str, np.ndarray]]:
    from spinal_jax.train.loop import train_and_evaluate

    run_dir = str(tmp_path_factory.mktemp("loop1"))
    train_and_evaluate(loop_config(**changes), run_dir, progress=False, mesh=parallel.make_mesh(1))
    return run_history(run_dir), final_checkpoint_arrays(run_dir)


@pytest.fixture(scope="module")
def loop_one_device(tmp_path_factory) -> tuple[list[dict], dict[str, np.ndarray]]:
    return _one_device_run(tmp_path_factory)


@pytest.fixture(scope="module")
def loop_fsdp_one_device(tmp_path_factory) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The same run with fsdp=True (per-tensor optimizer state, see schedules.make_optimizer) on one device."""
    return _one_device_run(tmp_path_factory, fsdp=True)


def test_loop_on_eight_devices_matches_one_device(loop_one_device, tmp_path):
    from spinal_jax.train.loop import train_and_evaluate

    history1, arrays1 = loop_one_device
    train_and_evaluate(loop_config(), str(tmp_path), progress=False, mesh=parallel.make_mesh(8))
    assert_same_run(run_history(str(tmp_path)), history1)
    assert_same_state(final_checkpoint_arrays(str(tmp_path)), arrays1)


def test_loop_fsdp_on_eight_devices_resumes_on_one_device(loop_fsdp_one_device, tmp_path, monkeypatch):
    """FSDP through the loop: the state stays sharded across the jitted steps; a checkpoint written
    on 8 devices resumes on 1 and the run ends with the numbers of an uninterrupted 1-device run."""
    from spinal_jax.train import loop

    history1, arrays1 = loop_fsdp_one_device
    placed: list[object] = []
    place = loop._place
    monkeypatch.setattr(loop, "_place", lambda tree, shardings: placed.append(tree) or place(tree, shardings))

    class Stop(Exception):
        pass

    def stop(epoch: int, record: dict) -> None:
        raise Stop

    config = loop_config(fsdp=True)
    with pytest.raises(Stop):
        loop.train_and_evaluate(config, str(tmp_path), progress=False, mesh=parallel.make_mesh(8), epoch_callback=stop)
    # placed[-1] is the state as the jitted steps returned it after epoch 0: still FSDP-sharded.
    trained = placed[-1]
    assert int(trained.step) == 45
    kernel = trained.params["fc1"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "data")
    assert kernel.addressable_shards[0].data.shape == (64, 1024 // 8)
    momentum = [x for x in jax.tree.leaves(trained.opt_state) if x.shape == kernel.shape]
    assert len(momentum) == 1 and momentum[0].sharding.spec == kernel.sharding.spec

    loop.train_and_evaluate(config, str(tmp_path), progress=False, mesh=parallel.make_mesh(1))
    assert_same_run(run_history(str(tmp_path)), history1)
    assert_same_state(final_checkpoint_arrays(str(tmp_path)), arrays1)


def test_loop_batch_size_not_dividing_fails_before_any_file(tmp_path):
    from spinal_jax.train.loop import train_and_evaluate

    with pytest.raises(ValueError, match=r"config.batch_size=36 does not divide over the 8 devices"):
        train_and_evaluate(loop_config(batch_size=36), str(tmp_path / "run"), progress=False, mesh=parallel.make_mesh())
    assert not (tmp_path / "run").exists()
