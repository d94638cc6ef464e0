"""experiments/gpu_benchmark.py and experiments/torch_models.py on the CPU.

A ``--quick`` run end to end (tiny data, a few steps per contender; contenders that cannot run here are
recorded as skipped with a reason), the target evaluation on hand-made records, the job plan, and the
PyTorch models: the original's parameter counts (ORIGINAL.md §6) and the same logits as spinal_jax's
models after ``load_state_dict``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "gpu_benchmark.py")
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


def _load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gb = _load("gpu_benchmark", SCRIPT)


def _run(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    # one CPU device, as a plain run, compiled as cheaply as the tests: tests/conftest.py's XLA flags without
    # its device count, and the session's compilation cache (the floor job builds each head's train state
    # twice, for its two batch sizes)
    env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ["XLA_FLAGS"])
    env["JAX_COMPILATION_CACHE_DIR"] = os.environ["SPINAL_JAX_COMPILATION_CACHE"]
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor")
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=ROOT, check=False)


def test_quick_run_writes_table_and_merges(tmp_path):
    out = tmp_path / "out"
    proc = _run(["--quick", "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((out / "gpu_benchmark.json").read_text())
    md = (out / "gpu_benchmark.md").read_text()
    recs = table["records"]
    jax_ok = [r for r in recs if r["impl"] == "spinal_jax" and r["status"] == "ok"]
    assert {(r["head"], r["precision"]) for r in jax_ok} == {(h, p) for h in gb.HEADS for p in gb.PRECISIONS}
    for r in jax_ok:
        for key in ("epoch_seconds", "steps_per_second", "compile_seconds"):
            assert r[key] >= 0 and np.isfinite(r[key]), (key, r)
        assert r["epoch_seconds"] > 0 and r["measured_steps"] == r["steps_per_epoch"] == 2
        assert r["model"] == "mnist_cnn" and r["batch_size"] == 16 and r["augment"] is False
        assert np.isfinite(r["train_loss_last_epoch"])
        assert "peak_memory_bytes" in r and "device" in r
    eager = [r for r in recs if r["impl"] == "torch_eager"]
    assert len(eager) == 4
    if HAS_TORCH:
        assert all(r["status"] == "ok" and r["extrapolated"] and r["measured_steps"] == 3 for r in eager)
        for r in eager:  # 3 timed steps: gb.TORCH_WINDOWS windows of one step, the record their median
            assert len(r["epoch_seconds_all"]) == gb.TORCH_WINDOWS == 3
            assert r["epoch_seconds"] == statistics.median(r["epoch_seconds_all"]) > 0
    else:
        assert all(r["status"] == "skipped" and "torch" in r["reason"] for r in eager)
    compiled = [r for r in recs if r["impl"] == "torch_compile"]
    assert len(compiled) == 4 and all(r["status"] == "skipped" and r["reason"] for r in compiled)
    floor = table["floor"]
    assert floor["rates"]["matmul_flops_per_second_bf16"] > 0 and floor["rates"]["copy_bytes_per_second"] > 0
    rows = {(m["model"], m["head"], m["batch_size"]): m for m in floor["models"]}
    assert set(rows) == {("mnist_cnn", h, b) for h in gb.HEADS for b in (64, 100)}
    # small CNN forward, counted by hand: conv1 24·24·10·25 + conv2 8·8·20·250 MACs + the head's Linears
    convs = 24 * 24 * 10 * 25 + 8 * 8 * 20 * 250
    per_image = {"default": convs + 320 * 50 + 50 * 10, "spinal": convs + 160 * 8 + 5 * 168 * 8 + 48 * 10}
    for head, macs in per_image.items():
        flops = rows[("mnist_cnn", head, 100)]["forward_flops"] / 100
        assert 2 * macs <= flops <= 2 * macs * 1.05, (head, flops, 2 * macs)
    assert "## Targets" in md and "| spinal_jax | mnist_cnn | spinal | bf16 | 16 |" in md

    # a second run adds to the first table (--merge) and records the original's loader: skipped or run
    out2 = tmp_path / "out2"
    proc = _run(["--quick", "--models", "vgg5", "--impls", "torch_original_loader", "--heads", "spinal",
                 "--no-floor", "--merge", str(out / "gpu_benchmark.json"), "--out", str(out2)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = json.loads((out2 / "gpu_benchmark.json").read_text())
    assert len(merged["runs"]) == 2 and merged["floor"] == floor
    loader = [r for r in merged["records"] if r["impl"] == "torch_original_loader"]
    assert len(loader) == 1 and loader[0]["head"] == "spinal"
    if not (HAS_TORCH and HAS_TORCHVISION):
        assert loader[0]["status"] == "skipped" and loader[0]["reason"]
    assert len(merged["records"]) == len(recs) + 1
    assert {r["run"] for r in recs} == {0} and loader[0]["run"] == 1  # each record names the run that measured it
    merged_md = (out2 / "gpu_benchmark.md").read_text()
    assert "  - run 1, " in merged_md and "--merge" in merged_md


def _rec(impl, head, precision, epoch, augment=True, model="vgg5", batch=100, run=0):
    return {"impl": impl, "model": model, "head": head, "precision": precision, "batch_size": batch,
            "augment": augment, "epoch_seconds": epoch, "status": "ok", "run": run}


def test_targets_pass_and_fail():
    records = [
        _rec("spinal_jax", "spinal", "bf16", 0.40),
        _rec("spinal_jax", "default", "bf16", 0.39),
        _rec("spinal_jax", "spinal", "fp32", 1.00),
        _rec("spinal_jax", "default", "fp32", 0.80),
        _rec("spinal_jax", "spinal", "bf16", 0.30, augment=False),
        _rec("torch_compile", "spinal", "bf16", 5.0, augment=False),
        _rec("torch_compile", "spinal", "fp32", 5.0, augment=False),
        _rec("torch_eager", "spinal", "bf16", 1e-3, augment=False),  # other impls must not be picked up
    ]
    rows = {t["target"]: t for t in gb.evaluate_targets(records)}
    assert rows["SpinalVGG epoch, bf16, augmentation on the device, batch 100"]["pass"] is True
    assert rows["SpinalVGG epoch, fp32, augmentation on the device, batch 100"]["pass"] is False
    sp = rows["speed-up over torch.compile, vgg5 spinal, bf16, batch 100"]
    assert sp["pass"] is True and sp["value"] == pytest.approx(12.5)
    assert rows["speed-up over torch.compile, vgg5 spinal, fp32, batch 100"]["pass"] is False
    assert rows["speed-up over torch.compile, vgg5 default, bf16, batch 100"]["pass"] is None  # not measured
    head_bf16 = rows["spinal head over default head, vgg5 bf16 batch 100 aug=True"]
    assert head_bf16["pass"] is True and head_bf16["value"] == pytest.approx(0.40 / 0.39 - 1)
    assert rows["spinal head over default head, vgg5 fp32 batch 100 aug=True"]["pass"] is False
    aug = rows["augmentation over none, vgg5 spinal bf16 batch 100"]
    assert aug["pass"] is False and aug["value"] == pytest.approx(0.40 / 0.30 - 1)
    md = gb.render_markdown({"environment": gb.environment(), "precision_setting": "x", "runs": [],
                             "records": records, "targets": list(rows.values())})
    assert "| SpinalVGG epoch, fp32, augmentation on the device, batch 100 | 1.0000 s | ≤ 0.9 s | FAIL |" in md
    assert all("run" not in t["detail"] for t in rows.values())  # all of one run: nothing to flag


def test_targets_flag_ratios_across_runs():
    """A ratio of records that --merge brought from different runs (or from a table without run indices) says so."""
    records = [
        _rec("spinal_jax", "spinal", "bf16", 0.40, run=2),
        _rec("spinal_jax", "default", "bf16", 0.39, run=2),
        _rec("spinal_jax", "spinal", "bf16", 0.30, augment=False, run=1),
        _rec("torch_compile", "spinal", "bf16", 5.0, augment=False, run=2),
        _rec("torch_compile", "default", "bf16", 5.0, augment=False, run=None),
    ]
    rows = {t["target"]: t for t in gb.evaluate_targets(records)}
    assert rows["speed-up over torch.compile, vgg5 spinal, bf16, batch 100"]["detail"] == (
        "spinal_jax with augmentation vs torch.compile without")
    assert rows["spinal head over default head, vgg5 bf16 batch 100 aug=True"]["detail"] == ""
    aug = rows["augmentation over none, vgg5 spinal bf16 batch 100"]
    assert aug["detail"] == "records of different runs: run 2, run 1" and aug["pass"] is False
    old = rows["speed-up over torch.compile, vgg5 default, bf16, batch 100"]["detail"]
    assert old.endswith("; a record's run not recorded (merged from an older table)")
    md = gb.render_markdown({"environment": gb.environment(), "precision_setting": "x", "runs": [],
                             "records": records, "targets": list(rows.values())})
    assert "(records of different runs: run 2, run 1) | +33.3% | ≤ 5% | FAIL |" in md
    assert md.count(" | 2 |\n") == 3  # the run column of the three records of run 2


def test_plan_and_bad_arguments(tmp_path):
    jobs = gb.plan_jobs(gb.parse_args(["--out", str(tmp_path)]))
    assert jobs[0]["impl"] == "floor"
    keys = [gb.record_key(j | {"kind": j.get("kind")}) for j in jobs]
    assert len(keys) == len(set(keys))
    jax_vgg = [j for j in jobs if j["impl"] == "spinal_jax" and j["model"] == "vgg5"]
    # 2 heads × 2 precisions at batch 100 with augmentation, + spinal without it, + spinal at batch 500
    assert len(jax_vgg) == 8
    assert {j["batch_size"] for j in jax_vgg} == {100, 500}
    assert all(j["augment"] for j in jax_vgg if j["batch_size"] == 500)
    runs = [j for j in jobs if j["impl"] != "floor"]
    assert [j["model"] for j in jobs if j["impl"] == "floor"] == list(gb.MODELS)
    assert {j["batch_size"] for j in runs if j["model"] == "cifar_resnet18"} == {200}
    assert all(not j["augment"] for j in runs if j["model"] == "mnist_cnn")
    loader = [j for j in jobs if j["impl"] == "torch_original_loader"]
    assert len(loader) == 2 and all(j["precision"] == "fp32" and j["augment"] for j in loader)
    # the targets' records come before the rest
    first_other = min(i for i, j in enumerate(runs) if j["model"] in ("mnist_cnn", "cifar_resnet18"))
    assert all(j["impl"] != "spinal_jax" or j["model"] != "vgg5" or j["batch_size"] == 500
               for j in runs[first_other:])
    assert not [j for j in jobs if j["impl"] == "time_to_accuracy"]
    tta = [j for j in gb.plan_jobs(gb.parse_args(["--time-to-accuracy", "--large-batch", "400"]))
           if j["impl"] == "time_to_accuracy"]
    assert sorted((j["precision"], j["batch_size"]) for j in tta) == [
        ("bf16", 100), ("bf16", 400), ("fp32", 100), ("fp32", 400)]
    assert len({gb.record_key(j | {"kind": j["kind"]}) for j in tta}) == 4
    with pytest.raises(ValueError, match="--models"):
        gb.plan_jobs(gb.parse_args(["--models", "vgg6"]))
    with pytest.raises(SystemExit):
        gb.parse_args(["--data-dir", str(tmp_path / "missing")])
    with pytest.raises(SystemExit):
        gb.parse_args(["--torch-steps", "0"])


# ------------------------------------------------------------------------------------------------
# experiments/torch_models.py
# ------------------------------------------------------------------------------------------------

# ORIGINAL.md §6: total parameters of the original classes (10 classes).
ORIGINAL_PARAMS = {
    ("vgg5", "default"): 3_646_154, ("vgg5", "spinal"): 3_629_770,
    ("mnist_cnn", "default"): 21_840, ("mnist_cnn", "spinal"): 13_818,
    ("cifar_resnet18", "default"): 3_141_674, ("cifar_resnet18", "spinal"): 3_609_130,
}


@pytest.mark.parametrize("model_name,head", sorted(ORIGINAL_PARAMS))
def test_torch_models_match_original_and_spinal_jax(model_name, head):
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp

    from spinal_jax import models
    from spinal_jax.interop.torch import load_state_dict

    tm = _load("torch_models", os.path.join(ROOT, "experiments", "torch_models.py"))
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(1)
    net = tm.build(model_name, head, 10)
    assert tm.num_params(net) == ORIGINAL_PARAMS[(model_name, head)]
    # random BN statistics so that eval mode is not the identity
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    net.eval()
    c, h, w = tm.RECIPES[model_name]["image_shape"]
    x = np.random.default_rng(3).normal(size=(4, c, h, w)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    jmodel = models.get(model_name, 10, head)
    variables = load_state_dict(jmodel, net.state_dict())
    out = np.asarray(jmodel.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)), train=False))
    err = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert err < 1e-5, err


def test_torch_models_reject_bad_names():
    pytest.importorskip("torch")
    tm = _load("torch_models", os.path.join(ROOT, "experiments", "torch_models.py"))
    with pytest.raises(ValueError, match="model"):
        tm.build("vgg6", "spinal")
    with pytest.raises(ValueError, match="head"):
        tm.build("vgg5", "wide")
    with pytest.raises(ValueError, match="num_classes"):
        tm.build("vgg5", "spinal", 0)


def test_cost_counts_on_the_cpu_backend():
    """FLOPs come from the CPU backend's cost analysis (the GPU's leaves out cuDNN convolutions):
    a matmul and a convolution, counted by hand (2 per multiply-add)."""
    import jax
    import jax.numpy as jnp

    a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
    assert gb._cost(jax.jit(jnp.matmul), a, b)["flops"] == 2 * 8 * 16 * 4
    x, k = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 5))  # NHWC, HWIO, VALID: 4x4 outputs
    conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
    assert gb._cost(conv, x, k)["flops"] == 2 * 2 * 4 * 4 * 5 * 3 * 3 * 3


def test_time_to_accuracy_rows_per_batch_size():
    def entry(batch: int, accs: list[float]) -> dict:
        history = [{"epoch": i + 1, "wall_seconds": 10.0 + i, "test_accuracy": a, "epoch_seconds": 1.0}
                   for i, a in enumerate(accs)]
        reached = {th: {"epoch": h["epoch"], "wall_seconds": h["wall_seconds"], "train_seconds": 1.0}
                   for th in ("0.90", "0.93") for h in history[::-1] if h["test_accuracy"] >= float(th)}
        return {"kind": "time_to_accuracy", "precision": "bf16", "batch_size": batch, "reached": reached,
                "history": history}

    md = gb.render_markdown({"environment": gb.environment(), "precision_setting": "x", "runs": [], "records": [],
                             "targets": [], "time_to_accuracy": [entry(500, [0.91, 0.92]), entry(100, [0.9, 0.95])]})
    rows = [line for line in md.splitlines() if line.startswith("| bf16 |")]
    assert rows == ["| bf16 | 100 | 1 / 10.0 | 2 / 11.0 | 2 | 95.00% |",
                    "| bf16 | 500 | 1 / 10.0 | not reached | 2 | 92.00% |"]


def test_save_writes_the_figure_and_render_only_rewrites_it(tmp_path):
    pytest.importorskip("matplotlib")
    records = [{"impl": impl, "model": "vgg5", "head": "spinal", "precision": "bf16", "batch_size": 100,
                "augment": impl == "spinal_jax", "status": "ok", "epoch_seconds": s, "run": 0}
               for impl, s in (("spinal_jax", 0.5), ("torch_compile", 5.0))]
    table = {"environment": gb.environment(), "precision_setting": "x", "runs": [], "records": records}
    gb.save(table, str(tmp_path / "a"))
    png = (tmp_path / "a" / gb.PNG_NAME).read_bytes()
    assert png.startswith(b"\x89PNG")
    assert gb.main(["--render-only", "--merge", str(tmp_path / "a" / gb.JSON_NAME), "--out", str(tmp_path / "b")]) == 0
    assert sorted(os.listdir(tmp_path / "b")) == [gb.JSON_NAME, gb.MD_NAME, gb.PNG_NAME]
    with pytest.raises(SystemExit):
        gb.parse_args(["--render-only"])


def test_a_stopped_run_leaves_a_table_that_says_it_is_partial(tmp_path, monkeypatch):
    """Every snapshot lists the jobs the run has not finished: a run killed after its first job leaves a table
    (JSON and Markdown) naming the rest, and a run that ends lists none."""
    calls = []

    def job(job):
        calls.append(gb.job_label(job))
        if len(calls) > 1:
            raise KeyboardInterrupt  # the run is stopped here, as by a kill
        return {"epoch_seconds": 1.0, "steps_per_second": 1.0}

    monkeypatch.setattr(gb, "run_job_inline", job)
    args = ["--quick", "--no-isolate", "--no-floor", "--impls", "spinal_jax", "--precisions", "fp32"]
    with pytest.raises(KeyboardInterrupt):
        gb.main([*args, "--out", str(tmp_path / "a")])
    table = json.loads((tmp_path / "a" / gb.JSON_NAME).read_text())
    assert len(calls) == 2 and table["pending_jobs"] == calls[1:]
    md = (tmp_path / "a" / gb.MD_NAME).read_text()
    assert "Partial table" in md and calls[1] in md

    calls.clear()
    monkeypatch.setattr(gb, "run_job_inline", lambda job: calls.append(job) or {"epoch_seconds": 1.0, "steps_per_second": 1.0})
    assert gb.main([*args, "--out", str(tmp_path / "b")]) == 0
    table = json.loads((tmp_path / "b" / gb.JSON_NAME).read_text())
    assert len(calls) == 2 and table["pending_jobs"] == []
    assert "Partial table" not in (tmp_path / "b" / gb.MD_NAME).read_text()
