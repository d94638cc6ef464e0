"""Grouped runs (spinal_jax.train.multi): equal to single runs up to rounding, bitwise resumable."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from quadrant_data import quadrant_images
from test_train import TIMING  # the timing fields that differ between runs

from spinal_jax import parallel
from spinal_jax.train import Config, loop, multi
from spinal_jax.train.config import split_validation
from spinal_jax.train.loop import Split

# A grouped run vs the same single run after 2 epochs (14 steps), float32 on CPU: the stated tolerance.
RTOL, ATOL = 1e-4, 1e-5


def _splits(config: Config) -> tuple[Split, Split | None, Split, int]:
    """Small 8x8 data whose class is the brightest quadrant; clean: a per-seed validation split."""
    rng = np.random.default_rng(99)

    def make(n: int) -> Split:
        return Split(*quadrant_images(rng, n, 8))

    train, test = make(100), make(40)
    val = None
    if config.protocol == "clean":
        t, v = split_validation(len(train), config.validation, config.seed)
        train, val = train.take(t), train.take(v)
    return train, val, test, 4


@pytest.fixture(autouse=True)
def synthetic(monkeypatch):
    monkeypatch.setattr(loop, "load_splits", _splits)


def _config(**kw) -> Config:
    # A tiny MLP (fast on 2 CPU cores); augmentation and the random lr rule (controller RNG) take part.
    base = dict(
        name="synthetic_mlp",
        model="digits_mlp",
        model_overrides={"hidden": 32, "width": 8},
        dataset="digits",
        num_classes=4,
        epochs=2,
        batch_size=16,
        eval_batch_size=16,
        optimizer="sgd",
        learning_rate=0.1,
        momentum=0.5,
        lr_rule="random_on_plateau",
        lr_scale=0.1,
        lr_power=3.0,
        lr_compare=">=",
        train_augment="rotate(10)|normalize(0.5, 0.5)",
        eval_preprocess="normalize(0.5, 0.5)",
        log_every_steps=2,
        tensorboard=False,
        seed=3,
    )
    base.update(kw)
    return Config(**base)


def _grid(seeds=(3, 4), **kw) -> list[Config]:
    return [_config(head=h, seed=s, **kw) for h in ("default", "spinal") for s in seeds]


def _dirs(root, configs) -> list[str]:
    return [loop.run_dir_for(str(root), c) for c in configs]


def _last_checkpoint(directory: str) -> dict:
    last = max(int(d) for d in os.listdir(directory) if d.isdigit())
    with ocp.StandardCheckpointer() as c:
        tree = c.restore(os.path.join(directory, str(last), "state"))
    return jax.tree.map(np.asarray, tree)


def _group_checkpoints(root) -> str:
    (group,) = [os.path.join(root, "synthetic_mlp", "_groups", d) for d in os.listdir(os.path.join(root, "synthetic_mlp", "_groups"))]
    return os.path.join(group, "checkpoints")


def _metrics(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def _assert_bitwise(a, b) -> None:
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(np.atleast_1d(x).view(np.uint8), np.atleast_1d(y).view(np.uint8))


def test_grouped_run_matches_single_run(tmp_path):
    configs = _grid()
    summaries = multi.train_many(configs, _dirs(tmp_path / "g", configs), progress=False)
    group = _last_checkpoint(_group_checkpoints(tmp_path / "g"))
    for config, run_dir in ((configs[3], "single_s4"),):
        single_dir = str(tmp_path / run_dir)
        single = loop.train_and_evaluate(config, single_dir, progress=False, mesh=parallel.make_mesh(1))
        ref = _last_checkpoint(os.path.join(single_dir, "checkpoints"))
        grouped = jax.tree.map(lambda x, i=config.seed - 3: x[i], group[config.head])
        for key in ("params", "batch_stats", "opt_state"):
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL), grouped[key], ref["state"][key])
        assert int(grouped["step"]) == int(ref["state"]["step"]) == 2 * 7
        np.testing.assert_array_equal(grouped["rng"], ref["state"]["rng"])
        mine = next(s for s in summaries if s["head"] == config.head and s["seed"] == config.seed)
        assert mine["trained_with"] == "multi" and mine["group_size"] == 4
        assert set(mine) == set(single) | {"trained_with", "group_size"}
        assert mine["config"] == single["config"]
        for k in ("final_train_loss", "test_loss"):
            np.testing.assert_allclose(mine[k], single[k], rtol=1e-4)
        assert abs(mine["best_test_accuracy"] - single["best_test_accuracy"]) <= 1 / 40 + 1e-9
        for a, b in zip(_metrics(loop.run_dir_for(str(tmp_path / "g"), config)), _metrics(single_dir), strict=True):
            assert a["learning_rate"] == pytest.approx(b["learning_rate"], rel=1e-6)
    # Within a seed both heads saw the same batches: the same data order and augmentation keys.
    np.testing.assert_array_equal(group["default"]["rng"], group["spinal"]["rng"])
    # Finished runs are not re-run.
    again = multi.train_many(configs, _dirs(tmp_path / "g", configs), progress=False)
    assert again == summaries


class Interrupt(Exception):
    pass


def test_group_kill_and_resume_is_bitwise_and_reruns_identical(tmp_path):
    configs = _grid(epochs=3, protocol="clean", validation="fraction:0.2", lr_rule="random_every_epoch",
                    lr_start_epoch=1)
    ref_dirs = _dirs(tmp_path / "ref", configs)
    ref = multi.train_many(configs, ref_dirs, progress=False)
    assert all(s["protocol"] == "clean" and "val_selected_test_accuracy" in s for s in ref)

    dirs = _dirs(tmp_path / "cut", configs)

    def stop(epoch, records):
        assert len(records) == 4
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        multi.train_many(configs, dirs, progress=False, epoch_callback=stop)
    assert not any(os.path.exists(os.path.join(d, "summary.json")) for d in dirs)
    resumed = multi.train_many(configs, dirs, progress=False)
    for a, b, da, db in zip(ref, resumed, ref_dirs, dirs, strict=True):
        assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}
        assert _metrics(da) == _metrics(db)
        assert os.path.isfile(os.path.join(db, "curves.png"))
    _assert_bitwise(_last_checkpoint(_group_checkpoints(tmp_path / "ref")),
                    _last_checkpoint(_group_checkpoints(tmp_path / "cut")))


def test_grid_groups_compatible_runs_and_report_reads_them(tmp_path):
    configs = [*_grid(seeds=(3,), epochs=1), _config(name="other", head="spinal", seed=4, epochs=1)]
    plan = multi.plan_groups(configs, tmp_path)
    assert [len(g) for g in plan] == [2, 1]
    summaries = multi.run_grid_multi(configs, tmp_path)
    assert [s["head"] for s in summaries] == ["default", "spinal", "spinal"]
    assert summaries[0]["trained_with"] == "multi" and "trained_with" not in summaries[2]
    from spinal_jax import report

    text = report.report(str(tmp_path))
    assert "synthetic_mlp" in str(text)


def test_incompatible_configs_are_refused(tmp_path):
    a, b = _config(head="default"), _config(head="spinal", batch_size=8)
    with pytest.raises(ValueError, match="batch_size"):
        multi.train_many([a, b], [str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(ValueError, match="one dir per config"):
        multi.train_many([a], [])
    with pytest.raises(ValueError, match="share a"):
        multi.train_many([a, a], [str(tmp_path / "a"), str(tmp_path / "b")])
