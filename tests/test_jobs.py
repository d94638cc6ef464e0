"""``spinal-jax grid --jobs``: concurrent run processes give the same runs as the one-by-one grid."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spinal_jax.cli import main
from spinal_jax.train import jobs, loop


def _metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _numbers(records):
    keys = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "learning_rate")
    return [{k: r[k] for k in keys} for r in records]


def test_jobs_equal_sequential_grid(tmp_path):
    configs = loop.grid_configs(["digits_mlp"], seeds=1, overrides=["--config.epochs=2"])
    env = dict(os.environ, JAX_DEFAULT_MATMUL_PRECISION="highest")  # as conftest sets in this process
    summaries = jobs.run_grid_jobs(configs, tmp_path / "jobs", jobs=2, env=env, status_every=0.0, checkpoint_every=1e9)
    loop.run_grid(configs, tmp_path / "seq", progress=False)
    assert [s["head"] for s in summaries] == ["default", "spinal"]
    for config in configs:
        a = _metrics(os.path.join(loop.run_dir_for(tmp_path / "jobs", config), "metrics.jsonl"))
        b = _metrics(os.path.join(loop.run_dir_for(tmp_path / "seq", config), "metrics.jsonl"))
        assert len(a) == 2 and _numbers(a) == _numbers(b)
        log_text = Path(loop.run_dir_for(tmp_path / "jobs", config), jobs.LOG_FILE).read_text()
        assert "epoch 2/2" in log_text
        # --checkpoint-every reached the run processes: only the last epoch was saved.
        assert os.listdir(os.path.join(loop.run_dir_for(tmp_path / "jobs", config), "checkpoints")) == ["2"]

    # Finished runs are not started again: their summaries stay as they were.
    summary_path = os.path.join(loop.run_dir_for(tmp_path / "jobs", configs[0]), "summary.json")
    before = os.stat(summary_path).st_mtime_ns
    again = jobs.run_grid_jobs(configs, tmp_path / "jobs", jobs=2, env=env)
    assert again == summaries and os.stat(summary_path).st_mtime_ns == before


def test_failed_run_is_reported_with_its_log(tmp_path):
    configs = loop.grid_configs(["digits_mlp"], seeds=1, overrides=["--config.epochs=1"])
    env = dict(os.environ, JAX_PLATFORMS="no_such_platform")
    with pytest.raises(jobs.GridJobsFailed, match=r"2 run\(s\) failed: .*digits_mlp/default/seed0 \(log: .*train\.log"):
        jobs.run_grid_jobs(configs, tmp_path, jobs=2, env=env)
    log_text = Path(loop.run_dir_for(tmp_path, configs[0]), jobs.LOG_FILE).read_text()
    assert "no_such_platform" in log_text


def test_child_environment_memory_fraction():
    assert jobs.child_environment(4, {})["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.225"
    assert jobs.child_environment(1, {})["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.750"
    kept = jobs.child_environment(4, {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in kept


@pytest.mark.parametrize(
    "args, message",
    [
        (["--jobs", "0"], "--jobs=0: expected a positive int"),
        (["--jobs", "2", "--multi"], "--jobs and --multi cannot be combined"),
        (["--jobs", "2", "--num-processes", "2"], "--jobs runs on one host"),
    ],
)
def test_cli_rejects_bad_jobs(tmp_path, capsys, args, message):
    assert main(["-q", "grid", "digits_mlp", *args, "--workdir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_config_json_round_trip(tmp_path):
    from spinal_jax.train import apply_overrides, load_config

    config = apply_overrides(load_config("digits_mlp"), ["--config.epochs=3", "--config.head=spinal"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert load_config(str(path)) == config
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_config(str(path))
    with pytest.raises(ValueError, match="does not exist"):
        load_config(str(tmp_path / "missing.json"))


def test_grid_parent_loads_no_trainer():
    # spinal-jax grid --jobs N checks its configs and starts the runs without the trainer's imports.
    code = (
        "import sys\n"
        "from spinal_jax.train import grid, jobs, errors\n"
        "grid.grid_configs(['digits_mlp'], seeds=2)\n"
        "loaded = [m for m in ('orbax.checkpoint', 'optax', 'spinal_jax.train.loop') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_train_package_names_resolve():
    import spinal_jax.train as train

    for name in train.__all__:
        assert getattr(train, name) is not None, name
    assert train.TrainingDiverged is loop.TrainingDiverged and train.run_dir_for is loop.run_dir_for
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        train.nope  # noqa: B018

