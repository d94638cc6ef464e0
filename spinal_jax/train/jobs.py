"""Grid runs as concurrent processes on one host (``spinal-jax grid --jobs N``).

Small models (the MNIST-sized grid) leave most of a large GPU idle: each step is a few hundred small
kernels. Running several seeds at once, each in its own ``spinal-jax train`` process, fills the
gaps between one run's kernels with another's (with NVIDIA MPS the kernels of different processes
also run side by side). Every run is the same as with ``spinal-jax train`` on its own: the same
config, run directory, checkpoints and resume. Each process's log goes to ``<run_dir>/train.log``;
this process prints a line when a run starts or ends and a status line (epoch, accuracy, ETA) at
a fixed interval. It loads no trainer (no orbax, optax or compiled steps), so the runs start sooner.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spinal_jax.train import metrics as metrics_io
from spinal_jax.train.config import Config
from spinal_jax.train.grid import run_dir_for

log = logging.getLogger(__name__)

LOG_FILE = "train.log"
_POLL_SECONDS = 0.1  # how often a finished run is noticed
_MEMORY_ENV = ("XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_ALLOCATOR")


class GridJobsFailed(RuntimeError):
    """One or more runs of ``run_grid_jobs`` exited with an error (their logs are named)."""


@dataclass
class _Job:
    config: Config
    run_dir: str
    process: subprocess.Popen | None = None
    started: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.config.name}/{self.config.head}/seed{self.config.seed}"


def child_environment(jobs: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of each run's process: ``base`` (default ``os.environ``) plus, unless the
    caller set any XLA memory variable, a GPU memory fraction of ``0.9 / jobs`` per process (JAX
    takes 75% of the GPU by default, which would leave nothing for the second run)."""
    env = dict(os.environ if base is None else base)
    if not any(k in env for k in _MEMORY_ENV):
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{min(0.75, 0.9 / jobs):.3f}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _progress(job: _Job) -> str:
    path = os.path.join(job.run_dir, metrics_io.METRICS_FILE)
    try:
        with open(path) as f:
            lines = [line for line in f if line.strip()]
    except FileNotFoundError:
        return f"{job.label}: starting ({time.monotonic() - job.started:.0f} s)"
    done = len(lines)
    last = json.loads(lines[-1])
    epochs = job.config.epochs
    elapsed = time.monotonic() - job.started
    eta = elapsed / done * (epochs - done) if done else float("nan")
    acc = last.get("test_accuracy")
    acc_text = f", test {100 * acc:.2f}%" if acc is not None else f", test loss {last.get('test_loss', float('nan')):.4g}"
    return f"{job.label}: epoch {done}/{epochs}{acc_text}, {last['seconds']:.2f} s/epoch, ETA {eta / 60:.1f} min"


def run_grid_jobs(
    configs: Sequence[Config],
    workdir: str | os.PathLike,
    jobs: int,
    *,
    status_every: float = 60.0,
    checkpoint_every: float = 0.0,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run ``configs`` in the grid layout with up to ``jobs`` ``spinal-jax train`` processes at once.

    Finished runs (``summary.json`` present) are skipped, unfinished ones resumed, as in
    ``loop.run_grid``. Returns the summaries in the order of ``configs``; raises ``GridJobsFailed``
    after the other runs have ended if any run failed. Interrupting (Ctrl-C / SIGTERM) stops every
    run; each resumes from its last checkpoint when the command is run again. ``checkpoint_every``
    is each run's ``spinal-jax train --checkpoint-every``.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs={jobs!r}: expected a positive int (runs trained at the same time)")
    all_jobs = [_Job(c, run_dir_for(workdir, c)) for c in configs]
    pending = [j for j in all_jobs if not os.path.isfile(os.path.join(j.run_dir, metrics_io.SUMMARY_FILE))]
    for job in all_jobs:
        if job not in pending:
            log.info("%s is finished (summary.json exists); not re-running", job.label)
    child_env = child_environment(jobs, env)
    running: list[_Job] = []
    failed: list[_Job] = []
    last_status = time.monotonic()

    def start(job: _Job) -> None:
        os.makedirs(job.run_dir, exist_ok=True)
        config_path = os.path.join(job.run_dir, metrics_io.CONFIG_FILE)
        if not os.path.isfile(config_path):
            metrics_io.write_json(config_path, job.config.to_dict())
        cmd = [python, "-m", "spinal_jax.cli", "train", "--config", config_path, "--workdir", job.run_dir,
               "--checkpoint-every", repr(float(checkpoint_every))]
        with open(os.path.join(job.run_dir, LOG_FILE), "ab") as log_file:  # the child keeps its own copy
            job.process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=child_env)
        job.started = time.monotonic()
        log.info("started %s (pid %d; log %s)", job.label, job.process.pid, os.path.join(job.run_dir, LOG_FILE))

    def stop_all(sig: int = signal.SIGTERM) -> None:
        for job in running:
            if job.process is not None and job.process.poll() is None:
                job.process.send_signal(sig)
        for job in running:
            if job.process is not None:
                job.process.wait()

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous_handler = signal.signal(signal.SIGTERM, on_sigterm) if main_thread else None
    try:
        while pending or running:
            while pending and len(running) < jobs:
                job = pending.pop(0)
                start(job)
                running.append(job)
            time.sleep(_POLL_SECONDS)
            for job in list(running):
                code = job.process.poll() if job.process is not None else None
                if code is None:
                    continue
                running.remove(job)
                minutes = (time.monotonic() - job.started) / 60
                if code == 0:
                    log.info("finished %s in %.1f min", job.label, minutes)
                else:
                    failed.append(job)
                    log.error("%s failed (exit %d) after %.1f min; see %s", job.label, code, minutes,
                              os.path.join(job.run_dir, LOG_FILE))
            if running and time.monotonic() - last_status >= status_every:
                last_status = time.monotonic()
                for job in running:
                    log.info("  %s", _progress(job))
    except KeyboardInterrupt:
        log.warning("stopping %d running run(s); run the same command again to resume", len(running))
        stop_all()
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous_handler)
    if failed:
        raise GridJobsFailed(
            f"{len(failed)} run(s) failed: "
            + "; ".join(f"{j.label} (log: {os.path.join(j.run_dir, LOG_FILE)})" for j in failed)
        )
    return [metrics_io.read_json(os.path.join(j.run_dir, metrics_io.SUMMARY_FILE)) for j in all_jobs]

