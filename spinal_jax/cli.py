"""The ``spinal-jax`` command line.

This file is intentionally kept short: it parses arguments and calls the library
(``spinal_jax.train``, ``spinal_jax.data``, ``spinal_jax.report``), where the logic lives.

    spinal-jax demo [--workdir DIR]
    spinal-jax train --config NAME [--config.KEY=VALUE ...] --workdir DIR
    spinal-jax grid NAME... [--seeds N] [--jobs N] [--config.KEY=VALUE ...] --workdir DIR
    spinal-jax report DIR [--json PATH]
    spinal-jax prepare NAME [--data-dir DIR]
    spinal-jax show-augmentations NAME --out FILE.png

``train`` and ``grid`` also take ``--deterministic`` (bitwise-reproducible runs on the GPU: XLA's
deterministic operations, ~2% slower on an H100; the CPU is deterministic anyway), ``--fsdp`` and, for a
job over several hosts, ``--coordinator-address HOST:PORT --num-processes N --process-id I`` (or
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``, or a cluster JAX detects, e.g.
Slurm); every host runs the same command.

``train`` uses ``--workdir`` itself as the run directory; ``grid`` and ``demo`` put each run in
``<workdir>/<config>/<head>/seed<k>``. Running the same command again resumes unfinished runs and
skips finished ones (``summary.json`` present). Exit codes: 0 done, 2 bad arguments or config
(message on stderr, nothing computed), 1 the run failed (e.g. a NaN loss).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

EXIT_USAGE = 2
EXIT_FAILED = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: exit 2, no traceback
        self.print_usage(sys.stderr)
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def _config_overrides(extra: Sequence[str]) -> list[str]:
    """The ``--config.KEY=VALUE`` arguments (``--config.KEY VALUE`` is accepted too)."""
    overrides, i = [], 0
    extra = list(extra)
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--config."):
            raise _UsageError(f"unrecognized argument {arg!r}; config values are set with --config.KEY=VALUE")
        if "=" not in arg:
            if i + 1 >= len(extra):
                raise _UsageError(f"{arg} needs a value: {arg}=VALUE")
            arg = f"{arg}={extra[i + 1]}"
            i += 1
        overrides.append(arg)
        i += 1
    return overrides


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spinal-jax`` (subcommands demo, train, grid, report, prepare, show-augmentations)."""
    parser = _Parser(prog="spinal-jax", description="SpinalNet in JAX/Flax: train, reproduce, report.")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="digits_mlp with both heads (offline, seconds on a CPU)")
    p.add_argument("--workdir", default=os.path.join("runs", "demo"), help="default: ./runs/demo")

    p = sub.add_parser("train", help="one run of a config (extra --config.KEY=VALUE overrides)")
    p.add_argument("--config", required=True, help="config name (experiments/configs/NAME.py) or a .py path")
    p.add_argument("--workdir", required=True, help="the run directory (resumed if it holds an unfinished run)")
    p.add_argument("--num-devices", type=int, default=None, help="devices of the data mesh (default: all)")
    _add_checkpoint_flag(p)
    _add_deterministic_flag(p)
    _add_scale_out_flags(p)

    p = sub.add_parser("grid", help="configs x both heads x seeds (finished runs skipped)")
    p.add_argument("names", nargs="+", help="config names")
    p.add_argument("--seeds", type=int, default=1, help="seeds per config and head (config seed, +1, ...)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at the same time, each in its own process on this host's devices "
        "(pays for models too small to fill a GPU; logs in <run dir>/train.log)",
    )
    p.add_argument("--workdir", required=True, help="runs go to WORKDIR/<config>/<head>/seed<k>")
    p.add_argument(
        "--multi",
        action="store_true",
        help="train runs differing only in seed/head together in one vmapped step (see train.multi); "
        "default: one by one, each run bitwise equal to `spinal-jax train`",
    )
    _add_checkpoint_flag(p)
    _add_deterministic_flag(p)
    _add_scale_out_flags(p)

    p = sub.add_parser("report", help="Markdown table and plots of the runs under a directory")
    p.add_argument("workdir")
    p.add_argument("--json", default=None, help="also write the rows as JSON to this path")

    p = sub.add_parser("prepare", help="download/prepare a dataset (TFDS or folders)")
    p.add_argument("name")
    p.add_argument("--data-dir", default=None)

    p = sub.add_parser("show-augmentations", help="a PNG grid of a dataset's training augmentation")
    p.add_argument("name", help="dataset name")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--spec", default=None, help="augmentation spec (default: the original's for NAME)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    return parser


def _checkpoint_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds >= 0 (0 saves after every epoch)")
    return value


def _add_checkpoint_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint-every",
        type=_checkpoint_seconds,
        default=0.0,
        metavar="SECONDS",
        help="save a checkpoint after an epoch only when the last one is at least this old (the last epoch "
        "is always saved; a resumed run replays the same numbers and loses at most this much training); "
        "default 0: after every epoch",
    )


def _add_deterministic_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="bitwise-reproducible runs on the GPU (XLA_FLAGS gets --xla_gpu_deterministic_ops=true; ~2%% slower "
        "on an H100); the CPU is deterministic without it",
    )


def _add_scale_out_flags(p: argparse.ArgumentParser) -> None:
    """Several hosts (``jax.distributed``) and FSDP; see ``spinal_jax.parallel.initialize_distributed``."""
    g = p.add_argument_group("several hosts (default: $JAX_COORDINATOR_ADDRESS etc., or a detected cluster)")
    g.add_argument("--coordinator-address", default=None, help="HOST:PORT of process 0, the same on every host")
    g.add_argument("--num-processes", type=int, default=None, help="number of processes (hosts) of the job")
    g.add_argument("--process-id", type=int, default=None, help="this process's index, 0 .. num-processes - 1")
    p.add_argument("--fsdp", action="store_true", help="shard parameters and optimizer state too (--config.fsdp=true)")


def _scale_out(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """Join the multi-host job (before anything touches a device); the overrides with ``--fsdp`` added."""
    from spinal_jax import parallel

    parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    return _with_fsdp(args, overrides)


def _with_fsdp(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    return [*overrides, "--config.fsdp=true"] if args.fsdp else overrides


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    for noisy in ("absl", "jax", "orbax", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _train(args: argparse.Namespace, overrides: list[str]) -> int:
    overrides = _scale_out(args, overrides)
    from spinal_jax import parallel
    from spinal_jax.train import apply_overrides, grid, load_config, loop

    config = apply_overrides(load_config(args.config), overrides).validate()
    mesh = parallel.make_mesh(args.num_devices) if args.num_devices is not None else None
    summary = loop.train_and_evaluate(
        config,
        args.workdir,
        progress=None if not args.quiet else False,
        mesh=mesh,
        min_checkpoint_interval=args.checkpoint_every,
    )
    print(grid.format_table([summary]))
    return 0


def _grid(args: argparse.Namespace, overrides: list[str]) -> int:
    from spinal_jax.train import grid

    if args.jobs != 1:
        if args.multi:
            raise ValueError("--jobs and --multi cannot be combined: choose processes (--jobs) or one vmapped step")
        if args.coordinator_address or args.num_processes not in (None, 1) or os.environ.get("JAX_COORDINATOR_ADDRESS"):
            raise ValueError("--jobs runs on one host; for a job over several hosts leave it at 1")
        # The runs train in processes of their own: this one loads no trainer and joins no multi-host job.
        overrides = _with_fsdp(args, overrides)
    else:
        overrides = _scale_out(args, overrides)
    configs = grid.grid_configs(args.names, seeds=args.seeds, overrides=overrides)
    progress = None if not args.quiet else False
    if args.jobs != 1:
        from spinal_jax.train import jobs

        summaries = jobs.run_grid_jobs(configs, args.workdir, args.jobs, checkpoint_every=args.checkpoint_every)
    elif args.multi:
        from spinal_jax.train import multi

        summaries = multi.run_grid_multi(
            configs, args.workdir, progress=progress, min_checkpoint_interval=args.checkpoint_every
        )
    else:
        from spinal_jax.train import loop

        summaries = loop.run_grid(configs, args.workdir, progress=progress, min_checkpoint_interval=args.checkpoint_every)
    print(grid.format_table(summaries))
    return 0


def _demo(args: argparse.Namespace, overrides: list[str]) -> int:
    from spinal_jax.train import grid, loop

    summaries = loop.run_demo(args.workdir, progress=None if not args.quiet else False, overrides=overrides)
    print(grid.format_table(summaries))
    for s in summaries:
        print(f"{s['head']:>8}: {os.path.join(grid.run_dir_for(args.workdir, _config_of(s)), 'summary.json')}")
    return 0


def _config_of(summary: dict) -> object:
    from spinal_jax.train import Config

    return Config.from_dict(summary["config"])


def _report(args: argparse.Namespace) -> int:
    from spinal_jax import report

    text = report.report(args.workdir, json_path=args.json)
    if isinstance(text, str):
        print(text)
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from spinal_jax import data

    result = data.prepare(args.name, data_dir=args.data_dir)
    if result is not None:
        print(result)
    return 0


def _show_augmentations(args: argparse.Namespace) -> int:
    from spinal_jax.data import augment

    print(augment.show_augmentations(args.name, args.out, spec=args.spec, seed=args.seed, data_dir=args.data_dir))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spinal-jax`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        overrides = _config_overrides(extra) if args.command in ("train", "grid", "demo") else []
        if extra and not overrides:
            raise _UsageError(f"unrecognized arguments: {' '.join(extra)}")
    except _UsageError as err:
        print(f"spinal-jax: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    _setup_logging(args.quiet)
    if getattr(args, "deterministic", False):  # before any backend starts; grid --jobs's runs inherit it
        from spinal_jax.train.determinism import enable_deterministic_gpu_ops

        try:
            enable_deterministic_gpu_ops()
        except (ValueError, RuntimeError) as err:
            print(f"spinal-jax: error: {err}", file=sys.stderr)
            return EXIT_USAGE
    if args.command in ("demo", "train") or (args.command == "grid" and args.jobs == 1):  # compiles here
        from spinal_jax.train.loop import enable_compilation_cache

        enable_compilation_cache()

    from spinal_jax.train.errors import RunConfigMismatch, TrainingDiverged
    from spinal_jax.train.jobs import GridJobsFailed

    commands = {
        "demo": lambda: _demo(args, overrides),
        "train": lambda: _train(args, overrides),
        "grid": lambda: _grid(args, overrides),
        "report": lambda: _report(args),
        "prepare": lambda: _prepare(args),
        "show-augmentations": lambda: _show_augmentations(args),
    }
    try:
        return commands[args.command]()
    except (TrainingDiverged, GridJobsFailed) as err:
        print(f"spinal-jax: run failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, RunConfigMismatch, FileNotFoundError) as err:
        # Bad config values, unknown overrides/names, missing data: reported before any compute.
        if os.environ.get("SPINAL_JAX_DEBUG"):
            raise
        print(f"spinal-jax: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("spinal-jax: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
