"""report(): synthetic run directories → Markdown, JSON rows, PNG plots."""

import json
import os

import numpy as np
import pytest

from spinal_jax.report import ORIGINAL_RESULTS, collect_rows, original_result, report


def _write_run(root, name, head, seed, protocol="paper", dataset="fashion_mnist", model="vgg5", accs=(0.5, 0.7, 0.6), loss="cross_entropy"):
    run = os.path.join(root, name, f"{head}_{protocol}_seed{seed}")
    os.makedirs(run)
    history = []
    for e, a in enumerate(accs):
        rec = {"epoch": e, "train_loss": 1.0 / (e + 1), "train_accuracy": a, "test_loss": 1.0 - a, "test_accuracy": a,
               "learning_rate": 0.005, "seconds": 2.0}
        if protocol == "clean":
            rec.update(val_accuracy=0.9 - 0.1 * e, val_loss=1.0 - a)
        history.append(rec)
    with open(os.path.join(run, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in history)
    summary = {
        "config": {"name": name, "loss": loss}, "name": name, "dataset": dataset, "model": model, "head": head,
        "seed": seed, "epochs": len(accs), "protocol": protocol, "test_accuracy": accs[-1],
        "best_test_accuracy": max(accs), "final_train_loss": history[-1]["train_loss"], "seconds_per_epoch": 2.0,
    }
    if protocol == "clean":
        sel = int(np.argmax([r["val_accuracy"] for r in history]))
        summary.update(val_selected_test_accuracy=accs[sel], selected_epoch=sel)
    with open(os.path.join(run, "summary.json"), "w") as f:
        json.dump(summary, f)
    return run


def test_report_table_json_and_plots(tmp_path):
    root = str(tmp_path / "runs")
    _write_run(root, "fashion_mnist_vgg5", "default", 0, accs=(0.80, 0.90, 0.85))
    _write_run(root, "fashion_mnist_vgg5", "default", 1, accs=(0.80, 0.92, 0.86))
    _write_run(root, "fashion_mnist_vgg5", "spinal", 0, accs=(0.80, 0.93, 0.90))
    _write_run(root, "fashion_mnist_vgg5", "spinal", 1, accs=(0.81, 0.95, 0.91))
    _write_run(root, "fashion_mnist_vgg5", "spinal", 2, accs=(0.82, 0.94, 0.92))
    _write_run(root, "fashion_mnist_vgg5", "spinal", 0, protocol="clean", accs=(0.80, 0.90, 0.95))
    os.makedirs(os.path.join(root, "unfinished"))  # no summary: ignored
    with open(os.path.join(root, "unfinished", "summary.json"), "w") as f:
        f.write("{not json")  # corrupt: skipped with a warning
    json_path = str(tmp_path / "out" / "rows.json")
    text = report(root, json_path=json_path)
    with open(json_path) as f:
        rows = json.load(f)
    by = {(r["head"], r["protocol"], r["metric"]): r for r in rows}
    d = by[("default", "paper", "best_test_accuracy")]
    assert d["n_seeds"] == 2 and d["seeds"] == [0, 1] and d["epochs"] == 3
    assert d["mean"] == pytest.approx(0.91) and d["std"] == pytest.approx(np.std([0.90, 0.92], ddof=1))
    assert d["original"] is None
    s = by[("spinal", "paper", "best_test_accuracy")]
    assert s["mean"] == pytest.approx(0.94) and s["std"] == pytest.approx(0.01)
    assert s["original"] == pytest.approx(0.9468) and "chart" in s["original_source"]
    assert by[("spinal", "paper", "test_accuracy")]["mean"] == pytest.approx(0.91)
    c = by[("spinal", "clean", "val_selected_test_accuracy")]
    assert c["mean"] == pytest.approx(0.80) and c["std"] is None and c["n_seeds"] == 1  # val best at epoch 0
    assert by[("spinal", "clean", "test_accuracy")]["mean"] == pytest.approx(0.95)
    for r in rows:
        for key in ("model", "dataset", "head", "protocol", "n_seeds", "epochs", "mean", "std", "original"):
            assert key in r
    assert "91.00 ± 1.41% (n=2)" in text and "94.00 ± 1.00% (n=3)" in text
    assert "+3.00 pp" in text and "94.68%" in text and "none reported" in text
    plots = sorted(os.listdir(os.path.join(root, "plots")))
    assert plots == ["fashion_mnist_vgg5_clean_3ep.png", "fashion_mnist_vgg5_paper_3ep.png"]
    with open(os.path.join(root, "plots", plots[1]), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(os.path.join(root, "plots")) if p.startswith(".")]  # no temp files left
    assert collect_rows(root) == rows


def test_report_regression_and_empty(tmp_path):
    root = str(tmp_path)
    run = _write_run(root, "regression_addition", "spinal", 0, dataset="regression/addition", model="regression_net", loss="mse")
    with open(os.path.join(run, "summary.json")) as f:
        s = json.load(f)
    for k in ("test_accuracy", "best_test_accuracy"):
        s.pop(k)
    s.update(min_train_loss=0.001, test_loss=0.002)
    with open(os.path.join(run, "summary.json"), "w") as f:
        json.dump(s, f)
    rows = collect_rows(root)
    assert [r["metric"] for r in rows] == ["min_train_loss", "test_loss"]
    assert rows[0]["original"] == pytest.approx(0.000855)
    text = report(root, plots_dir="")
    assert "0.001000 (n=1)" in text and not os.path.exists(os.path.join(root, "plots"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no finished runs" in report(str(empty))
    with pytest.raises(ValueError, match="not a directory"):
        report(str(tmp_path / "missing"))


def test_original_lookup():
    assert original_result("stl10_wrn101_customizable", "stl10", "wide_resnet101_2", "spinal")[0] == 0.9839
    assert original_result("stl10_wrn101", "stl10", "wide_resnet101_2", "spinal")[0] == 0.9823
    assert original_result("x", "fashion_mnist", "vgg5", "default") is None
    assert all(0 < v < 1 for v, _ in ORIGINAL_RESULTS.values())
