"""The ``spinal-jax`` command line: the demo, train/resume, grid, and errors before any compute."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from spinal_jax.cli import main


def _summary(path) -> dict:
    with open(path) as f:
        return json.load(f)


def test_demo_reaches_95_percent_with_both_heads(tmp_path, capsys):
    assert main(["-q", "demo", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| digits_mlp | default |" in out and "| digits_mlp | spinal |" in out
    for head in ("default", "spinal"):
        run_dir = tmp_path / "digits_mlp" / head / "seed0"
        summary = _summary(run_dir / "summary.json")
        assert summary["head"] == head and summary["dataset"] == "digits"
        assert summary["test_accuracy"] >= 0.95, (head, summary["test_accuracy"])
        assert (run_dir / "curves.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--config.no_such_key=3"], "no_such_key"),
        (["--config.batch_size=0"], "batch_size"),
        (["--config.epochs=abc"], "epochs"),
        (["--config.model=no_such_model"], "model"),
        (["--config.head=wide"], "head"),
        (["--not-a-flag"], "--not-a-flag"),
        (["--checkpoint-every", "-1"], "--checkpoint-every"),
        (["--checkpoint-every", "nan"], "--checkpoint-every"),
    ],
)
def test_bad_overrides_fail_before_compute(tmp_path, capsys, args, names):
    workdir = tmp_path / "run"
    code = main(["train", "--config", "digits_mlp", *args, "--workdir", str(workdir)])
    err = capsys.readouterr().err
    assert code == 2
    assert names in err and "Traceback" not in err
    assert not workdir.exists()  # nothing was computed or written


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--num-processes", "2"], "--coordinator-address"),
        (["--coordinator-address", "nohost", "--num-processes", "2", "--process-id", "0"], "host:port"),
        (["--coordinator-address", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"], "process_id=2"),
        (["--fsdp", "--config.batch_size=36"], "batch_size=36 does not divide over the 8 devices"),
    ],
)
def test_bad_scale_out_flags_fail_before_compute(tmp_path, capsys, monkeypatch, args, names):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    workdir = tmp_path / "run"
    assert main(["train", "--config", "digits_mlp", *args, "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert names in err and "Traceback" not in err
    assert not workdir.exists()


def test_unknown_config_name(tmp_path, capsys):
    assert main(["train", "--config", "no_such_config", "--workdir", str(tmp_path / "r")]) == 2
    assert "no_such_config" in capsys.readouterr().err


def test_train_resumes_and_skips_finished(tmp_path, capsys):
    args = ["-q", "train", "--config", "digits_mlp", "--config.epochs=2", "--workdir", str(tmp_path)]
    assert main(args) == 0
    first = _summary(tmp_path / "summary.json")
    assert first["epochs"] == 2 and first["config"]["epochs"] == 2
    mtime = (tmp_path / "summary.json").stat().st_mtime_ns
    assert main(args) == 0  # finished: not re-run
    assert (tmp_path / "summary.json").stat().st_mtime_ns == mtime
    # Another config in the same run directory is refused with a clear message.
    assert main([*args[:-2], "--config.learning_rate=0.5", "--workdir", str(tmp_path)]) == 2
    assert "different config" in capsys.readouterr().err


def test_checkpoint_every_skips_epochs_and_keeps_the_last(tmp_path):
    args = ["-q", "train", "--config", "digits_mlp", "--config.epochs=3", "--workdir", str(tmp_path)]
    assert main([*args, "--checkpoint-every", "1e9"]) == 0
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3"]  # only the last epoch
    summary = _summary(tmp_path / "summary.json")
    assert 0 < summary["setup_seconds"] < summary["wall_seconds"] and summary["checkpoint_seconds"] >= 0
    with open(tmp_path / "metrics.jsonl") as f:
        assert all(json.loads(line)["eval_seconds"] > 0 for line in f)
    every = tmp_path / "every"
    assert main([*args[:-1], str(every)]) == 0
    assert sorted(os.listdir(every / "checkpoints")) == ["1", "2", "3"]


def test_grid_layout_and_report(tmp_path, capsys):
    assert main(["-q", "grid", "digits_mlp", "--seeds", "2", "--config.epochs=1", "--workdir", str(tmp_path)]) == 0
    for head in ("default", "spinal"):
        for seed in (0, 1):
            summary = _summary(tmp_path / "digits_mlp" / head / f"seed{seed}" / "summary.json")
            assert summary["seed"] == seed and summary["head"] == head
    pytest.importorskip("spinal_jax.report")
    capsys.readouterr()
    json_path = tmp_path / "rows.json"
    assert main(["report", str(tmp_path), "--json", str(json_path)]) == 0
    assert json_path.exists()


def test_console_script_error_exit_code(tmp_path):
    """The installed entry point: exit status 2 and a one-line message, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from spinal_jax.cli import main; sys.exit(main())",
         "train", "--config", "digits_mlp", "--config.learning_rate=-1", "--workdir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 2
    assert "learning_rate" in proc.stderr and "Traceback" not in proc.stderr
