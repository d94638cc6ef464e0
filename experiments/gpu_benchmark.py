"""GPU benchmark: spinal_jax against PyTorch (eager, torch.compile, the original's CPU DataLoader) in one table.

Writes ``<out>/gpu_benchmark.json`` (``records``, the ``floor``, the environment, the ``runs``: date and
command of each run that added to the table, ``--merge`` included; each record's ``run`` is the index of the
run that measured it) and its Markdown rendering ``<out>/gpu_benchmark.md`` with the targets of issue 6 as
pass/fail rows; a target comparing records of different runs says so; and, where matplotlib is installed,
the figure ``<out>/gpu_benchmark.png`` (epoch times by contender, time-to-accuracy curves). The files are
rewritten atomically after every job, so a run that is killed keeps what it measured and names the jobs it
had not finished (``pending_jobs``, a line in the Markdown); ``--render-only`` rewrites the Markdown and the
figure of a table without running anything.

Contenders (``--impls``):

- ``spinal_jax``: the library's own training path, the code ``spinal-jax train`` runs: the model from
  ``spinal_jax.models.get``, the pipeline of the grid config (``experiments/configs``) built by
  ``spinal_jax.data.augment.build`` and run on the device, the trainer's ``StepFunctions.train_chunk``
  from ``loop.step_functions`` (a jitted ``lax.scan`` over chunks of ``log_every_steps`` steps, state
  donated, parameters raveled, the library's compiler options) on uint8 data resident on the device,
  the epoch order from ``epoch_permutation``. (Up to run 19 the benchmark built its own ``StepFunctions``
  without ``flat_params``: the chunk carried the parameter tree, so from PERF_NOTES.md's change 12 on it
  timed the trainer's path less changes 12 and 34.) One warm-up epoch (it compiles), then
  ``--jax-epochs`` whole timed epochs: nothing is extrapolated. ``augment=False`` runs the config's
  evaluation pipeline (normalise only) instead, for the augmentation-overhead target.
- ``torch_eager`` / ``torch_compile``: ``experiments/torch_models.py`` on data already on the GPU
  (uint8, normalised in the step), the original's optimizer, no augmentation (as the §7 anchors);
  bf16 is ``torch.autocast``. ``--torch-warmup`` steps, then ``--torch-steps`` timed steps in
  ``TORCH_WINDOWS`` windows, each extrapolated to the epoch: the record's epoch is their median
  (``epoch_seconds_all``, ``measured_steps`` in the record; up to 2026-12-07's run one window).
- ``torch_original_loader`` (VGG-5 only): the original script's way: torchvision transforms
  (RandomRotation(10, fill 0), RandomResizedCrop(28, scale (0.95, 1)), ToTensor, Normalize(0.5, 0.5))
  in a CPU DataLoader with no workers, fp32 eager; ``--loader-steps`` timed steps, extrapolated.

Precision: ``fp32`` allows TF32 in both frameworks (JAX's default precision on the GPU; torch
``allow_tf32`` on for matmuls and cuDNN) unless ``--no-tf32`` (then JAX ``highest`` and torch TF32 off);
``bf16`` is bf16 compute with fp32 parameters in both. Each job runs in a fresh process (clean peak
memory; a hung compile is killed at its timeout) unless ``--no-isolate``.

The floor (``--no-floor`` to skip): FLOPs per training step = 3 × the forward's FLOPs (XLA's HLO cost
analysis, 2 per multiply-add), bytes per step = the batch plus parameters, optimizer state and BN
statistics read and written once; both against the matmul rates and copy bandwidth measured in the same
run. See experiments/results/PERF_NOTES.md.

Commands::

    python experiments/gpu_benchmark.py --quick --out /tmp/x                     # CPU smoke run (~1 min)
    python experiments/gpu_benchmark.py --data-dir .data --time-to-accuracy --budget-seconds 1500 --out $OUT
        # GPU, everything: 49 jobs in 921 s on one H100 (2026-12-07)
    python experiments/gpu_benchmark.py --data-dir .data --out $OUT --models vgg5 --impls spinal_jax
    python experiments/gpu_benchmark.py ... --merge experiments/results/gpu_benchmark.json   # add to a table

``--merge`` starts from an earlier table and skips the jobs it already holds (``ok``), so the same
command repeated continues where a run stopped. ``--budget-seconds`` stops launching jobs after that
much wall time (the rest are recorded as ``skipped``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from spinal_jax.files import write_atomic

HERE = os.path.dirname(os.path.abspath(__file__))
IMPLS = ("spinal_jax", "torch_eager", "torch_compile", "torch_original_loader")
MODELS = ("vgg5", "mnist_cnn", "cifar_resnet18")
HEADS = ("default", "spinal")
PRECISIONS = ("fp32", "bf16")
# model -> (grid config whose recipe is benchmarked, dataset, image shape HWC, train examples)
MODEL_SETUP: dict[str, tuple[str, str, tuple[int, int, int], int]] = {
    "vgg5": ("fashion_mnist_vgg5", "fashion_mnist", (28, 28, 1), 60000),
    "mnist_cnn": ("mnist_cnn", "mnist", (28, 28, 1), 60000),
    "cifar_resnet18": ("cifar10_resnet18", "cifar10", (32, 32, 3), 50000),
}
ORIGINAL_BATCH = {"vgg5": 100, "mnist_cnn": 64, "cifar_resnet18": 200}
FLOOR_BATCH = 100
#: PyTorch's timed steps are split into this many windows, each extrapolated to an epoch (the record: the median)
TORCH_WINDOWS = 3
# The original script's transforms for Fashion-MNIST (ORIGINAL.md §2.2)
LOADER_MEAN, LOADER_STD = 0.5, 0.5
RESULT_PREFIX = "@@RESULT "
JSON_NAME, MD_NAME, PNG_NAME = "gpu_benchmark.json", "gpu_benchmark.md", "gpu_benchmark.png"
SCHEMA = 1

# Issue 6 targets (one H100, batch 100, the original's augmentation on the device).
TARGET_EPOCH_S = {"bf16": 0.5, "fp32": 0.9}
TARGET_SPEEDUP_VS_COMPILE = 10.0
TARGET_HEAD_OVERHEAD = 0.05
TARGET_AUG_OVERHEAD = 0.05
# ORIGINAL.md §7 anchors (SpinalVGG / VGG epoch at batch 100 on one H100), for the Markdown.
ANCHORS_S = {
    ("original script", "default"): "37.8–40.9", ("original script", "spinal"): "37.0–44.7",
    ("torch eager, data on GPU", "default"): "4.58", ("torch eager, data on GPU", "spinal"): "6.02",
    ("torch.compile", "default"): "3.96", ("torch.compile", "spinal"): "5.43",
    ("plain JAX jit, fp32 scan", "default"): "1.00", ("plain JAX jit, fp32 scan", "spinal"): "1.06",
    ("plain JAX jit, bf16 scan", "default"): "0.75", ("plain JAX jit, bf16 scan", "spinal"): "0.83",
}


def _log(msg: str) -> None:
    print(f"[gpu_benchmark {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# =================================================================================================
# Shared helpers of the jobs
# =================================================================================================


def _train_data(model: str, data_dir: str | None, n: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """``(images uint8 NHWC, labels int32, description)``: the real train split from the array cache
    under ``data_dir`` where one exists, else random uint8 of the same shape (fixed seed)."""
    _, dataset, shape, num_train = MODEL_SETUP[model]
    num = num_train if n is None else n
    note = "random uint8 (no --data-dir)"
    if data_dir:
        from spinal_jax.data import load_arrays

        try:
            x, y = load_arrays(dataset, "train", data_dir)
        except Exception as e:  # a missing cache falls back to random data, and says so
            note = f"random uint8 (no {dataset} cache under {data_dir}: {type(e).__name__})"
        else:
            if tuple(x.shape[1:]) != shape:
                raise ValueError(f"{dataset} cache under {data_dir} holds images {x.shape[1:]}, expected {shape}")
            return x[:num], y[:num].astype(np.int32), f"{dataset} train split (array cache, {min(num, len(x))} images)"
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (num, *shape), np.uint8), rng.integers(0, 10, (num,)).astype(np.int32), note


def _epoch_steps(num: int, batch: int) -> float:
    """Steps of one epoch with the last partial batch kept (the library's and torch's default)."""
    return num / batch if num % batch == 0 else float(math.ceil(num / batch))


def _base_record(job: dict[str, Any]) -> dict[str, Any]:
    keys = ("impl", "model", "head", "precision", "batch_size", "augment")
    return {k: job.get(k) for k in keys} | {"tf32": job["tf32"]}


# =================================================================================================
# spinal_jax
# =================================================================================================


def _jax_setup(tf32: bool) -> Any:
    import jax

    if not tf32:
        jax.config.update("jax_default_matmul_precision", "highest")
    return jax


def _jax_device_info(jax: Any) -> tuple[str, int | None]:
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    peak = None if not stats else stats.get("peak_bytes_in_use")
    return f"{dev.platform}:{getattr(dev, 'device_kind', '?')}", peak


def _jax_run(job: dict[str, Any], with_fns: bool = True) -> dict[str, Any]:
    """Model, pipeline, optimizer and state exactly as the training loop builds them (one device)."""
    jax = _jax_setup(job["tf32"])
    import jax.numpy as jnp

    from spinal_jax import models, parallel
    from spinal_jax.data import augment
    from spinal_jax.train import schedules
    from spinal_jax.train.config import load_config
    from spinal_jax.train.loop import step_functions
    from spinal_jax.train.state import create_train_state

    config_name = MODEL_SETUP[job["model"]][0]
    config = load_config(config_name).replace(
        head=job["head"], precision=job["precision"], batch_size=job["batch_size"]
    )
    bf16 = config.precision == "bf16"
    overrides = config.model_kwargs()
    if bf16:
        overrides.setdefault("dtype", jnp.bfloat16)
    num_classes = 10
    model = models.get(config.model, num_classes, config.head, **overrides)
    input_dtype = jnp.bfloat16 if bf16 else jnp.float32
    spec = config.train_augment if job.get("augment", True) else config.eval_preprocess
    train_tf = augment.build(spec, dtype=input_dtype) if spec else None
    eval_tf = augment.build(config.eval_preprocess, dtype=input_dtype) if config.eval_preprocess else None
    mesh = parallel.make_mesh(devices=jax.devices()[:1])
    _, _, shape, _ = MODEL_SETUP[job["model"]]
    example = jnp.zeros((1, *shape), jnp.uint8)
    example = eval_tf(jax.random.PRNGKey(0), example) if eval_tf is not None else example.astype(jnp.float32)
    root = jax.random.PRNGKey(config.seed)
    tx = schedules.make_optimizer(config)
    state = create_train_state(model, tx, example, jax.random.fold_in(root, 0), jax.random.fold_in(root, 2))
    state_sharding = parallel.state_shardings(mesh, state)
    state = jax.device_put(state, state_sharding)
    out = {"jax": jax, "config": config, "model": model, "state": state, "mesh": mesh, "spec": spec,
           "train_tf": train_tf, "eval_tf": eval_tf, "shuffle_key": jax.random.fold_in(root, 1)}
    if with_fns:  # the trainer's own (spinal-jax train): flat parameters, the library's compiler options
        out["fns"], out["tail_fns"] = step_functions(config, train_tf, eval_tf, mesh, state_sharding)
    return out


def job_spinal_jax(job: dict[str, Any]) -> dict[str, Any]:
    """Warm-up epoch (compiles), then ``job['epochs']`` whole timed epochs of the library's fast path."""
    run = _jax_run(job)
    jax, fns, tail_fns, config = run["jax"], run["fns"], run["tail_fns"], run["config"]
    import jax.numpy as jnp

    from spinal_jax import parallel
    from spinal_jax.train.loop import chunk_size

    x, y, data_note = _train_data(job["model"], job.get("data_dir"), job.get("num_examples"))
    replicated = parallel.replicated(run["mesh"])
    train_x, train_y = jax.device_put(x, replicated), jax.device_put(y, replicated)
    n, batch = len(x), job["batch_size"]
    steps, tail = divmod(n, batch)
    chunk = chunk_size(steps, config.log_every_steps)
    state = run["state"]
    timings: dict[str, float] = {}

    def epoch(state: Any, e: int, first_call: bool = False) -> tuple[Any, float]:
        perm = fns.epoch_permutation(run["shuffle_key"], e, n)
        body = perm[: steps * batch].reshape(steps, batch)
        pending, loss_sum, count = None, 0.0, 0.0
        for start in range(0, steps, chunk):
            t0 = time.perf_counter()
            state, sums = fns.train_chunk(state, train_x, train_y, body[start : start + chunk])
            if first_call and start == 0:
                jax.block_until_ready(state)
                timings["first_call"] = time.perf_counter() - t0
            if pending is not None:  # read the previous chunk's sums while this one runs (as the loop)
                host = jax.device_get(pending)
                loss_sum, count = loss_sum + float(host["loss"]), count + float(host["count"])
            pending = sums
        if tail:
            idx = perm[steps * batch :]
            tail_batch = {"image": jnp.take(train_x, idx, axis=0), "label": jnp.take(train_y, idx, axis=0)}
            state, sums = tail_fns.train_step(state, tail_batch)
            host = jax.device_get(pending)
            loss_sum, count = loss_sum + float(host["loss"]), count + float(host["count"])
            pending = sums
        host = jax.device_get(pending)
        jax.block_until_ready(state)
        return state, (loss_sum + float(host["loss"])) / max(count + float(host["count"]), 1.0)

    jax.block_until_ready(fns.epoch_permutation(run["shuffle_key"], 0, n))
    t0 = time.perf_counter()
    state, _ = epoch(state, 0, first_call=True)
    warm_epoch = time.perf_counter() - t0
    times, loss = [], float("nan")
    for e in range(1, 1 + job["epochs"]):
        t0 = time.perf_counter()
        state, loss = epoch(state, e)
        times.append(time.perf_counter() - t0)
    device, peak = _jax_device_info(jax)
    epoch_s = statistics.median(times)
    chunk_s = epoch_s * chunk / (steps + (1 if tail else 0))
    rec = _base_record(job) | {
        "epoch_seconds": epoch_s,
        "steps_per_second": (steps + (1 if tail else 0)) / epoch_s,
        "compile_seconds": max(timings["first_call"] - chunk_s, 0.0),
        "first_call_seconds": timings["first_call"],
        "warmup_epoch_seconds": warm_epoch,
        "epoch_seconds_all": times,
        "peak_memory_bytes": peak,
        "device": device,
        "measured_steps": job["epochs"] * (steps + (1 if tail else 0)),
        "steps_per_epoch": steps + (1 if tail else 0),
        "extrapolated": False,
        "chunk_steps": chunk,
        "train_loss_last_epoch": loss,
        "pipeline": run["spec"],
        "data": data_note,
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
    }
    if not math.isfinite(loss):
        rec["notes"] = "training loss not finite"
    return rec


# =================================================================================================
# The floor: measured rates, FLOPs and bytes per step
# =================================================================================================


def _median_time(fn: Callable[[], Any], block: Callable[[Any], Any], reps: int) -> float:
    block(fn())  # warm-up (compiles)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        block(fn())
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _cost(fn: Any, *args: Any) -> dict[str, float]:
    """XLA's HLO cost analysis (FLOPs, bytes accessed) of the jitted ``fn`` at ``args``, counted on the
    CPU backend: on the GPU the lowered program has no count, and the compiled one leaves out the
    convolutions (cuDNN custom calls), which are most of the FLOPs (the first GPU floors came out nan,
    then 1% of the CPU count)."""
    import jax

    cpu = jax.devices("cpu")[0]
    ca = fn.lower(*jax.device_put(args, cpu)).cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return {k: float(v) for k, v in (ca or {}).items() if k in ("flops", "bytes accessed")}


def job_floor(job: dict[str, Any]) -> dict[str, Any]:
    """Matmul rates (bf16, fp32 at the run's precision setting, fp32 'highest'), copy bandwidth, and per
    model/head the FLOPs and minimal bytes of one training step at batch ``FLOOR_BATCH``."""
    jax = _jax_setup(job["tf32"])
    import jax.numpy as jnp

    from spinal_jax.train import steps

    n, reps = job["matmul_size"], job["reps"]
    key = jax.random.PRNGKey(0)
    rates: dict[str, Any] = {"matmul_size": n}
    for label, dtype, precision in (("bf16", jnp.bfloat16, None), ("fp32", jnp.float32, None),
                                    ("fp32_highest", jnp.float32, "highest")):
        a = jax.random.normal(key, (n, n), dtype)
        b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), dtype)
        mm = jax.jit(lambda a, b, p=precision: jnp.matmul(a, b, precision=p))
        t = _median_time(lambda mm=mm, a=a, b=b: mm(a, b), jax.block_until_ready, reps)
        rates[f"matmul_flops_per_second_{label}"] = 2.0 * n**3 / t
    m = job["copy_bytes"] // 4
    src = jax.random.normal(key, (m,), jnp.float32)
    scale = jax.jit(lambda v: v * 1.5 + 0.25)
    t = _median_time(lambda: scale(src), jax.block_until_ready, reps)
    rates["copy_bytes_per_second"] = 2.0 * m * 4 / t  # read + write
    rates["copy_bytes"] = m * 4
    device, _ = _jax_device_info(jax)

    rows = []
    for model_name in job["models"]:
        for head in job["heads"]:
            for batch in sorted({FLOOR_BATCH, ORIGINAL_BATCH[model_name]}):
                sub = {"model": model_name, "head": head, "precision": "fp32", "batch_size": batch,
                       "augment": True, "tf32": job["tf32"]}
                run = _jax_run(sub, with_fns=False)
                state, model = run["state"], run["model"]
                _, _, shape, num_train = MODEL_SETUP[model_name]
                xf = jnp.zeros((batch, *shape), jnp.float32)
                fwd = jax.jit(lambda v, x, model=model: model.apply(v, x, train=False))
                fwd_cost = _cost(fwd, state.variables(), xf)
                images = jnp.zeros((batch, *shape), jnp.uint8)
                labels = jnp.zeros((batch,), jnp.int32)
                # StepFunctions without shardings, so that the step lowers for the CPU (the trainer's own,
                # whose output shardings name the GPU, made the floor job fail on GPUs in 2026-12-07's runs)
                train_step = steps.StepFunctions(loss=run["config"].loss, train_transform=run["train_tf"]).train_step
                step_cost = _cost(train_step, state, {"image": images, "label": labels})
                leaves = jax.tree_util.tree_leaves((state.params, state.opt_state, state.batch_stats))
                state_bytes = sum(int(leaf.size) * leaf.dtype.itemsize for leaf in leaves)
                batch_bytes = batch * int(np.prod(shape)) + batch * 4
                fwd_flops = fwd_cost.get("flops", float("nan"))
                row = {
                    "model": model_name, "head": head, "batch_size": batch,
                    "forward_flops": fwd_flops,
                    "train_flops": 3.0 * fwd_flops,
                    "xla_train_step_flops": step_cost.get("flops"),
                    "xla_train_step_bytes_accessed": step_cost.get("bytes accessed"),
                    "min_bytes": batch_bytes + 2 * state_bytes,
                    "state_bytes": state_bytes,
                    "num_params": sum(int(v.size) for v in jax.tree_util.tree_leaves(state.params)),
                    "steps_per_epoch": _epoch_steps(num_train, batch),
                }
                for prec in PRECISIONS:
                    rate = rates[f"matmul_flops_per_second_{prec}"]
                    step_s = max(row["train_flops"] / rate, row["min_bytes"] / rates["copy_bytes_per_second"])
                    row[f"floor_step_seconds_{prec}"] = step_s
                    row[f"floor_epoch_seconds_{prec}"] = step_s * row["steps_per_epoch"]
                rows.append(row)
                _log(f"floor {model_name}/{head} b{batch}: {fwd_flops / batch / 1e6:.1f} MFLOP fwd/image, "
                     f"floor epoch bf16 {row['floor_epoch_seconds_bf16']:.3g} s, fp32 {row['floor_epoch_seconds_fp32']:.3g} s")
    return {"kind": "floor", "device": device, "tf32": job["tf32"], "rates": rates, "models": rows}


# =================================================================================================
# Time to accuracy (optional)
# =================================================================================================


class _Reached(Exception):
    pass


def job_time_to_accuracy(job: dict[str, Any]) -> dict[str, Any]:
    """``spinal-jax train`` of fashion_mnist_vgg5 (spinal head, batch ``batch_size``) until 93% test accuracy
    or ``max_epochs``."""
    jax = _jax_setup(job["tf32"])
    from spinal_jax.train.config import load_config
    from spinal_jax.train.loop import train_and_evaluate

    config = load_config(MODEL_SETUP["vgg5"][0]).replace(
        head="spinal", precision=job["precision"], batch_size=job["batch_size"], epochs=job["max_epochs"],
        data_dir=job["data_dir"],
        tensorboard=False, checkpoint_keep=1,
    )
    thresholds = (0.90, 0.93)
    reached: dict[str, dict[str, float]] = {}
    history: list[dict[str, float]] = []
    t_start = time.perf_counter()

    def on_epoch(epoch: int, record: dict[str, Any]) -> None:
        wall = time.perf_counter() - t_start
        acc = float(record["test_accuracy"])
        history.append({"epoch": epoch + 1, "wall_seconds": wall, "test_accuracy": acc,
                        "epoch_seconds": float(record["seconds"])})
        _log(f"time-to-accuracy {job['precision']} batch {job['batch_size']}: epoch {epoch + 1} "
             f"test {100 * acc:.2f}% at {wall:.1f} s")
        for th in thresholds:
            if f"{th:.2f}" not in reached and acc >= th:
                reached[f"{th:.2f}"] = {"epoch": epoch + 1, "wall_seconds": wall,
                                        "train_seconds": sum(h["epoch_seconds"] for h in history)}
        if len(reached) == len(thresholds):
            raise _Reached

    with tempfile.TemporaryDirectory() as run_dir, contextlib.suppress(_Reached):
        train_and_evaluate(config, run_dir, progress=False, epoch_callback=on_epoch,
                           min_checkpoint_interval=1e9)
    device, _ = _jax_device_info(jax)
    return {"kind": "time_to_accuracy", "model": "vgg5", "head": "spinal", "precision": job["precision"],
            "batch_size": config.batch_size, "augment": True, "device": device, "tf32": job["tf32"],
            "reached": reached, "history": history, "max_epochs": job["max_epochs"],
            "notes": "wall_seconds from the call of train_and_evaluate (data to device, init, compiles, "
                     "per-epoch evaluation included); train_seconds = the sum of the epochs' own times"}


# =================================================================================================
# PyTorch
# =================================================================================================


def _torch_setup(tf32: bool) -> tuple[Any, Any]:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = False  # the original scripts leave it off
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch, device


def _torch_model_and_opt(torch: Any, device: Any, model_name: str, head: str) -> tuple[Any, Any, dict[str, Any]]:
    sys.path.insert(0, HERE)
    import torch_models

    torch.manual_seed(0)
    recipe = torch_models.RECIPES[model_name]
    model = torch_models.build(model_name, head, 10).to(device).train()
    if recipe["optimizer"] == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=recipe["learning_rate"])
    else:
        opt = torch.optim.SGD(model.parameters(), lr=recipe["learning_rate"], momentum=recipe["momentum"])
    return model, opt, recipe


def _torch_device_name(torch: Any, device: Any) -> str:
    return f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else f"cpu:{platform.machine()}"


def _sync(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def job_torch(job: dict[str, Any]) -> dict[str, Any]:
    """torch eager or torch.compile on GPU-resident data: warm-up steps, then timed steps, extrapolated."""
    torch, device = _torch_setup(job["tf32"])
    import torch.nn.functional as F

    model, opt, recipe = _torch_model_and_opt(torch, device, job["model"], job["head"])
    x, y, data_note = _train_data(job["model"], job.get("data_dir"), job.get("num_examples"))
    n, batch = len(x), job["batch_size"]
    xd = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)  # uint8 NCHW on the device
    yd = torch.from_numpy(y.astype(np.int64)).to(device)
    c = x.shape[-1]
    mean = torch.tensor(recipe["mean"], device=device).view(1, c, 1, 1)
    std = torch.tensor(recipe["std"], device=device).view(1, c, 1, 1)
    net = torch.compile(model) if job["impl"] == "torch_compile" else model
    bf16 = job["precision"] == "bf16"

    def step(idx: Any) -> Any:
        xb = (xd.index_select(0, idx).float().div_(255.0) - mean) / std
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = net(xb)
        loss = F.cross_entropy(out.float(), yd.index_select(0, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    gen = torch.Generator(device=device).manual_seed(0)
    steps_per_epoch = max(n // batch, 1)
    perm = torch.randperm(n, device=device, generator=gen)

    def batch_idx(i: int) -> Any:
        j = i % steps_per_epoch
        return perm[j * batch : (j + 1) * batch]

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    step(batch_idx(0))
    _sync(torch, device)
    first = time.perf_counter() - t0
    for i in range(1, job["warmup"]):
        step(batch_idx(i))
    _sync(torch, device)
    epoch_steps = _epoch_steps(MODEL_SETUP[job["model"]][3] if job.get("num_examples") is None else n, batch)
    # the timed steps in TORCH_WINDOWS windows, each extrapolated to an epoch: the record is their median and
    # keeps all of them, so a run shows how much PyTorch's host-bound steps spread within it
    windows = np.array_split(np.arange(job["warmup"], job["warmup"] + job["steps"]), min(TORCH_WINDOWS, job["steps"]))
    epochs_all = []
    for window in windows:
        t0 = time.perf_counter()
        for i in window:
            loss = step(batch_idx(int(i)))
        _sync(torch, device)
        epochs_all.append((time.perf_counter() - t0) / len(window) * epoch_steps)
    epoch_s = statistics.median(epochs_all)
    sps = epoch_steps / epoch_s
    rec = _base_record(job) | {
        "epoch_seconds": epoch_s,
        "epoch_seconds_all": epochs_all,
        "steps_per_second": sps,
        "compile_seconds": max(first - 1.0 / sps, 0.0),
        "first_call_seconds": first,
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
        "device": _torch_device_name(torch, device),
        "measured_steps": job["steps"],
        "steps_per_epoch": epoch_steps,
        "extrapolated": True,
        "train_loss_last_step": float(loss.detach()),
        "pipeline": "data on the device, normalise only (no augmentation)",
        "data": data_note,
        "torch_version": torch.__version__,
        "notes": f"epoch extrapolated from {job['steps']} timed steps after {job['warmup']} warm-up steps "
                 f"(median of {len(windows)} windows)"
                 + ("; bf16 = torch.autocast" if bf16 else ""),
    }
    return rec


def job_torch_original_loader(job: dict[str, Any]) -> dict[str, Any]:
    """The original script's loop: PIL images through torchvision transforms in a CPU DataLoader
    (num_workers=0), copied to the GPU each step, fp32 eager."""
    torch, device = _torch_setup(job["tf32"])
    import torch.nn.functional as F
    from PIL import Image
    from torchvision import transforms

    model, opt, _ = _torch_model_and_opt(torch, device, "vgg5", job["head"])
    x, y, data_note = _train_data("vgg5", job.get("data_dir"), job.get("num_examples"))
    tf = transforms.Compose([
        transforms.RandomRotation(10, fill=(0,)),
        transforms.RandomResizedCrop(28, scale=(0.95, 1.0)),
        transforms.ToTensor(),
        transforms.Normalize((LOADER_MEAN,), (LOADER_STD,)),
    ])

    class Images(torch.utils.data.Dataset):
        """uint8 arrays served as torchvision's MNIST-style datasets do: one PIL 'L' image per item."""

        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int) -> tuple[Any, int]:
            return tf(Image.fromarray(x[i, :, :, 0])), int(y[i])

    loader = torch.utils.data.DataLoader(Images(), batch_size=job["batch_size"], shuffle=True, num_workers=0)
    total = job["warmup"] + job["steps"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_first, t_start, done = None, None, 0
    t0 = time.perf_counter()
    while done < total:
        for images, labels in loader:
            if done == job["warmup"]:
                _sync(torch, device)
                t_start = time.perf_counter()
            images, labels = images.to(device), labels.to(device)
            loss = F.cross_entropy(model(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if t_first is None:
                _sync(torch, device)
                t_first = time.perf_counter() - t0
            if done == total:
                break
    _sync(torch, device)
    sps = job["steps"] / (time.perf_counter() - t_start)
    epoch_steps = _epoch_steps(MODEL_SETUP["vgg5"][3] if job.get("num_examples") is None else len(x), job["batch_size"])
    return _base_record(job) | {
        "epoch_seconds": epoch_steps / sps,
        "steps_per_second": sps,
        "compile_seconds": None,
        "first_call_seconds": t_first,
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
        "device": _torch_device_name(torch, device),
        "measured_steps": job["steps"],
        "steps_per_epoch": epoch_steps,
        "extrapolated": True,
        "train_loss_last_step": float(loss.detach()),
        "pipeline": "torchvision RandomRotation(10, fill 0) + RandomResizedCrop(28, (0.95, 1)) + ToTensor + "
                    "Normalize(0.5, 0.5), DataLoader num_workers=0",
        "data": data_note,
        "torch_version": torch.__version__,
        "notes": f"the original's loop (one model per record); epoch extrapolated from {job['steps']} timed "
                 f"steps after {job['warmup']} warm-up steps",
    }


JOBS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "spinal_jax": job_spinal_jax,
    "torch_eager": job_torch,
    "torch_compile": job_torch,
    "torch_original_loader": job_torch_original_loader,
    "floor": job_floor,
    "time_to_accuracy": job_time_to_accuracy,
}


# =================================================================================================
# Planning and running jobs
# =================================================================================================


def _csv(text: str, allowed: Sequence[str], flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise ValueError(f"{flag}={text!r}: unknown {bad or 'empty list'}; choose from {', '.join(allowed)}")
    return items


def record_key(r: dict[str, Any]) -> tuple:
    """The identity of a record (or a floor / time-to-accuracy entry) in the table."""
    if r.get("kind") == "floor":
        return ("floor", r.get("model"))
    if r.get("kind") == "time_to_accuracy":
        return ("time_to_accuracy", r.get("precision"), r.get("batch_size"))
    return (r.get("impl"), r.get("model"), r.get("head"), r.get("precision"), r.get("batch_size"), r.get("augment"))


def plan_jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every job of the run, the most important first (the targets' records, then the rest)."""
    models = _csv(args.models, MODELS, "--models")
    heads = _csv(args.heads, HEADS, "--heads")
    impls = _csv(args.impls, IMPLS, "--impls")
    precisions = _csv(args.precisions, PRECISIONS, "--precisions")
    common = {"tf32": not args.no_tf32, "data_dir": args.data_dir, "num_examples": args.num_examples}
    jobs: list[tuple[int, dict[str, Any]]] = []

    def add(priority: int, **job: Any) -> None:
        jobs.append((priority, common | job))

    if not args.no_floor:  # one floor job per model, so that split runs each add their models' rows
        for model in models:
            add(0, kind="floor", impl="floor", model=model, models=[model], heads=heads,
                matmul_size=args.matmul_size, copy_bytes=args.copy_bytes, reps=args.rate_reps)
    for model in models:
        vgg = model == "vgg5"
        batch0 = args.batch_size or ORIGINAL_BATCH[model]
        # mnist_cnn's original pipeline has no augmentation (normalise only): its records are augment=False.
        aug_default = model != "mnist_cnn"
        for prec in precisions:
            for head in heads:
                if "spinal_jax" in impls:
                    add(1 if vgg else 6, impl="spinal_jax", model=model, head=head, precision=prec,
                        batch_size=batch0, augment=aug_default, epochs=args.jax_epochs)
                    if vgg and head == "spinal" and not args.no_augment_off:
                        add(2, impl="spinal_jax", model=model, head=head, precision=prec, batch_size=batch0,
                            augment=False, epochs=args.jax_epochs)
                    if vgg and args.large_batch and args.large_batch != batch0 and (head == "spinal" or args.large_batch_both_heads):
                        add(5, impl="spinal_jax", model=model, head=head, precision=prec,
                            batch_size=args.large_batch, augment=True, epochs=args.jax_epochs)
                for impl in ("torch_compile", "torch_eager"):
                    if impl in impls:
                        add((3 if impl == "torch_compile" else 4) if vgg else 7, impl=impl, model=model, head=head,
                            precision=prec, batch_size=batch0, augment=False, steps=args.torch_steps,
                            warmup=args.torch_warmup)
        if vgg and "torch_original_loader" in impls and "fp32" in precisions:
            for head in heads:
                add(4, impl="torch_original_loader", model=model, head=head, precision="fp32", batch_size=batch0,
                    augment=True, steps=args.loader_steps, warmup=args.loader_warmup)
    if args.time_to_accuracy:  # at the original batch and at the large one: does the large batch keep accuracy?
        batch0 = args.batch_size or ORIGINAL_BATCH["vgg5"]
        for prec in precisions:
            for batch in dict.fromkeys(b for b in (batch0, args.large_batch) if b):
                add(8, kind="time_to_accuracy", impl="time_to_accuracy", precision=prec, batch_size=batch,
                    max_epochs=args.tta_max_epochs)
    return [j for _, j in sorted(jobs, key=lambda pj: pj[0])]


def skip_reason(job: dict[str, Any], env: dict[str, Any], args: argparse.Namespace) -> str | None:
    """Why ``job`` cannot run here (None if it can)."""
    impl = job["impl"]
    if impl.startswith("torch") and not env["has_torch"]:
        return "torch is not installed"
    if impl == "torch_original_loader" and not env["has_torchvision"]:
        return "torchvision is not installed (the original's transforms need it)"
    if impl == "torch_compile" and not env["has_gpu"] and not args.force_compile:
        return "no GPU: torch.compile on the CPU is slow to build and says nothing about the GPU (--force-compile to run it)"
    if impl == "time_to_accuracy" and not args.data_dir:
        return "needs the real Fashion-MNIST: pass --data-dir with its array cache"
    return None


def run_job_inline(job: dict[str, Any]) -> dict[str, Any]:
    kind = job.get("kind", job["impl"])
    return JOBS[kind](job)


def run_job_isolated(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The job in a fresh Python process (its own CUDA context and allocator); its result is the last
    stdout line starting with ``RESULT_PREFIX``; its progress goes to our stderr as it happens."""
    env = dict(os.environ)
    if job["impl"].startswith("torch"):
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # jax is imported for the data cache only
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job)],
        stdout=subprocess.PIPE, text=True, timeout=timeout, env=env, check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker exited with {proc.returncode} and no result (its stderr is above)")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def worker_main(job_json: str) -> int:
    job = json.loads(job_json)
    result = run_job_inline(job)
    print(RESULT_PREFIX + json.dumps(result, default=_json_default), flush=True)
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)


# =================================================================================================
# Environment, output files
# =================================================================================================


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """GPU (nvidia-smi), driver, package versions: read without importing jax or torch."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": {k: _version(k) for k in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "torchvision")},
        "has_torch": importlib.util.find_spec("torch") is not None,
        "has_torchvision": importlib.util.find_spec("torchvision") is not None,
        "gpu": None, "driver": None, "has_gpu": False,
    }
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30, check=True,
            ).stdout.strip().splitlines()
        except (subprocess.SubprocessError, OSError):
            out = []
        if out:
            name, driver, mem = (p.strip() for p in out[0].split(",")[:3])
            env.update(gpu=name, driver=driver, gpu_memory=mem, gpu_count=len(out), has_gpu=True)
    return env


def _find(records: list[dict[str, Any]], **want: Any) -> dict[str, Any] | None:
    for r in records:
        if r.get("status") == "ok" and all(r.get(k) == v for k, v in want.items()):
            return r
    return None


def runs_note(*records: dict[str, Any]) -> str:
    """Empty when the records were measured in one run (the same ``run`` index), else what a ratio of them mixes.

    Epoch times move between machines of one kind by several per cent (``torch.compile``'s by far more), so a
    ratio of records that ``--merge`` brought together from different runs is not a same-run comparison.
    """
    runs = [r.get("run") for r in records]
    if any(run is None for run in runs):
        return "a record's run not recorded (merged from an older table)"
    return "" if len(set(runs)) == 1 else "records of different runs: " + ", ".join(f"run {run}" for run in runs)


def evaluate_targets(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 6's targets as rows: ``target``, ``value``, ``limit``, ``pass`` (True/False/None if not measured).

    ``detail`` says when a ratio's records come from different runs (``runs_note``).
    """
    rows: list[dict[str, Any]] = []

    def row(target: str, value: float | None, limit: str, ok: bool | None, *details: str) -> None:
        rows.append({"target": target, "value": value, "limit": limit, "pass": ok,
                     "detail": "; ".join(d for d in details if d)})

    for prec in ("bf16", "fp32"):
        r = _find(records, impl="spinal_jax", model="vgg5", head="spinal", precision=prec, batch_size=100, augment=True)
        v = r["epoch_seconds"] if r else None
        row(f"SpinalVGG epoch, {prec}, augmentation on the device, batch 100", v, f"≤ {TARGET_EPOCH_S[prec]} s",
            None if v is None else v <= TARGET_EPOCH_S[prec])
    for prec in ("bf16", "fp32"):
        for head in HEADS:
            jx = _find(records, impl="spinal_jax", model="vgg5", head=head, precision=prec, batch_size=100, augment=True)
            tc = _find(records, impl="torch_compile", model="vgg5", head=head, precision=prec, batch_size=100)
            v = tc["epoch_seconds"] / jx["epoch_seconds"] if jx and tc else None
            row(f"speed-up over torch.compile, vgg5 {head}, {prec}, batch 100", v, f"≥ {TARGET_SPEEDUP_VS_COMPILE:g}×",
                None if v is None else v >= TARGET_SPEEDUP_VS_COMPILE,
                "spinal_jax with augmentation vs torch.compile without", runs_note(jx, tc) if jx and tc else "")
    seen = set()
    for r in records:
        if r.get("status") != "ok" or r.get("impl") != "spinal_jax":
            continue
        key = (r["model"], r["precision"], r["batch_size"], r["augment"])
        if key in seen:
            continue
        seen.add(key)
        d = _find(records, impl="spinal_jax", model=key[0], head="default", precision=key[1], batch_size=key[2], augment=key[3])
        s = _find(records, impl="spinal_jax", model=key[0], head="spinal", precision=key[1], batch_size=key[2], augment=key[3])
        if d and s:
            v = s["epoch_seconds"] / d["epoch_seconds"] - 1.0
            row(f"spinal head over default head, {key[0]} {key[1]} batch {key[2]} aug={key[3]}", v,
                f"≤ {100 * TARGET_HEAD_OVERHEAD:g}%", v <= TARGET_HEAD_OVERHEAD,
                "" if key[0] == "vgg5" else "information (the target is for the VGG-5)", runs_note(d, s))
    seen = set()
    for r in records:
        if r.get("status") != "ok" or r.get("impl") != "spinal_jax" or r["model"] != "vgg5":
            continue
        key = (r["head"], r["precision"], r["batch_size"])
        if key in seen:
            continue
        seen.add(key)
        on = _find(records, impl="spinal_jax", model="vgg5", head=key[0], precision=key[1], batch_size=key[2], augment=True)
        off = _find(records, impl="spinal_jax", model="vgg5", head=key[0], precision=key[1], batch_size=key[2], augment=False)
        if on and off:
            v = on["epoch_seconds"] / off["epoch_seconds"] - 1.0
            row(f"augmentation over none, vgg5 {key[0]} {key[1]} batch {key[2]}", v,
                f"≤ {100 * TARGET_AUG_OVERHEAD:g}%", v <= TARGET_AUG_OVERHEAD, runs_note(on, off))
    return rows


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else str(v)
    return str(v)


def _spread(record: dict[str, Any]) -> str:
    times = record.get("epoch_seconds_all") or []
    if len(times) < 2:
        return "–"
    return f"{100 * (max(times) - min(times)) / statistics.median(times):.1f}%"


def _mib(v: Any) -> str:
    return "–" if v is None else f"{v / 2**20:.0f}"


def render_markdown(table: dict[str, Any]) -> str:
    env = table["environment"]
    lines = [
        "# GPU benchmark: spinal_jax against PyTorch",
        "",
        f"- GPU: {env.get('gpu') or 'none (CPU run)'}; driver {env.get('driver') or '–'}; "
        f"memory {env.get('gpu_memory') or '–'}; {env.get('cpu_count')} CPU cores",
        "- Versions: python " + env["python"] + "; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        f"- Precision setting: {table['precision_setting']}",
        "- Runs (index, date, command; a record's `run` is its index):",
    ]
    lines += [f"  - run {i}, {r['date']}: `{r['command']}`" for i, r in enumerate(table["runs"])]
    lines += [f"- Note: {note}" for note in table.get("notes", [])]  # e.g. what was merged from where, by hand
    if table.get("quick"):
        lines += ["", "**--quick run: tiny data and a handful of steps; the numbers are a smoke test, not a measurement.**"]
    pending = table.get("pending_jobs") or []
    if pending:
        lines += ["", f"**Partial table: the last run had not finished {len(pending)} of its jobs when this was written "
                  f"(still running, or stopped): {'; '.join(pending)}. The same command with `--merge` adds them.**"]
    lines += ["", "## Targets (issue 6)", "", "| target | value | limit | pass |", "|---|---:|---|---|"]
    for t in table["targets"]:
        value = t["value"]
        shown = "–" if value is None else (f"{100 * value:+.1f}%" if "%" in t["limit"] else
                                           f"{value:.2f}×" if "×" in t["limit"] else f"{value:.4f} s")
        verdict = {True: "PASS", False: "FAIL", None: "not measured"}[t["pass"]]
        detail = f" ({t['detail']})" if t["detail"] else ""
        lines.append(f"| {t['target']}{detail} | {shown} | {t['limit']} | {verdict} |")
    lines += ["", "## Records", "",
              "Spread: (slowest − fastest) / median of the record's timed epochs (spinal_jax) or windows (PyTorch).", "",
              "| impl | model | head | precision | batch | aug | epoch s | spread | steps/s | compile s | peak MiB | measured steps | extrapolated | device | run |",
              "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    order = {k: i for i, k in enumerate(IMPLS)}
    ok = [r for r in table["records"] if r.get("status") == "ok"]
    for r in sorted(ok, key=lambda r: (MODELS.index(r["model"]) if r["model"] in MODELS else 9, order.get(r["impl"], 9),
                                       r["head"], r["precision"], r["batch_size"], not r["augment"])):
        lines.append(
            f"| {r['impl']} | {r['model']} | {r['head']} | {r['precision']} | {r['batch_size']} | {_fmt(r['augment'])} | "
            f"{_fmt(r.get('epoch_seconds'))} | {_spread(r)} | {_fmt(r.get('steps_per_second'), 1)} | {_fmt(r.get('compile_seconds'), 1)} | "
            f"{_mib(r.get('peak_memory_bytes'))} | {r.get('measured_steps')} | {_fmt(r.get('extrapolated'))} | {r.get('device')} | "
            f"{_fmt(r.get('run'))} |"
        )
    other = [r for r in table["records"] if r.get("status") != "ok"]
    if other:
        lines += ["", "Not measured:", ""]
        lines += [f"- {r['impl']} {r.get('model', '')} {r.get('head', '')} {r.get('precision', '')} "
                  f"b{r.get('batch_size', '')} aug={r.get('augment')}: **{r['status']}**: {r.get('reason', '')}"
                  for r in other]
    floor = table.get("floor")
    if floor:
        rates = floor["rates"]
        lines += [
            "", "## Floor (per training step: FLOPs = 3 × forward; bytes = batch + state read and written once)", "",
            f"Measured on {floor['device']}: matmul {rates['matmul_size']}² bf16 "
            f"{rates['matmul_flops_per_second_bf16'] / 1e12:.1f} TFLOP/s, fp32 (run's setting) "
            f"{rates['matmul_flops_per_second_fp32'] / 1e12:.1f} TFLOP/s, fp32 highest "
            f"{rates['matmul_flops_per_second_fp32_highest'] / 1e12:.1f} TFLOP/s; copy "
            f"{rates['copy_bytes_per_second'] / 1e9:.0f} GB/s (read + write)."
            + (f" {floor['note']}" if floor.get("note") else ""), "",
            "| model | head | batch | fwd GFLOP/step | train GFLOP/step | XLA train-step GFLOP | min MB/step | floor epoch bf16 s | floor epoch fp32 s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in floor["models"]:
            xla = m.get("xla_train_step_flops")
            lines.append(
                f"| {m['model']} | {m['head']} | {m['batch_size']} | {m['forward_flops'] / 1e9:.3g} | "
                f"{m['train_flops'] / 1e9:.3g} | {'–' if xla is None else f'{xla / 1e9:.3g}'} | "
                f"{m['min_bytes'] / 1e6:.3g} | {m['floor_epoch_seconds_bf16']:.3g} | {m['floor_epoch_seconds_fp32']:.3g} |"
            )
    tta = _time_to_accuracy(table)
    if tta:
        lines += ["", "## Time to accuracy (spinal_jax, fashion_mnist_vgg5, spinal head)", "",
                  "Wall seconds from the start of training (set-up and compilation included) to the first epoch whose "
                  "test accuracy reaches the threshold; a larger batch keeps accuracy if it reaches both.", "",
                  "| precision | batch | 90%: epoch / wall s | 93%: epoch / wall s | epochs run | best test |",
                  "|---|---:|---|---|---:|---:|"]
        for t in tta:
            cells = []
            for th in ("0.90", "0.93"):
                hit = t["reached"].get(th)
                cells.append("not reached" if not hit else f"{hit['epoch']} / {hit['wall_seconds']:.1f}")
            best = max((h["test_accuracy"] for h in t["history"]), default=float("nan"))
            lines.append(f"| {t['precision']} | {t.get('batch_size', '?')} | {cells[0]} | {cells[1]} | "
                         f"{len(t['history'])} | {100 * best:.2f}% |")
    lines += ["", "## Anchors (ORIGINAL.md §7, one H100, batch 100, epoch seconds)", "",
              "| setup | VGG | SpinalVGG |", "|---|---:|---:|"]
    for setup in dict.fromkeys(s for s, _ in ANCHORS_S):
        lines.append(f"| {setup} | {ANCHORS_S[(setup, 'default')]} | {ANCHORS_S[(setup, 'spinal')]} |")
    lines += ["", "Torch records run without augmentation (data on the GPU); extrapolated records time "
              "`measured steps` steps and scale to the epoch. spinal_jax records time whole epochs.", ""]
    return "\n".join(lines)


def _time_to_accuracy(table: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's time-to-accuracy entries by precision, then batch size."""
    return sorted(table.get("time_to_accuracy") or [], key=lambda t: (t["precision"], t.get("batch_size") or 0))


def plot_png(table: dict[str, Any]) -> bytes | None:
    """The table as a figure (PNG bytes; None without matplotlib): each model's epoch seconds at its original
    batch size by contender (log scale; spinal_jax bars labelled with their speed-up over torch.compile),
    and the time-to-accuracy curves."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ok = [r for r in table["records"] if r.get("epoch_seconds")]  # _find keeps status "ok" only
    groups = [(head, prec) for prec in PRECISIONS for head in HEADS]
    colors = {"spinal_jax": "tab:red", "torch_compile": "tab:blue", "torch_eager": "tab:cyan",
              "torch_original_loader": "tab:gray"}
    tta = _time_to_accuracy(table)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    axes = axes.ravel()
    width = 0.8 / len(IMPLS)
    labelled: set[str] = set()
    for ax, model in zip(axes, MODELS, strict=False):
        batch = ORIGINAL_BATCH[model]
        for i, impl in enumerate(IMPLS):
            for g, (head, prec) in enumerate(groups):
                want = {"impl": impl, "model": model, "head": head, "precision": prec, "batch_size": batch}
                if impl == "spinal_jax":
                    want["augment"] = model != "mnist_cnn"
                r = _find(ok, **want)
                if r is None:
                    continue
                x = g + (i - (len(IMPLS) - 1) / 2) * width
                ax.bar(x, r["epoch_seconds"], width, color=colors[impl], label=None if impl in labelled else impl)
                labelled.add(impl)
                ref = _find(ok, **{**want, "impl": "torch_compile", "augment": False})
                if impl == "spinal_jax" and ref is not None:
                    mixed = "*" if runs_note(r, ref) else ""
                    ax.annotate(f"{ref['epoch_seconds'] / r['epoch_seconds']:.1f}x{mixed}", (x, r["epoch_seconds"]),
                                ha="center", va="bottom", fontsize=7)
        ax.set_yscale("log")
        ax.set_xticks(range(len(groups)), [f"{h}\n{p}" for h, p in groups])
        ax.set_ylabel("epoch seconds (log)")
        ax.set_title(f"{model}, batch {batch}")
        ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="upper right", fontsize=8, ncols=len(labelled))
    ax = axes[len(MODELS)]
    if not tta:
        ax.set_axis_off()
    else:
        for t in tta:
            hist = t["history"]
            ax.plot([h["wall_seconds"] for h in hist], [100 * h["test_accuracy"] for h in hist], marker=".",
                    label=f"{t['precision']}, batch {t.get('batch_size', '?')}")
        for th in (90, 93):
            ax.axhline(th, color="gray", linestyle="--", linewidth=0.8)
        ax.set_xlabel("wall seconds from the start (compilation included)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("vgg5 spinal: time to accuracy")
        ax.legend(fontsize=7)
    gpu = (table.get("environment") or {}).get("gpu") or "no GPU"
    fig.suptitle(f"spinal_jax vs PyTorch: one training epoch\n({gpu}; spinal_jax bars: speed-up over torch.compile, "
                 "* from records of different runs)", x=0.02, ha="left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def save(table: dict[str, Any], out_dir: str) -> None:
    """``gpu_benchmark.json``, ``.md`` and (with matplotlib) ``.png`` in ``out_dir``, each written atomically."""
    table["targets"] = evaluate_targets(table["records"])
    write_atomic(os.path.join(out_dir, JSON_NAME), json.dumps(table, indent=1, default=_json_default) + "\n")
    write_atomic(os.path.join(out_dir, MD_NAME), render_markdown(table))
    png = plot_png(table)
    if png is not None:
        write_atomic(os.path.join(out_dir, PNG_NAME), png)


# =================================================================================================
# Main
# =================================================================================================


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="folder of gpu_benchmark.json/.md")
    p.add_argument("--data-dir", default=None, help="data_dir holding spinal_jax array caches (export_arrays); "
                   "Fashion-MNIST from there, else random uint8")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--heads", default=",".join(HEADS))
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--batch-size", type=int, default=None, help="override every model's original batch size")
    p.add_argument("--large-batch", type=int, default=500, help="extra VGG-5 spinal_jax batch size (0: none)")
    p.add_argument("--large-batch-both-heads", action="store_true", help="the large batch for both heads")
    p.add_argument("--no-augment-off", action="store_true", help="skip the spinal_jax augment=False records")
    p.add_argument("--jax-epochs", type=int, default=3, help="timed spinal_jax epochs after the warm-up epoch (the record: their median)")
    p.add_argument("--torch-steps", type=int, default=150)
    p.add_argument("--torch-warmup", type=int, default=20)
    p.add_argument("--loader-steps", type=int, default=50)
    p.add_argument("--loader-warmup", type=int, default=5)
    p.add_argument("--no-tf32", action="store_true", help="fp32 without TF32 in both frameworks")
    p.add_argument("--no-floor", action="store_true")
    p.add_argument("--matmul-size", type=int, default=8192)
    p.add_argument("--copy-bytes", type=int, default=2**30)
    p.add_argument("--rate-reps", type=int, default=10)
    p.add_argument("--time-to-accuracy", action="store_true", help="also train vgg5 spinal to 90%%/93%% test accuracy, at the original batch and at --large-batch")
    p.add_argument("--tta-max-epochs", type=int, default=30,
                   help="epochs at most (batch 500 needed 14 in fp32 and 20 in bf16 to reach 93%%)")
    p.add_argument("--num-examples", type=int, default=None, help="train examples per epoch (default: the dataset's)")
    p.add_argument("--budget-seconds", type=float, default=360.0,
                   help="launch no job after this much wall time; with isolation no job runs past it + 120 s")
    p.add_argument("--job-timeout", type=float, default=300.0)
    p.add_argument("--merge", default=None, help="an earlier gpu_benchmark.json to add to (its ok jobs are skipped)")
    p.add_argument("--no-isolate", action="store_true", help="run the jobs in this process (--quick's default)")
    p.add_argument("--isolate", action="store_true", help="one process per job even with --quick")
    p.add_argument("--force-compile", action="store_true", help="run torch_compile without a GPU too")
    p.add_argument("--quick", action="store_true", help="CPU smoke run: tiny data, a few steps, mnist_cnn only by default, in-process")
    p.add_argument("--render-only", action="store_true",
                   help="run nothing: rewrite the Markdown table and the figure of the --merge table into --out")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        defaults = p.parse_args([])
        for name, value in {"models": "mnist_cnn", "num_examples": 32, "batch_size": 16, "large_batch": 0,
                            "jax_epochs": 1, "torch_steps": 3, "torch_warmup": 1, "loader_steps": 2,
                            "loader_warmup": 1, "matmul_size": 256, "copy_bytes": 2**22, "rate_reps": 2,
                            "tta_max_epochs": 1}.items():
            if getattr(args, name) == getattr(defaults, name):
                setattr(args, name, value)
        args.no_isolate = not args.isolate
    for name in ("jax_epochs", "torch_steps", "torch_warmup", "loader_steps", "loader_warmup", "matmul_size",
                 "rate_reps", "tta_max_epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("batch_size", "num_examples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.large_batch < 0:
        p.error(f"--large-batch must be >= 0, got {args.large_batch}")
    if args.num_examples is not None and args.num_examples < (args.batch_size or 1):
        p.error(f"--num-examples={args.num_examples} is smaller than one batch ({args.batch_size})")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        p.error(f"--data-dir={args.data_dir!r} is not a directory (make one with spinal_jax.data.export_arrays)")
    if args.merge is not None and not os.path.isfile(args.merge):
        p.error(f"--merge={args.merge!r}: no such file")
    if args.render_only and args.merge is None:
        p.error("--render-only needs --merge (the table to render)")
    return args


def job_label(job: dict[str, Any]) -> str:
    """A job's name in the log and in a table's ``pending_jobs``, e.g. ``torch_eager vgg5 spinal bf16 100 aug=False``."""
    label = " ".join(str(job.get(k)) for k in ("impl", "model", "head", "precision", "batch_size") if job.get(k) is not None)
    return label + (f" aug={job['augment']}" if "augment" in job else "")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker)
    if args.render_only:
        with open(args.merge) as f:
            save(json.load(f), args.out)
        _log(f"rendered {args.merge} into {args.out}")
        return 0
    try:
        jobs = plan_jobs(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    env = environment()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-"))  # fresh compiles
    command = " ".join([os.path.relpath(__file__) if not os.path.isabs(sys.argv[0]) else sys.argv[0], *sys.argv[1:]])
    table: dict[str, Any] = {"schema": SCHEMA, "records": [], "floor": None, "time_to_accuracy": [], "runs": []}
    if args.merge:
        with open(args.merge) as f:
            table.update(json.load(f))
    table["environment"] = env
    table["quick"] = bool(args.quick or table.get("quick"))
    table["precision_setting"] = (
        "fp32 = TF32 allowed in both (JAX default precision; torch allow_tf32 for matmul and cuDNN); bf16 = bf16 compute, fp32 params"
        if not args.no_tf32 else
        "fp32 = full fp32 in both (JAX jax_default_matmul_precision=highest; torch allow_tf32 off); bf16 = bf16 compute, fp32 params"
    )
    table["runs"] = [*table.get("runs", []), {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                              "command": f"python {command}"}]
    done = {record_key(r) for r in table["records"] if r.get("status") == "ok"}
    done |= {("floor", m["model"]) for m in (table.get("floor") or {}).get("models", [])}
    done |= {record_key(t) for t in table.get("time_to_accuracy", [])}
    isolate = not args.no_isolate
    _log(f"{len(jobs)} jobs; GPU: {env['gpu'] or 'none'}; isolate={isolate}; budget {args.budget_seconds:.0f} s")
    keys = [record_key(job | {"kind": job.get("kind")}) for job in jobs]
    # Every snapshot names the jobs this run has not finished, so a table whose run was killed says it is partial.
    table["pending_jobs"] = [job_label(job) for job, key in zip(jobs, keys, strict=True) if key not in done]
    t_run = time.perf_counter()
    for i, (job, key) in enumerate(zip(jobs, keys, strict=True), 1):
        label = job_label(job)
        if key in done:
            _log(f"[{i}/{len(jobs)}] {label}: already in the merged table, skipped")
            continue
        reason = skip_reason(job, env, args)
        elapsed = time.perf_counter() - t_run
        if reason is None and elapsed > args.budget_seconds:
            reason = f"time budget ({args.budget_seconds:.0f} s) spent; rerun with --merge to measure it"
        result: dict[str, Any]
        if reason is not None:
            _log(f"[{i}/{len(jobs)}] {label}: skipped: {reason}")
            result = {"status": "skipped", "reason": reason}
        else:
            _log(f"[{i}/{len(jobs)}] {label} ...")
            t0 = time.perf_counter()
            try:
                if isolate:
                    # no job runs past budget + 120 s: a run ends by then whatever hangs
                    remaining = max(args.budget_seconds + 120.0 - elapsed, 30.0)
                    result = run_job_isolated(job, timeout=min(args.job_timeout, remaining))
                else:
                    result = run_job_inline(job)
                result["status"] = "ok"
            except subprocess.TimeoutExpired:
                result = {"status": "failed", "reason": f"timed out after {time.perf_counter() - t0:.0f} s"}
            except Exception as e:  # one broken contender must not lose the others' numbers
                result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
            result["job_wall_seconds"] = time.perf_counter() - t0
            if result["status"] == "ok" and "epoch_seconds" in result:
                _log(f"[{i}/{len(jobs)}] {label}: epoch {result['epoch_seconds']:.3f} s, "
                     f"{result['steps_per_second']:.1f} steps/s, compile {_fmt(result.get('compile_seconds'), 1)} s, "
                     f"peak {_mib(result.get('peak_memory_bytes'))} MiB ({result['job_wall_seconds']:.0f} s)")
            else:
                _log(f"[{i}/{len(jobs)}] {label}: {result['status']} {result.get('reason', '')} "
                     f"({result['job_wall_seconds']:.0f} s)")
        kind = job.get("kind")
        if kind in ("floor", "time_to_accuracy") and result["status"] == "ok":  # drop its earlier failures
            same_job = ("impl", "model", "precision", "batch_size")
            table["records"] = [r for r in table["records"]
                                if tuple(r.get(k) for k in same_job) != tuple(job.get(k) for k in same_job)]
        if kind == "floor" and result["status"] == "ok":  # latest rates; rows merged by model
            kept = [m for m in (table.get("floor") or {}).get("models", []) if m["model"] != job["model"]]
            table["floor"] = result | {"models": kept + result["models"]}
        elif kind == "time_to_accuracy" and result["status"] == "ok":
            table["time_to_accuracy"] = [t for t in table["time_to_accuracy"] if record_key(t) != key] + [result]
        else:
            base = {k: job.get(k) for k in ("impl", "model", "head", "precision", "batch_size", "augment")}
            rec = base | {"tf32": job["tf32"], "run": len(table["runs"]) - 1} | result
            table["records"] = [r for r in table["records"] if record_key(r) != record_key(rec)] + [rec]
        table["pending_jobs"].remove(label)
        save(table, args.out)
    save(table, args.out)
    _log(f"done in {time.perf_counter() - t_run:.0f} s: {os.path.join(args.out, JSON_NAME)}")
    for t in table["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "----"}[t["pass"]]
        print(f"{verdict}  {t['target']}: {_fmt(t['value'])} ({t['limit']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
