"""Two real processes on localhost (``jax.distributed``, CPU, gloo) train together like one process.

The test starts this file twice as a script (``python tests/test_distributed.py OUT``) with
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` set, 2 CPU devices each;
both run the toy run of tests/test_parallel.py over a 4-device global mesh, each feeding its half
of every global batch. The pytest process runs the same on a 4-device (and a 1-device) local mesh.
A second test runs ``spinal-jax train --fsdp`` as two processes (the trainer's loop, checkpoints
written together) against ``train_and_evaluate`` on a 4-device mesh here.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2
NUM_STEPS = 4
TIMEOUT_S = 150
# The processes' XLA flags: tests/conftest.py's (which compile as this process does), with their own device count
XLA_FLAGS = re.sub(r"--xla_force_host_platform_device_count=\d+",
                   f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}", os.environ["XLA_FLAGS"])


def _worker(out: str) -> None:
    """One process of the job: join it, train, write what it saw to ``out`` (.npz)."""
    import jax

    from spinal_jax import parallel

    assert parallel.initialize_distributed(initialization_timeout=60)
    from test_parallel import state_arrays, train_run

    mesh = parallel.make_mesh()
    state, losses = train_run(mesh, NUM_STEPS)
    arrays = state_arrays(state)
    info = np.asarray([jax.process_index(), jax.process_count(), jax.device_count(), jax.local_device_count()])
    tmp = out + ".tmp.npz"
    np.savez(tmp, __info__=info, __losses__=np.asarray(losses), **arrays)
    os.replace(tmp, out)
    jax.distributed.shutdown()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
    from test_parallel import assert_same_state, state_arrays, train_run

    from spinal_jax import parallel

    port = _free_port()
    procs, outs = [], []
    for pid in range(NUM_PROCESSES):
        env = dict(os.environ)
        env.update(
            JAX_PLATFORMS="cpu",
            XLA_FLAGS=XLA_FLAGS,
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES=str(NUM_PROCESSES),
            JAX_PROCESS_ID=str(pid),
            JAX_DEFAULT_MATMUL_PRECISION="highest",
        )
        out = str(tmp_path / f"proc{pid}.npz")
        outs.append(out)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), out],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = _wait(procs)
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-4000:]

    results = [dict(np.load(out)) for out in outs]
    for pid, res in enumerate(results):
        index, count, devices, local = res.pop("__info__").tolist()
        assert (index, count, devices, local) == (pid, NUM_PROCESSES, NUM_PROCESSES * DEVICES_PER_PROCESS, DEVICES_PER_PROCESS)
    losses = [res.pop("__losses__") for res in results]
    np.testing.assert_array_equal(losses[0], losses[1])
    assert_same_state(results[0], results[1], rtol=0)

    for mesh in (parallel.make_mesh(NUM_PROCESSES * DEVICES_PER_PROCESS), parallel.make_mesh(1)):
        state, ref_losses = train_run(mesh, NUM_STEPS)
        np.testing.assert_allclose(losses[0], ref_losses, rtol=1e-5)
        assert_same_state(results[0], state_arrays(state))


def test_two_processes_run_the_cli_like_one_process(tmp_path):
    """``spinal-jax train --fsdp`` over 2 processes x 2 devices (flags, not environment variables):
    the same epochs as ``train_and_evaluate`` on a 4-device mesh in this process; the checkpoint
    both processes wrote together is read back here (one process, no mesh of theirs)."""
    from test_parallel import (
        assert_same_run,
        assert_same_state,
        final_checkpoint_arrays,
        loop_config,
        run_history,
    )

    from spinal_jax import parallel
    from spinal_jax.train import apply_overrides, load_config
    from spinal_jax.train.loop import train_and_evaluate

    port = _free_port()
    run_dir = tmp_path / "run"
    overrides = ["--config.epochs=2", "--config.head=default", "--config.optimizer=sgd", "--config.learning_rate=0.05",
                 "--config.momentum=0.9", "--config.tensorboard=false", "--config.log_every_steps=11",
                 "--config.checkpoint_keep=2", "--config.model_overrides.hidden=1024",
                 "--config.model_overrides.activation=tanh"]
    assert apply_overrides(load_config("digits_mlp"), [*overrides, "--config.fsdp=true"]) == loop_config(fsdp=True)
    procs = []
    for pid in range(NUM_PROCESSES):
        env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "XLA_FLAGS"}
        env.update(
            JAX_PLATFORMS="cpu",
            XLA_FLAGS=XLA_FLAGS,
            JAX_DEFAULT_MATMUL_PRECISION="highest",
            SPINAL_JAX_COMPILATION_CACHE="0",
        )
        cmd = [sys.executable, "-m", "spinal_jax.cli", "-q", "train", "--config", "digits_mlp",
               "--workdir", str(run_dir), "--coordinator-address", f"127.0.0.1:{port}",
               "--num-processes", str(NUM_PROCESSES), "--process-id", str(pid), "--fsdp", *overrides]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = _wait(procs)
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-4000:]
    ref_dir = str(tmp_path / "reference")
    # The same computation in one process (FSDP on 4 devices): replicated vs FSDP differ a little more
    # (a ReLU pre-activation at ~0 flips one unit's gradient term); tests/test_parallel.py covers that.
    mesh = parallel.make_mesh(NUM_PROCESSES * DEVICES_PER_PROCESS)
    train_and_evaluate(loop_config(fsdp=True), ref_dir, progress=False, mesh=mesh)
    assert_same_run(run_history(str(run_dir)), run_history(ref_dir))
    assert_same_state(final_checkpoint_arrays(str(run_dir)), final_checkpoint_arrays(ref_dir))
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["1", "2"]


def _wait(procs: list[subprocess.Popen]) -> list[str]:
    """Their output once all exit; killed (and the test failed) after TIMEOUT_S."""
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the two-process job did not finish in {TIMEOUT_S} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return logs


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _worker(sys.argv[1])
