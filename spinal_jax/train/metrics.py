"""Run outputs, each written atomically: ``metrics.jsonl``, ``summary.json``, the curves PNG, TensorBoard events.

``metrics.jsonl`` is rewritten whole from the (checkpointed) history after every epoch, so a resumed
run never holds lines of epochs it re-trains.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from spinal_jax.files import atomic_writer, write_atomic

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"
CONFIG_FILE = "config.json"


def _json_safe(value: Any) -> Any:
    """NaN/inf → None (strict JSON), recursively; tuples → lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_atomic(path, json.dumps(_json_safe(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    with open(path) as f:
        return json.load(f)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically (the whole file each time)."""
    text = "".join(json.dumps(_json_safe(r), sort_keys=True) + "\n" for r in records)
    write_atomic(path, text)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSON-lines file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def preload_plotting() -> None:
    """Import matplotlib in a background thread (if installed), so that ``plot_curves`` after a run's
    last epoch does not wait for the import."""

    def load() -> None:
        with contextlib.suppress(ImportError):
            _pyplot()

    threading.Thread(target=load, name="preload-matplotlib", daemon=True).start()


def plot_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> None:
    """PNG of the loss and accuracy curves per epoch (matplotlib, Agg backend), written atomically."""
    plt = _pyplot()
    epochs = [r["epoch"] + 1 for r in history]
    has_acc = any(r.get("train_accuracy") is not None for r in history)
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 5, 3.6), squeeze=False)
    ax = axes[0][0]
    for key, label in (("train_loss", "train"), ("val_loss", "validation"), ("test_loss", "test")):
        values = [r.get(key) for r in history]
        if any(v is not None for v in values):
            ax.plot(epochs, [math.nan if v is None else v for v in values], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    if has_acc:
        ax = axes[0][1]
        for key, label in (("train_accuracy", "train"), ("val_accuracy", "validation"), ("test_accuracy", "test")):
            values = [r.get(key) for r in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [math.nan if v is None else 100 * v for v in values], label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_writer(path) as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)


class TensorBoardWriter:
    """Scalars per epoch in TensorBoard event files (tensorboardX); a no-op when it is not installed."""

    def __init__(self, logdir: str | os.PathLike, enabled: bool = True) -> None:
        self._writer = None
        if not enabled:
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            log.info("tensorboardX is not installed: no TensorBoard event files")
            return
        self._writer = SummaryWriter(os.fspath(logdir))

    def write(self, step: int, scalars: dict[str, Any]) -> None:
        """Log every finite number in ``scalars`` at ``step``."""
        if self._writer is None:
            return
        for key, value in scalars.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
