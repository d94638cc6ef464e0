"""Where a run's time goes before its first steady epoch: set-up, compilation, first epoch.

Each variant runs ``spinal-jax train`` (``loop.train_and_evaluate``) of one config for a few epochs in
a fresh process with an empty compilation cache of its own (a fresh machine's first run), and reads
the phases back from the run's ``summary.json`` and ``metrics.jsonl``:

- ``setup_seconds``: data onto the device, model and train state built (``_Run``), checkpoints looked up,
  while the training chunks and the evaluation compile in the background (``_Run._compile_ahead``);
- ``compile_seconds``: the wait for that compilation after set-up (``_Run.wait_compiled``);
- ``first_epoch_seconds`` / ``first_eval_seconds``: the first epoch's training and evaluation (with
  whatever compilation is left to them);
- ``seconds_per_epoch``: the later epochs; ``process_seconds``: the whole child process, imports included.

Variants put back the old start-up, one piece each:

- ``lib``: the library as it is (the train state made by one jitted program, its Threefry draws as
  one GPU kernel each; the training chunks, the epoch's permutation and the evaluation compiled in
  background threads from the shapes of the state and the data, before the data go to the device);
- ``eagerinit``: the train state made op by op (each operation compiled on its own, as before);
- ``noahead``: no compilation ahead (the training chunk compiles in the first epoch, the evaluation
  after it);
- ``unrolledinit``: the initialisation's Threefry draws compiled as XLA's unrolled rounds instead of
  jax's one GPU kernel (``state._threefry_kernel``);
- ``eagerinit+noahead``: both, the start-up of the library before this benchmark.

The library of an earlier commit is measured by running this script with that checkout as the
working directory (its ``spinal_jax`` comes first on the children's path).

    PYTHONPATH=. python experiments/bench_startup.py --variants lib,eagerinit+noahead --repeats 2 \\
        --out experiments/results/startup_benchmark.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

VARIANTS = ("lib", "eagerinit", "noahead", "unrolledinit", "eagerinit+noahead")
_MODIFIERS = {"eagerinit", "noahead", "unrolledinit"}


def _child(variant: str, workdir: str, config_name: str, overrides: list[str]) -> None:
    """Train in this process with ``variant``'s start-up; the parent reads the run directory."""
    import check_train_epoch  # noqa: F401  (registers spinal_jax.configs in a bare checkout)

    from spinal_jax.train import apply_overrides, load_config, loop, state

    modifiers = set(variant.split("+")) - {"lib"}
    if "eagerinit" in modifiers:
        state._initial_arrays = state._initial_arrays.__wrapped__  # op by op, un-jitted
    if "noahead" in modifiers:
        loop._Run._compile_ahead = lambda self, state: []
    if "unrolledinit" in modifiers:
        state._threefry_kernel = contextlib.nullcontext  # the hash as XLA's unrolled rounds
    loop.enable_compilation_cache(os.path.join(workdir, "xla_cache"))
    config = apply_overrides(load_config(config_name), overrides).validate()
    loop.train_and_evaluate(config, os.path.join(workdir, "run"), progress=False)
    import jax

    device = jax.devices()[0]
    machine = {"device": getattr(device, "device_kind", device.platform), "platform": device.platform,
               "host": platform.node(), "jax": jax.__version__, "python": platform.python_version()}
    with open(os.path.join(workdir, "machine.json"), "w") as f:
        json.dump(machine, f)


def _run_variant(variant: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as workdir:
        cmd = [sys.executable, __file__, "--child", variant, "--workdir", workdir, "--config", args.config,
               *[f"--override={o}" for o in args.override]]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        process_seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"variant {variant} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        run_dir = os.path.join(workdir, "run")
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            history = [json.loads(line) for line in f if line.strip()]
        with open(os.path.join(workdir, "machine.json")) as f:
            machine = json.load(f)
    return {
        "variant": variant,
        "config": args.config,
        "overrides": args.override,
        "setup_seconds": summary["setup_seconds"],
        "compile_seconds": summary.get("compile_seconds", 0.0),
        "first_epoch_seconds": history[0]["seconds"],
        "first_eval_seconds": history[0]["eval_seconds"],
        "seconds_per_epoch": summary["seconds_per_epoch"],
        "run_wall_seconds": summary["wall_seconds"],
        "process_seconds": process_seconds,
        "before_first_steady_epoch": summary["setup_seconds"] + summary.get("compile_seconds", 0.0)
        + history[0]["seconds"] + history[0]["eval_seconds"],
        **machine,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def render(rows: list[dict]) -> str:
    """A Markdown table of the rows (seconds), one line per process, in the order measured."""
    machines = sorted({f"{r['device']} (jax {r['jax']}, python {r['python']})" for r in rows})
    lines = [
        "# Start-up of a run: set-up, compilation, first epoch (`experiments/bench_startup.py`)",
        "",
        f"- Machine: {'; '.join(machines)}. Dates: {rows[0]['date']} to {rows[-1]['date']}.",
        "- Each row is one `spinal-jax train` process with an empty compilation cache of its own; config and",
        "  overrides as listed (protocol=paper, epochs=3 in all). Before the first steady epoch = set-up + compile",
        "  wait + first epoch + its evaluation. Process = the child process from start to exit, imports included.",
        "- Command: `PYTHONPATH=. python experiments/bench_startup.py --config fashion_mnist_vgg5 --variants V1,V2 "
        "--tag TAG --out startup_benchmark.jsonl` (one process per variant, in turn); the `pair` rows ran two such "
        "commands at once under NVIDIA MPS with `--override head=default` / `--override head=spinal`. Table: "
        "`--markdown startup_benchmark.md`.",
        "",
        "| tag | variant | config | set-up | compile wait | first epoch | first eval | before first steady epoch "
        "| steady epoch | process | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        config = " ".join([r["config"], *[o for o in r["overrides"] if not o.startswith(("protocol=", "epochs="))]])
        lines.append(
            f"| {r['tag']} | {r['variant']} | {config} | {r['setup_seconds']:.1f} | {r['compile_seconds']:.1f} | "
            f"{r['first_epoch_seconds']:.2f} | {r['first_eval_seconds']:.2f} | {r['before_first_steady_epoch']:.1f} | "
            f"{r['seconds_per_epoch']:.3f} | {r['process_seconds']:.1f} | {r.get('note', '')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="lib,eagerinit+noahead")
    parser.add_argument("--config", default="fashion_mnist_vgg5")
    parser.add_argument("--override", action="append", default=None,
                        help="config override KEY=VALUE (repeatable); default: protocol=paper, epochs=3")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant, interleaved")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a variant's process may take")
    parser.add_argument("--tag", default="", help="label stored with each row (e.g. the device call)")
    parser.add_argument("--out", default="startup_benchmark.jsonl", help="JSON lines appended here")
    parser.add_argument("--markdown", help="write a table of all rows in --out to this file, and run nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.override is None:
        args.override = ["protocol=paper", "epochs=3"]
    if args.child:
        _child(args.child, args.workdir, args.config, args.override)
        return
    if args.markdown:
        with open(args.out) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        from spinal_jax.files import write_atomic

        write_atomic(args.markdown, render(rows))
        return
    variants = args.variants.split(",")
    for v in variants:
        if not set(v.split("+")) <= _MODIFIERS | {"lib"}:
            parser.error(f"--variants: {v!r} is not one of {VARIANTS}")
    # The parent never imports jax: the children get the device to themselves.
    for repeat in range(args.repeats):
        for variant in variants:
            row = {**_run_variant(variant, args), "repeat": repeat, "tag": args.tag}
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
