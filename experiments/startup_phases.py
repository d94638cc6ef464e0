"""Where one run's start-up goes, phase by phase: imports, device, data, the train state, and every XLA
compilation with its thread (the background compiles of ``loop._Run._compile_ahead`` included).

Builds ``loop._Run`` for a config in this process (timing the library's set-up functions by wrapping
them), waits for the background compilation, trains ``--epochs`` epochs with their evaluations, and
appends one JSON line: ``events`` (name, start and seconds since the process began, thread). Run it with
an empty compilation cache (``SPINAL_JAX_COMPILATION_CACHE`` set to a new directory) to see a first
run's compilations.

    SPINAL_JAX_COMPILATION_CACHE=/tmp/fresh PYTHONPATH=. python experiments/startup_phases.py \\
        --config fashion_mnist_vgg5 --tag alone --out startup_phases.jsonl head=spinal
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402

EVENTS: list[dict[str, Any]] = [{"name": "import jax", "start": 0.0, "seconds": round(time.perf_counter() - _T0, 3)}]


def _event(name: str, started: float) -> None:
    EVENTS.append({
        "name": name,
        "start": round(started - _T0, 3),
        "seconds": round(time.perf_counter() - started, 3),
        "thread": threading.current_thread().name,
    })


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        out = fn(*args, **kwargs)
        _event(name, started)
        return out

    return wrapper


def _time_compilations() -> None:
    from jax._src import compiler  # every XLA compilation passes here

    compile_fn = compiler.backend_compile_and_load

    def timed(backend: Any, module: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        out = compile_fn(backend, module, *args, **kwargs)
        try:
            name = str(module.operation.attributes["sym_name"]).strip('"')
        except Exception:  # a name is only a label
            name = "?"
        _event(f"compile {name}", started)
        return out

    compiler.backend_compile_and_load = timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="config overrides KEY=VALUE (after protocol=paper, epochs=3)")
    parser.add_argument("--config", default="fashion_mnist_vgg5")
    parser.add_argument("--epochs", type=int, default=2, help="epochs trained (and evaluated) after set-up")
    parser.add_argument("--tag", default="", help="label stored with the line")
    parser.add_argument("--out", default="startup_phases.jsonl", help="the JSON line is appended here")
    args = parser.parse_args()

    _time_compilations()
    started = time.perf_counter()
    import check_train_epoch  # noqa: F401  (registers spinal_jax.configs in a bare checkout)

    from spinal_jax import parallel
    from spinal_jax.train import apply_overrides, load_config, loop

    _event("import spinal_jax.train.loop", started)
    started = time.perf_counter()
    jax.devices()
    _event("backend init (jax.devices)", started)
    for name in ("load_splits", "_put", "_place", "create_train_state"):
        setattr(loop, name, _timed(name, getattr(loop, name)))
    parallel.state_shardings = _timed("state_shardings", parallel.state_shardings)
    loop._Run._compile_ahead = _timed("_compile_ahead (submit)", loop._Run._compile_ahead)

    overrides = ["protocol=paper", "epochs=3", *args.overrides]
    config = apply_overrides(load_config(args.config), overrides).validate()
    started = time.perf_counter()
    run = loop._Run(config, "/tmp/startup_phases_run", parallel.make_mesh(), False)
    _event("_Run total", started)
    started = time.perf_counter()
    jax.block_until_ready(run.initial_state)
    _event("initial state ready", started)
    started = time.perf_counter()
    run.wait_compiled()
    _event("wait_compiled", started)
    state = run.initial_state
    for epoch in range(args.epochs):
        started = time.perf_counter()
        state, *_ = run.train_epoch(state, epoch)
        _event(f"epoch {epoch}", started)
        started = time.perf_counter()
        run.evaluate(state, run.test)
        _event(f"eval {epoch}", started)
    total = round(time.perf_counter() - _T0, 3)
    device = jax.devices()[0]
    line = {"tag": args.tag, "config": args.config, "overrides": overrides, "total": total,
            "device": getattr(device, "device_kind", device.platform), "jax": jax.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "events": EVENTS}
    with open(args.out, "a") as f:
        f.write(json.dumps(line) + "\n")
    print(args.tag, "total", total, flush=True)


if __name__ == "__main__":
    main()
