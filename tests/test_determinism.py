"""``enable_deterministic_gpu_ops`` and ``--deterministic``: the XLA flag set before the backend starts, clear errors."""

import json
import os
import subprocess
import sys

import jax
import pytest

from spinal_jax.train.determinism import DETERMINISTIC_FLAG, enable_deterministic_gpu_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_refused_once_the_backend_runs(monkeypatch):
    jax.devices()  # this process's backend has started: the flag could no longer take effect
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    with pytest.raises(RuntimeError, match="before JAX starts its backend"):
        enable_deterministic_gpu_ops()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"


def test_already_set_is_accepted_and_a_conflict_refused(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {DETERMINISTIC_FLAG}")
    assert enable_deterministic_gpu_ops() == os.environ["XLA_FLAGS"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=false")
    with pytest.raises(ValueError, match="xla_gpu_deterministic_ops"):
        enable_deterministic_gpu_ops()


def test_cli_train_deterministic_sets_the_flag_and_runs(tmp_path):
    """A fresh process: ``train --deterministic`` adds the flag before the backend starts (the CPU backend
    accepts it) and trains as usual."""
    code = (
        "import os, sys; from spinal_jax.cli import main; rc = main(sys.argv[1:]); "
        "print('XLA_FLAGS=' + os.environ.get('XLA_FLAGS', '')); sys.exit(rc)"
    )
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", code, "-q", "train", "--deterministic", "--config", "digits_mlp",
         "--config.epochs=1", "--workdir", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"XLA_FLAGS={DETERMINISTIC_FLAG}" in proc.stdout
    with open(tmp_path / "run" / "summary.json") as f:
        assert json.load(f)["epochs"] == 1
