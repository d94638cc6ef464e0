"""Many runs in one jitted step: runs that differ only in seed and head train together.

The original trains both heads in one loop on identical batches; here a *group* of runs (one config,
several heads × seeds) shares every jitted call. For each head the per-seed train states are stacked
along a leading axis and ``jax.vmap``-ed; all heads' stacks advance inside the same ``lax.scan`` chunk.
On a GPU a single small run (VGG-5 at batch 100) is launch/latency-bound, so a group of 6 runs costs
little more per epoch than one run.

Equivalence with single runs (``loop.train_and_evaluate``): each run's keys are derived exactly as a
single run of its config derives them (init, data order, augmentation and dropout draws, the
learning-rate controller's RNG), so within a seed both heads see identical batches, as in the original.
A run trained in a group equals the same single run **up to floating-point rounding**: ``vmap`` turns
per-run matmuls/convolutions into batched ones, which may change the reduction order.
``tests/test_multi.py`` checks that after a few steps on CPU the grouped run's parameters match the
single run's within ``rtol=1e-4, atol=1e-5`` (float32), and that re-running a group (or killing and
resuming it) gives bitwise identical numbers.

Per-run learning rates live in each run's optimizer state (``optax.inject_hyperparams``, stacked), so
each run's own ``LRController`` sets its rate between epochs, and resets its optimizer (a new stage)
on its own. Evaluation is vmapped too.

Outputs: each run directory gets exactly what a single run writes (``config.json``, ``metrics.jsonl``,
``summary.json``, ``curves.png``, ``tensorboard/``; the summary has the same fields plus ``"trained_with": "multi"`` and
``"group_size"``). A record's ``seconds`` is the wall time of the whole group's epoch. Checkpoints are
one per group per epoch, under ``group_dir/checkpoints`` (orbax, atomic, the last
``checkpoint_keep`` kept); a group killed at any moment and run again resumes and ends with the same
numbers (CPU, bitwise). The group runs on one device.

Not grouped (``compatible_key`` returns None; ``run_grid_multi`` trains them one by one): streamed
datasets, ``init_checkpoint``, ``fsdp``, multi-stage runs that restart from the best epoch,
multi-process runs. ``spinal-jax grid --multi`` uses ``run_grid_multi``.

Speed: on one H100 the vmapped group of the VGG-5 (both heads × 3 seeds, batch 100) took 6.6 s per
epoch, the same as six single runs one after another (1.1 s each): vmapping over seeds turns each
convolution into a grouped one and saves nothing there, so grouping is opt-in, not the default.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spinal_jax import parallel
from spinal_jax.train import loop, schedules, steps
from spinal_jax.train import metrics as metrics_io
from spinal_jax.train.checkpoint import Checkpointer
from spinal_jax.train.config import Config, config_json
from spinal_jax.train.state import TrainState, create_train_state

log = logging.getLogger(__name__)

GROUP_FILE = "group.json"
# Config fields that may differ within a group; everything else must be equal.
_FREE_FIELDS = ("seed", "head")


def compatible_key(config: Config) -> str | None:
    """The grouping key of ``config`` (runs with equal keys can train together), or None if it cannot
    be grouped (streamed data, ``init_checkpoint``, stage restarts from the best epoch, several processes)."""
    if jax.process_count() > 1 or config.init_checkpoint or getattr(config, "fsdp", False):
        return None
    if config.stage_start_from_best and len(config.stage_plan()) > 1:
        return None
    if loop._is_streamed(config):
        return None
    d = config.to_dict()
    for k in _FREE_FIELDS:
        d.pop(k, None)
    return json.dumps(d, sort_keys=True)


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _index(tree: Any, i: int) -> Any:
    return jax.tree.map(lambda x: x[i], tree)


def _set_index(tree: Any, i: int, sub: Any) -> Any:
    return jax.tree.map(lambda x, y: x.at[i].set(jnp.asarray(y, x.dtype)), tree, sub)


def _group_train_chunk(
    states: tuple[TrainState, ...],
    images: jax.Array,
    labels: jax.Array,
    indices: jax.Array,
    *,
    loss: str,
    transforms: tuple[Any, ...],
) -> tuple[tuple[TrainState, ...], tuple[dict[str, jax.Array], ...]]:
    """``indices.shape[1]`` steps of every run: ``states[h]`` is head ``h``'s stack over seeds;
    ``images``/``labels`` are ``(seeds, N, ...)``, ``indices`` ``(seeds, steps, batch)``."""

    def one(state: TrainState, x: jax.Array, y: jax.Array, idx: jax.Array, transform: Any) -> Any:
        batch = {"image": jnp.take(x, idx, axis=0), "label": jnp.take(y, idx, axis=0)}
        return steps.train_step(state, batch, loss=loss, transform=transform)

    per_head = [jax.vmap(functools.partial(one, transform=t)) for t in transforms]
    zeros = steps._zeros_like_metrics(loss)
    n_seeds = images.shape[0]

    def body(carry: Any, idx: jax.Array) -> Any:
        states, sums = carry
        new_states, new_sums = [], []
        for h, state in enumerate(states):
            state, m = per_head[h](state, images, labels, idx)
            new_states.append(state)
            new_sums.append(steps._add(sums[h], m))
        return (tuple(new_states), tuple(new_sums)), None

    init_sums = tuple(jax.tree.map(lambda z: jnp.zeros((n_seeds,), z.dtype), zeros) for _ in states)
    (states, sums), _ = jax.lax.scan(body, (states, init_sums), jnp.swapaxes(indices, 0, 1))
    return states, sums


def _group_evaluate(
    states: tuple[TrainState, ...],
    x: jax.Array,
    y: jax.Array,
    mask: jax.Array,
    *,
    loss: str,
    transforms: tuple[Any, ...],
    per_seed_data: bool,
) -> tuple[dict[str, jax.Array], ...]:
    """Metric sums of every run over one split (``per_seed_data``: the split has a leading seed axis)."""
    axes = (0, 0, 0, 0) if per_seed_data else (0, None, None, None)
    return tuple(
        jax.vmap(functools.partial(steps.evaluate_arrays, loss=loss, transform=t), in_axes=axes)(s, x, y, mask)
        for s, t in zip(states, transforms, strict=True)
    )


class _Member:
    """One run of the group: its config, directory, controller and history."""

    def __init__(self, config: Config, run_dir: str, head_index: int, seed_index: int) -> None:
        self.config = config
        self.run_dir = run_dir
        self.head_index = head_index
        self.seed_index = seed_index
        self.controller = schedules.LRController(config)
        self.history: list[dict[str, Any]] = []
        self.summary_path = os.path.join(run_dir, metrics_io.SUMMARY_FILE)


def default_group_dir(configs: Sequence[Config], run_dirs: Sequence[str]) -> str:
    """``<the run dirs' common path>/_groups/<config name>-<hash>`` (hash of configs and dirs)."""
    text = json.dumps([[config_json(c), os.path.abspath(d)] for c, d in zip(configs, run_dirs, strict=True)])
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    common = os.path.commonpath([os.path.abspath(d) for d in run_dirs])  # grids: <workdir>/<name>
    return os.path.join(common, "_groups", f"{configs[0].name or configs[0].model}-{digest}")


def _check_group(configs: Sequence[Config], run_dirs: Sequence[str]) -> None:
    if not configs:
        raise ValueError("train_many: no configs given")
    if len(configs) != len(run_dirs):
        raise ValueError(f"train_many: {len(configs)} configs but {len(run_dirs)} run_dirs; give one dir per config")
    if len({os.path.abspath(d) for d in run_dirs}) != len(run_dirs):
        raise ValueError("train_many: run_dirs must be distinct")
    keys = [compatible_key(c) for c in configs]
    if keys[0] is None:
        raise ValueError(
            f"train_many: config {configs[0].name!r} cannot train in a group (streamed data, init_checkpoint, "
            "stage_start_from_best or several processes); use loop.train_and_evaluate"
        )
    for c, k in zip(configs, keys, strict=True):
        if k != keys[0]:
            a, b = configs[0].to_dict(), c.to_dict()
            diff = sorted(f for f in a if a[f] != b.get(f) and f not in _FREE_FIELDS)
            raise ValueError(f"train_many: configs differ in {diff or 'their grouping key'}; only seed and head may differ")
    pairs = [(c.head, c.seed) for c in configs]
    if len(set(pairs)) != len(pairs):
        raise ValueError("train_many: two configs share a (head, seed); each run must be distinct")


def train_many(
    configs: Sequence[Config],
    run_dirs: Sequence[str | os.PathLike],
    *,
    group_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
    async_checkpoints: bool = True,
    min_checkpoint_interval: float = 0.0,
    epoch_callback: Callable[[int, list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``configs`` (equal but for seed and head) together; ``run_dirs[i]`` gets run ``i``'s outputs.

    Returns the summaries in the order of ``configs``. If every run is finished (``summary.json``),
    nothing is trained. Unfinished runs train as one group whose checkpoints live in ``group_dir``
    (default: ``default_group_dir``); running the same call again resumes it. A run directory that
    holds another config raises ``loop.RunConfigMismatch``; a NaN/inf loss of any run raises
    ``loop.TrainingDiverged`` (the group's last good checkpoint stays).
    ``epoch_callback(epoch, records)`` gets the records of all runs after each epoch.
    """
    run_dirs = [os.path.abspath(os.fspath(d)) for d in run_dirs]
    configs = list(configs)
    _check_group(configs, run_dirs)
    for config in configs:
        config.validate()
    for config, run_dir in zip(configs, run_dirs, strict=True):
        config_path = os.path.join(run_dir, metrics_io.CONFIG_FILE)
        if os.path.isfile(config_path):
            saved = metrics_io.read_json(config_path)
            if config_json(Config.from_dict(saved)) != config_json(config):
                raise loop.RunConfigMismatch(
                    f"{run_dir} holds a run of a different config ({config_path}); use another --workdir "
                    "or delete that directory"
                )
    done = [os.path.isfile(os.path.join(d, metrics_io.SUMMARY_FILE)) for d in run_dirs]
    if all(done):
        return [metrics_io.read_json(os.path.join(d, metrics_io.SUMMARY_FILE)) for d in run_dirs]
    if any(done):
        # Finished runs keep their summaries; the others train as a (smaller) group of their own.
        todo = [i for i, f in enumerate(done) if not f]
        trained = train_many(
            [configs[i] for i in todo],
            [run_dirs[i] for i in todo],
            progress=progress,
            async_checkpoints=async_checkpoints,
            min_checkpoint_interval=min_checkpoint_interval,
            epoch_callback=epoch_callback,
        )
        by_index = dict(zip(todo, trained, strict=True))
        return [
            by_index[i] if i in by_index else metrics_io.read_json(os.path.join(run_dirs[i], metrics_io.SUMMARY_FILE))
            for i in range(len(configs))
        ]
    heads = list(dict.fromkeys(c.head for c in configs))
    seeds = {c.seed for c in configs}
    if len(heads) > 1 and any({c.seed for c in configs if c.head == h} != seeds for h in heads):
        # Not a full head x seed grid: one group per head (each one is).
        summaries: dict[int, dict[str, Any]] = {}
        for head in heads:
            todo = [i for i, c in enumerate(configs) if c.head == head]
            trained = train_many(
                [configs[i] for i in todo],
                [run_dirs[i] for i in todo],
                progress=progress,
                async_checkpoints=async_checkpoints,
                min_checkpoint_interval=min_checkpoint_interval,
                epoch_callback=epoch_callback,
            )
            summaries.update(zip(todo, trained, strict=True))
        return [summaries[i] for i in range(len(configs))]
    group_dir = os.path.abspath(os.fspath(group_dir)) if group_dir is not None else default_group_dir(configs, run_dirs)
    if progress is None:
        progress = sys.stderr.isatty()
    entered = time.perf_counter()
    group = _Group(configs, run_dirs, group_dir, progress)
    return group.train(async_checkpoints, min_checkpoint_interval, epoch_callback, entered)


class _Group:
    """The data, states and jitted functions of one group."""

    def __init__(self, configs: list[Config], run_dirs: list[str], group_dir: str, progress: bool) -> None:
        self.configs = configs
        self.group_dir = group_dir
        self.progress = progress
        first = configs[0]
        self.config = first
        self.heads = list(dict.fromkeys(c.head for c in configs))
        self.seeds = sorted({c.seed for c in configs})
        self.members: list[_Member] = []
        by_pair = {(c.head, c.seed): i for i, c in enumerate(configs)}
        for head in self.heads:
            for seed in self.seeds:
                if (head, seed) not in by_pair:
                    raise ValueError(
                        f"train_many: a group needs every head x seed; ({head!r}, seed {seed}) is missing "
                        f"(heads {self.heads}, seeds {self.seeds})"
                    )
        for i, c in enumerate(configs):
            self.members.append(_Member(c, run_dirs[i], self.heads.index(c.head), self.seeds.index(c.seed)))
        self.mesh = parallel.make_mesh(1)
        self.batch_size = first.batch_size
        self._setup_data()
        input_dtype = jnp.bfloat16 if first.precision == "bf16" else jnp.float32
        train_transform = loop._build_transform(first.train_augment, input_dtype)
        eval_transform = loop._build_transform(first.eval_preprocess, input_dtype)
        self.shuffle_keys = [jax.random.fold_in(jax.random.PRNGKey(seed), loop._SHUFFLE_KEY) for seed in self.seeds]
        # One model/optimizer per head; the per-seed states stacked.
        self.txs, states = [], []
        for head in self.heads:
            config = next(c for c in configs if c.head == head)
            model = loop._build_model(config, self.num_classes)
            tx = schedules.make_optimizer(config)
            per_seed = []
            for s, seed in enumerate(self.seeds):
                example = jnp.asarray(self.examples[s])
                example = (
                    eval_transform(jax.random.PRNGKey(0), example)
                    if eval_transform is not None
                    else example.astype(jnp.float32)
                )
                root = jax.random.PRNGKey(seed)
                per_seed.append(
                    create_train_state(
                        model, tx, example, jax.random.fold_in(root, loop._INIT_KEY), jax.random.fold_in(root, loop._TRAIN_KEY)
                    )
                )
            self.txs.append(tx)
            states.append(_stack(per_seed))
        self.device = self.mesh.devices.flat[0]
        self.initial_states = jax.device_put(tuple(states), self.device)
        loss = first.loss
        train_transforms = (train_transform,) * len(self.heads)
        eval_transforms = (eval_transform,) * len(self.heads)
        self.train_chunk = jax.jit(
            functools.partial(_group_train_chunk, loss=loss, transforms=train_transforms), donate_argnums=(0,)
        )
        self.eval_shared = jax.jit(
            functools.partial(_group_evaluate, loss=loss, transforms=eval_transforms, per_seed_data=False)
        )
        self.eval_per_seed = jax.jit(
            functools.partial(_group_evaluate, loss=loss, transforms=eval_transforms, per_seed_data=True)
        )
        self.permutation = jax.jit(steps.epoch_permutation, static_argnums=(2,))

    def _setup_data(self) -> None:
        trains, vals, self.examples = [], [], []
        test = None
        for seed in self.seeds:
            config = self.configs[0].replace(seed=seed)
            train, val, test_s, num_classes = loop.load_splits(config)
            if test is None:
                test, self.num_classes = test_s, num_classes
            trains.append(train)
            vals.append(val)
            self.examples.append(train.x[:1])
        sizes = {len(t) for t in trains}
        if len(sizes) != 1:
            raise ValueError(f"train_many: the seeds' train splits differ in size ({sorted(sizes)}); train them singly")
        self.num_train = sizes.pop()
        config = self.configs[0]
        self.steps, self.tail, self.chunk = loop.epoch_layout(config, self.num_train, self.batch_size)
        dev = self.mesh.devices.flat[0]
        self.train_x = jax.device_put(np.stack([t.x for t in trains]), dev)
        self.train_y = jax.device_put(np.stack([t.y for t in trains]), dev)
        self.test = loop.layout_eval(test, config.eval_batch_size, self.mesh)
        self.val = None
        if vals[0] is not None:
            layouts = [loop.layout_eval(v, config.eval_batch_size, self.mesh) for v in vals]
            if len({lay.x.shape for lay in layouts}) != 1:
                raise ValueError("train_many: the seeds' validation splits differ in size; train them singly")
            self.val = loop.EvalArrays(
                x=jnp.stack([lay.x for lay in layouts]),
                y=jnp.stack([lay.y for lay in layouts]),
                mask=jnp.stack([lay.mask for lay in layouts]),
                count=layouts[0].count,
            )

    # -- one epoch ------------------------------------------------------------------------------
    def _train_epoch(self, states: tuple[TrainState, ...], epoch: int) -> tuple[Any, list[list[dict[str, float]]], float, int]:
        from tqdm.auto import tqdm

        total = self.steps + (1 if self.tail else 0)
        bar = tqdm(total=total, desc=f"epoch {epoch + 1}/{self.config.epochs} (group of {len(self.members)})",
                   unit="step", disable=not self.progress, leave=False, dynamic_ncols=True)
        start = time.perf_counter()
        perms = jnp.stack([self.permutation(k, epoch, self.num_train) for k in self.shuffle_keys])
        body = perms[:, : self.steps * self.batch_size].reshape(len(self.seeds), self.steps, self.batch_size)
        pending: list[tuple[int, Any]] = []
        sums: list[Any] = []
        done = 0

        def collect(n_steps: int, chunk_sums: Any) -> None:
            nonlocal done
            host = jax.device_get(chunk_sums)
            for m in self.members:
                loss = float(host[m.head_index]["loss"][m.seed_index])
                if not math.isfinite(loss):
                    bar.close()
                    raise loop.TrainingDiverged(
                        f"epoch {epoch + 1}: the training loss of {m.run_dir} became {loss} (within steps "
                        f"{done + 1}-{done + n_steps}); the group stopped, its last good checkpoint in "
                        f"{os.path.join(self.group_dir, 'checkpoints')} is kept. Lower the learning rate or "
                        "train without --multi."
                    )
            done += n_steps
            sums.append(host)
            bar.update(n_steps)

        def dispatch(n_steps: int, chunk_sums: Any) -> None:
            pending.append((n_steps, chunk_sums))
            if len(pending) > 1:
                collect(*pending.pop(0))

        for first in range(0, self.steps, self.chunk):
            idx = body[:, first : first + self.chunk]
            states, chunk_sums = self.train_chunk(states, self.train_x, self.train_y, idx)
            dispatch(idx.shape[1], chunk_sums)
        if self.tail:
            idx = perms[:, self.steps * self.batch_size :][:, None, :]
            states, tail_sums = self.train_chunk(states, self.train_x, self.train_y, idx)
            dispatch(1, tail_sums)
        for item in pending:
            collect(*item)
        jax.block_until_ready(states)
        seconds = time.perf_counter() - start
        bar.close()
        # Per run: add the chunks' sums in order (as the single path does, in float64 on the host).
        per_run: list[list[dict[str, float]]] = [[{} for _ in self.seeds] for _ in self.heads]
        for h in range(len(self.heads)):
            for s in range(len(self.seeds)):
                acc: dict[str, float] = {}
                for host in sums:
                    for k, v in host[h].items():
                        acc[k] = acc.get(k, 0.0) + float(v[s])
                per_run[h][s] = steps.summarize(acc)
        return states, per_run, seconds, done

    def _evaluate(self, states: tuple[TrainState, ...], arrays: loop.EvalArrays, per_seed: bool) -> list[list[dict[str, float]]]:
        fn = self.eval_per_seed if per_seed else self.eval_shared
        host = jax.device_get(fn(states, arrays.x, arrays.y, arrays.mask))
        return [
            [steps.summarize({k: v[s] for k, v in host[h].items()}) for s in range(len(self.seeds))]
            for h in range(len(self.heads))
        ]

    # -- the run --------------------------------------------------------------------------------
    def train(
        self,
        async_checkpoints: bool,
        min_checkpoint_interval: float,
        epoch_callback: Callable[[int, list[dict[str, Any]]], None] | None,
        entered: float,
    ) -> list[dict[str, Any]]:
        """Train the group; ``entered`` (``time.perf_counter()``) is when its set-up began."""
        config = self.config
        os.makedirs(self.group_dir, exist_ok=True)
        metrics_io.write_json(
            os.path.join(self.group_dir, GROUP_FILE),
            {"runs": [m.run_dir for m in self.members], "heads": self.heads, "seeds": self.seeds,
             "config": config.to_dict()},
        )
        for m in self.members:
            metrics_io.write_json(os.path.join(m.run_dir, metrics_io.CONFIG_FILE), m.config.to_dict())
        checkpointer = Checkpointer(
            os.path.join(self.group_dir, "checkpoints"), keep=config.checkpoint_keep, async_save=async_checkpoints
        )
        boards = [
            metrics_io.TensorBoardWriter(os.path.join(m.run_dir, "tensorboard"), enabled=config.tensorboard)
            for m in self.members
        ]
        try:
            states = self.initial_states
            start_epoch = 0
            restored = checkpointer.restore_latest(self._tree(states))
            if restored is not None:
                tree, host = restored
                states = tuple(tree[h] for h in self.heads)
                start_epoch = host["epoch"]
                saved = {r["run_dir"]: r for r in host["runs"]}
                for m in self.members:
                    m.history = list(saved[m.run_dir]["history"])[:start_epoch]
                    m.controller.load_state_dict(saved[m.run_dir]["controller"])
                log.info("resuming group %s after epoch %d", self.group_dir, start_epoch)
            states = jax.device_put(states, self.device)
            selection = loop._selection(config)
            clock = loop._RunClock(entered, min_checkpoint_interval)
            for epoch in range(start_epoch, config.epochs):
                lrs = [[float(x) for x in np.asarray(s.opt_state.hyperparams["learning_rate"])] for s in states]
                states, train_m, seconds, n_steps = self._train_epoch(states, epoch)
                eval_start = time.perf_counter()
                test_m = self._evaluate(states, self.test, per_seed=False)
                val_m = self._evaluate(states, self.val, per_seed=True) if self.val is not None else None
                eval_seconds = time.perf_counter() - eval_start
                records = []
                for m in self.members:
                    h, s = m.head_index, m.seed_index
                    record: dict[str, Any] = {
                        "epoch": epoch,
                        "train_loss": train_m[h][s]["loss"],
                        "train_accuracy": train_m[h][s].get("accuracy"),
                        "test_loss": test_m[h][s]["loss"],
                        "test_accuracy": test_m[h][s].get("accuracy"),
                    }
                    if val_m is not None:
                        record.update(val_loss=val_m[h][s]["loss"], val_accuracy=val_m[h][s].get("accuracy"))
                    record.update(
                        learning_rate=lrs[h][s],
                        seconds=seconds,
                        steps_per_second=n_steps / seconds,
                        includes_compile=epoch == start_epoch,
                        eval_seconds=eval_seconds,
                    )
                    if not math.isfinite(record["test_loss"]):
                        raise loop.TrainingDiverged(
                            f"epoch {epoch + 1}: the test loss of {m.run_dir} is {record['test_loss']}; the group "
                            f"stopped, its last good checkpoint in {os.path.join(self.group_dir, 'checkpoints')} is kept"
                        )
                    records.append(record)
                new_states = list(states)
                for m, record in zip(self.members, records, strict=True):
                    m.history.append(record)
                    decision = m.controller.after_epoch(epoch, record[selection])
                    h, s = m.head_index, m.seed_index
                    state = new_states[h]
                    opt_state = state.opt_state
                    if decision.reset_optimizer:
                        fresh = self.txs[h].init(_index(state.params, s))
                        opt_state = _set_index(opt_state, s, fresh)
                    hp = dict(opt_state.hyperparams)
                    hp["learning_rate"] = hp["learning_rate"].at[s].set(decision.learning_rate)
                    new_states[h] = state.replace(opt_state=opt_state._replace(hyperparams=hp))
                states = jax.device_put(tuple(new_states), self.device)
                host = {
                    "epoch": epoch + 1,
                    "runs": [
                        {"run_dir": m.run_dir, "controller": m.controller.state_dict(), "history": m.history}
                        for m in self.members
                    ],
                }
                clock.checkpoint(epoch + 1 == config.epochs,
                                 functools.partial(checkpointer.save, epoch + 1, self._tree(states), host))
                for m, record, tb in zip(self.members, records, boards, strict=True):
                    metrics_io.write_jsonl(os.path.join(m.run_dir, metrics_io.METRICS_FILE), m.history)
                    tb.write(epoch + 1, {k: v for k, v in record.items() if k != "epoch"})
                    loop._log_epoch(m.config, record)
                if epoch_callback is not None:
                    epoch_callback(epoch, records)
            checkpointer.wait()
            timing = clock.timing()
            summaries = []
            for m in self.members:
                summary = loop.summarize_run(
                    m.config, m.history, {"trained_with": "multi", "group_size": len(self.members), **timing}
                )
                metrics_io.write_jsonl(os.path.join(m.run_dir, metrics_io.METRICS_FILE), m.history)
                try:
                    metrics_io.plot_curves(
                        m.history,
                        os.path.join(m.run_dir, metrics_io.CURVES_FILE),
                        f"{m.config.name} ({m.config.head} head)",
                    )
                except ImportError:
                    log.warning("matplotlib is not installed: no curves.png")
                metrics_io.write_json(m.summary_path, summary)  # last: its presence marks the run finished
                summaries.append(summary)
            return summaries
        finally:
            for tb in boards:
                tb.close()
            checkpointer.close()

    def _tree(self, states: tuple[TrainState, ...]) -> dict[str, Any]:
        return {h: s for h, s in zip(self.heads, states, strict=True)}


# ---------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------


def plan_groups(configs: Sequence[Config], workdir: str | os.PathLike) -> list[list[Config]]:
    """Split a grid's configs into groups that train together (in first-seen order).

    A config goes alone (a group of one, trained by ``loop.train_and_evaluate``) when it cannot be
    grouped or when its run directory already holds single-run checkpoints (it resumes as it began).
    """
    groups: dict[str, list[Config]] = {}
    order: list[list[Config]] = []
    for config in configs:
        run_dir = loop.run_dir_for(workdir, config)
        key = compatible_key(config)
        if key is None or os.path.isdir(os.path.join(run_dir, "checkpoints")):
            order.append([config])
            continue
        if key not in groups:
            groups[key] = []
            order.append(groups[key])
        groups[key].append(config)
    return order


def run_grid_multi(
    configs: Sequence[Config],
    workdir: str | os.PathLike,
    *,
    progress: bool | None = None,
    min_checkpoint_interval: float = 0.0,
) -> list[dict[str, Any]]:
    """``loop.run_grid`` with compatible runs trained together (``train_many``); same layout and outputs.

    Finished runs are skipped, unfinished ones resumed. Summaries come back in the order of ``configs``.
    """
    results: dict[int, dict[str, Any]] = {}
    index = {id(c): i for i, c in enumerate(configs)}
    for group in plan_groups(configs, workdir):
        dirs = [loop.run_dir_for(workdir, c) for c in group]
        if len(group) == 1:
            log.info("run %s", dirs[0])
            summaries = [
                loop.train_and_evaluate(
                    group[0], dirs[0], progress=progress, min_checkpoint_interval=min_checkpoint_interval
                )
            ]
        else:
            log.info("group of %d runs: %s", len(group), ", ".join(dirs))
            summaries = train_many(group, dirs, progress=progress, min_checkpoint_interval=min_checkpoint_interval)
        for c, s in zip(group, summaries, strict=True):
            results[index[id(c)]] = s
    return [results[i] for i in range(len(configs))]
