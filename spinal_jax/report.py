"""Reports over finished runs: a Markdown table of default vs spinal heads, JSON rows and curve plots.

Public names:

- ``report(workdir, json_path=None, plots_dir=None) -> str``: scans ``workdir`` (recursively) for run
  directories holding ``summary.json`` (written by ``spinal_jax.train.loop``), groups the runs by
  (config, dataset, model, protocol, epochs) and head, and returns a Markdown report: mean ± sample
  std over seeds for each head beside the original's reported number. The ``paper`` protocol reports
  the best test accuracy over epochs and the last epoch's; the ``clean`` protocol the test accuracy
  at the best-validation epoch and at the last epoch; regression (``mse``) runs the last test loss
  and the minimum training loss. ``json_path`` writes the rows (``collect_rows``) as JSON;
  PNG plots of the curves (default vs spinal, mean ± band over seeds) go to ``plots_dir``
  (default ``<workdir>/plots``; ``plots_dir=""`` disables them). All files are written atomically.
- ``collect_rows(workdir) -> list[dict]``: the rows, each with ``config``, ``model``, ``dataset``,
  ``head``, ``protocol``, ``metric``, ``n_seeds``, ``seeds``, ``epochs``, ``mean``, ``std`` (None for
  one seed), ``original`` (None where none was reported), ``original_source``, ``seconds_per_epoch``.
  Accuracies are fractions in [0, 1].
- ``ORIGINAL_RESULTS``: the original's reported numbers keyed by ``(dataset, model, head)``
  (``ORIGINAL_BY_CONFIG`` keyed by ``(config, head)`` takes precedence); values ``(number, source)``.
- ``original_result(config, dataset, model, head)`` looks one up.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from spinal_jax.files import atomic_writer
from spinal_jax.train import metrics as metrics_io

log = logging.getLogger(__name__)

_C = "supplementary bar chart (ORIGINAL §3.2, pixel-measured ±0.05 pp)"

#: The original's reported numbers (accuracy as a fraction; regression: min training MSE at 200 epochs).
ORIGINAL_RESULTS: dict[tuple[str, str, str], tuple[float, str]] = {
    ("mnist", "vgg5", "spinal"): (0.9972, _C),
    ("fashion_mnist", "vgg5", "spinal"): (0.9468, _C),
    ("kmnist", "vgg5", "spinal"): (0.9915, _C),
    ("qmnist", "vgg5", "spinal"): (0.9968, _C),
    ("emnist/digits", "vgg5", "spinal"): (0.9982, _C),
    ("emnist/letters", "vgg5", "spinal"): (0.9588, "README news 2020-07-10; Papers-with-Code"),
    ("emnist/balanced", "vgg5", "spinal"): (0.9105, "README news 2020-07-10"),
    ("stl10", "wide_resnet101_2", "spinal"): (0.9823, "Transfer_Learning_STL10.py header"),
    ("cifar10", "wide_resnet101_2", "spinal"): (0.9812, "Transfer_Learning_CIFAR10.py header (WRN-101)"),
    ("cifar10", "wide_resnet101_2", "default"): (0.9822, "Transfer_Learning_CIFAR10.py header (WRN-101)"),
    ("cifar100", "wide_resnet101_2", "spinal"): (0.8834, "Transfer_Learning_CIFAR100.py header"),
    ("cinic10", "wide_resnet101_2", "spinal"): (0.9360, "Transfer_Learning_CINIC10.py header"),
    ("caltech101", "wide_resnet101_2", "default"): (0.9611, "Transfer_Learning_Caltech101.py header"),
    ("caltech101", "wide_resnet101_2", "spinal"): (0.9640, "Transfer_Learning_Caltech101.py header"),
    ("fruits360", "wide_resnet101_2", "spinal"): (0.9999, "Transfer_Learning_Fruits360.py comment"),
    ("bird225", "wide_resnet101_2", "spinal"): (0.9956, "Transfer_Learning_Bird225.py header"),
    ("oxford_flowers102", "wide_resnet101_2", "spinal"): (0.9930, "Oxford102 script header (validation)"),
    ("oxford_flowers102", "wide_resnet101_2", "default"): (0.9939, "Oxford102 script header (validation)"),
    ("svhn_cropped", "vgg19_bn", "spinal"): (0.9787, "Transfer_Learning_SVHN.py header (describes WRN)"),
    ("cars196", "wide_resnet101_2", "spinal"): (0.9335, "Transfer_Learning_Stanford_Cars.py header"),
    ("mnist", "vgg19_bn", "spinal"): (0.9975, "transfer-learning-on-mnist-with-vgg notebook"),
    ("fashion_mnist", "wide_resnet101_2", "spinal"): (0.9476, "transfer-learning-on-fashion-mnist notebook"),
    ("monkeys10", "alexnet", "spinal"): (0.9228, "alexnet-spinalnet-fc-tl-10-monkey notebook (validation)"),
    ("regression/multiplication", "regression_net", "spinal"): (0.002217, "Regression script docstring"),
    ("regression/multiplication", "regression_net", "default"): (0.003875, "Regression script docstring"),
    ("regression/sine_multiplication", "regression_net", "spinal"): (0.000910, "Regression script docstring"),
    ("regression/sine_multiplication", "regression_net", "default"): (0.001554, "Regression script docstring"),
    ("regression/addition", "regression_net", "spinal"): (0.000855, "Regression script docstring"),
    ("regression/addition", "regression_net", "default"): (0.000887, "Regression script docstring"),
    ("regression/sine_addition", "regression_net", "spinal"): (0.001219, "Regression script docstring"),
    ("regression/sine_addition", "regression_net", "default"): (0.001086, "Regression script docstring"),
}

#: Per-config numbers where one (dataset, model, head) has several original experiments.
ORIGINAL_BY_CONFIG: dict[tuple[str, str], tuple[float, str]] = {
    ("stl10_wrn101_customizable", "spinal"): (0.9839, "Customizable-SpinalNet-on-STL-10 notebook"),
}

# (summary key, label) per protocol / loss; the first one carries the original's number
_METRICS = {
    ("paper", "cross_entropy"): (
        ("best_test_accuracy", "best test acc"),
        ("test_accuracy", "last-epoch test acc"),
    ),
    ("clean", "cross_entropy"): (
        ("val_selected_test_accuracy", "test acc at best val"),
        ("test_accuracy", "last-epoch test acc"),
    ),
    ("paper", "mse"): (("min_train_loss", "min train MSE"), ("test_loss", "last-epoch test MSE")),
    ("clean", "mse"): (("min_train_loss", "min train MSE"), ("val_selected_test_loss", "test MSE at best val")),
}
_HEADS = ("default", "spinal")


def original_result(config: str, dataset: str, model: str, head: str) -> tuple[float, str] | None:
    """The original's reported number for a run, or None."""
    return ORIGINAL_BY_CONFIG.get((config, head)) or ORIGINAL_RESULTS.get((dataset, model, head))


def _find_runs(workdir: str) -> list[tuple[str, dict[str, Any]]]:
    if not os.path.isdir(workdir):
        raise ValueError(f"report: workdir {workdir!r} is not a directory")
    runs = []
    for root, dirs, files in os.walk(workdir):
        dirs.sort()
        if metrics_io.SUMMARY_FILE in files:
            path = os.path.join(root, metrics_io.SUMMARY_FILE)
            try:
                summary = metrics_io.read_json(path)
            except (OSError, ValueError) as e:
                log.warning("skipping unreadable %s: %s", path, e)
                continue
            if not isinstance(summary, dict) or not {"model", "dataset", "head"} <= set(summary):
                log.warning("skipping %s: not a run summary", path)
                continue
            runs.append((root, summary))
    return runs


def _loss_of(summary: dict[str, Any]) -> str:
    cfg = summary.get("config") or {}
    return cfg.get("loss") or ("mse" if "test_accuracy" not in summary else "cross_entropy")


def _group_key(summary: dict[str, Any]) -> tuple[str, str, str, str, int, str]:
    cfg = summary.get("config") or {}
    name = summary.get("name") or cfg.get("name") or f"{summary['dataset']}_{summary['model']}"
    return (
        str(name),
        str(summary["dataset"]),
        str(summary["model"]),
        str(summary.get("protocol", "paper")),
        int(summary.get("epochs", 0)),
        _loss_of(summary),
    )


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    arr = np.asarray(values, np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None)


def _groups(runs):
    groups: dict[tuple, dict[str, list[tuple[str, dict[str, Any]]]]] = defaultdict(lambda: defaultdict(list))
    for run_dir, s in runs:
        groups[_group_key(s)][str(s["head"])].append((run_dir, s))
    return groups


def _rows_from_groups(groups) -> list[dict[str, Any]]:
    rows = []
    for key in sorted(groups):
        name, dataset, model, protocol, epochs, loss = key
        for head in sorted(groups[key], key=lambda h: (_HEADS.index(h) if h in _HEADS else 9, h)):
            runs = groups[key][head]
            for i, (metric, label) in enumerate(_METRICS.get((protocol, loss), ())):
                values = [s[metric] for _, s in runs if isinstance(s.get(metric), (int, float))]
                if not values:
                    continue
                mean, std = _mean_std(values)
                orig = original_result(name, dataset, model, head) if i == 0 else None
                spe = [s["seconds_per_epoch"] for _, s in runs if isinstance(s.get("seconds_per_epoch"), (int, float))]
                rows.append(
                    {
                        "config": name,
                        "model": model,
                        "dataset": dataset,
                        "head": head,
                        "protocol": protocol,
                        "metric": metric,
                        "metric_label": label,
                        "n_seeds": len(values),
                        "seeds": sorted(int(s.get("seed", -1)) for _, s in runs if isinstance(s.get(metric), (int, float))),
                        "epochs": epochs,
                        "mean": mean,
                        "std": std,
                        "original": None if orig is None else orig[0],
                        "original_source": None if orig is None else orig[1],
                        "seconds_per_epoch": float(np.mean(spe)) if spe else None,
                    }
                )
    return rows


def collect_rows(workdir: str) -> list[dict[str, Any]]:
    """One row per (config, dataset, model, protocol, epochs, head, metric) over the runs in ``workdir``."""
    return _rows_from_groups(_groups(_find_runs(os.fspath(workdir))))


def _fmt(mean: float | None, std: float | None, n: int, is_acc: bool) -> str:
    if mean is None:
        return "—"
    if is_acc:
        text = f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")
        return f"{text}% (n={n})"
    text = f"{mean:.6f}" + (f" ± {std:.6f}" if std is not None else "")
    return f"{text} (n={n})"


def _cell(r: dict[str, Any] | None, is_acc: bool) -> str:
    return _fmt(r["mean"], r["std"], r["n_seeds"], is_acc) if r else "—"


def _orig(r: dict[str, Any] | None, is_acc: bool) -> str:
    if not r:
        return "—"
    if r["original"] is None:
        return "none reported"
    return f"{100 * r['original']:.2f}%" if is_acc else f"{r['original']:.6f}"


def _spe(r: dict[str, Any] | None) -> str:
    return f"{r['seconds_per_epoch']:.2f}" if r and r["seconds_per_epoch"] is not None else "—"


def _markdown(rows: list[dict[str, Any]], workdir: str) -> str:
    lines = [
        f"# SpinalNet reproduction report ({workdir})",
        "",
        "Mean ± sample std over seeds (n = number of seeds). Protocols: `paper` = as the original "
        "(test accuracy drives the learning-rate rule, the best test epoch is reported); `clean` = a "
        "validation split held out of train drives the rule and picks the epoch. "
        "Original = the number the original repository/paper reported (source in the JSON rows).",
        "",
        "| config | dataset | model | protocol | metric | epochs | default | spinal | spinal − default "
        "| original default | original spinal | s/epoch (default / spinal) |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    table: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        table[(r["config"], r["dataset"], r["model"], r["protocol"], r["metric"], r["epochs"])][r["head"]] = r
    for (name, dataset, model, protocol, metric, epochs), by_head in table.items():
        is_acc = "accuracy" in metric
        d, s = by_head.get("default"), by_head.get("spinal")
        if d and s:
            diff = s["mean"] - d["mean"]
            delta = f"{100 * diff:+.2f} pp" if is_acc else f"{diff:+.6f}"
        else:
            delta = "—"
        label = (d or s)["metric_label"]
        lines.append(
            f"| {name} | {dataset} | {model} | {protocol} | {label} | {epochs} | {_cell(d, is_acc)} | "
            f"{_cell(s, is_acc)} | {delta} | {_orig(d, is_acc)} | {_orig(s, is_acc)} | {_spe(d)} / {_spe(s)} |"
        )
    if not rows:
        lines.append("| (no finished runs found) | | | | | | | | | | | |")
    return "\n".join(lines) + "\n"


def _curve(histories: list[list[dict[str, Any]]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Epochs, mean and std over runs of ``key`` (runs cut to the shortest common length)."""
    series = [[r.get(key) for r in h] for h in histories]
    series = [s for s in series if s and all(isinstance(v, (int, float)) for v in s)]
    if not series:
        return None
    n = min(len(s) for s in series)
    arr = np.asarray([s[:n] for s in series], np.float64)
    return np.arange(1, n + 1), arr.mean(0), (arr.std(0, ddof=1) if len(arr) > 1 else np.zeros(n))


def _plot_group(key, by_head, plots_dir: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    name, dataset, model, protocol, epochs, loss = key
    panels = [("train_loss", "train loss")]
    panels += [("test_loss", "test MSE")] if loss == "mse" else [("test_accuracy", "test accuracy (%)")]
    if protocol == "clean":
        panels += [("val_loss", "validation MSE")] if loss == "mse" else [("val_accuracy", "validation accuracy (%)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    drew = False
    for ax, (metric, ylabel) in zip(axes[0], panels, strict=True):
        scale = 100.0 if "accuracy" in metric else 1.0
        for head, color in (("default", "tab:blue"), ("spinal", "tab:red")):
            histories = []
            for run_dir, _ in by_head.get(head, []):
                path = os.path.join(run_dir, metrics_io.METRICS_FILE)
                if os.path.isfile(path):
                    try:
                        histories.append(metrics_io.read_jsonl(path))
                    except (OSError, ValueError) as e:
                        log.warning("skipping unreadable %s: %s", path, e)
            c = _curve(histories, metric)
            if c is None:
                continue
            x, m, sd = c
            ax.plot(x, scale * m, color=color, label=f"{head} (n={len(histories)})")
            ax.fill_between(x, scale * (m - sd), scale * (m + sd), color=color, alpha=0.2, linewidth=0)
            drew = True
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if "loss" in metric:
            ax.set_yscale("log")
        if ax.has_data():
            ax.legend()
    fig.suptitle(f"{name} ({dataset}, {model}, {protocol} protocol): mean ± std over seeds")
    fig.tight_layout()
    out = None
    if drew:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{name}_{protocol}_{epochs}ep")
        out = os.path.join(plots_dir, f"{safe}.png")
        with atomic_writer(out) as f:
            fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return out


def report(workdir: str, json_path: str | None = None, plots_dir: str | None = None) -> str:
    """Markdown report of the finished runs under ``workdir`` (see module docstring)."""
    workdir = os.fspath(workdir)
    runs = _find_runs(workdir)
    groups = _groups(runs)
    rows = _rows_from_groups(groups)
    text = _markdown(rows, workdir)
    if json_path:
        metrics_io.write_json(json_path, rows)
    if plots_dir is None:
        plots_dir = os.path.join(workdir, "plots")
    if plots_dir:
        plots = []
        try:
            for key in sorted(groups):
                p = _plot_group(key, groups[key], plots_dir)
                if p:
                    plots.append(p)
        except ImportError:
            log.warning("matplotlib is not installed: no plots")
        if plots:
            text += "\nPlots:\n" + "".join(f"- {os.path.relpath(p, workdir)}\n" for p in plots)
    return text

