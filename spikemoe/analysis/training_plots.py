"""A run's metrics over its epochs, read from ``metrics.jsonl``, as a PNG line plot.

Each epoch record (``kind: "epoch"``) holds numbers (``test/top1``, ``measure/grad_cosine``)
and short lists (a model's 1-d metrics, e.g. the fusion gate's ``train/fusion.weights``, one
entry per view). ``metric_series`` pulls one key out as ``(epochs, rows)``; ``plot_metrics``
draws one line per key and list entry, e.g. the gate weight of each view over training.

Drawn on a ``matplotlib.figure.Figure`` (no pyplot state) and written with ``atomic_write``,
as ``plots.py``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..files import atomic_write
from .runlog import read_jsonl

__all__ = ["metric_series", "plot_metrics"]


def metric_series(records: list[dict], key: str) -> tuple[list[int], list[list[float]]]:
    """The epochs that logged ``key`` and its value at each, as rows of floats.

    Args:
        records: epoch records (``read_jsonl(path, kind="epoch").records``).
        key: a record key, e.g. ``"train/fusion.weights"``.
    Returns:
        ``(epochs, rows)``: a number becomes a row of one, a list a row of its entries.
    Raises:
        KeyError: no record holds ``key`` (the message lists the keys that are there).
    """
    epochs, rows = [], []
    for r in records:
        if key in r and r[key] is not None:
            value = r[key]
            epochs.append(int(r.get("epoch", len(epochs) + 1)))
            rows.append([float(v) for v in value] if isinstance(value, list) else [float(value)])
    if not rows:
        known = sorted({k for r in records for k in r if k not in ("kind", "step", "epoch")})
        raise KeyError(f"no epoch record holds {key!r}; the records hold: {', '.join(known)}")
    return epochs, rows


def plot_metrics(metrics_path: str | Path, keys: str | Sequence[str], out_path: str | Path, *,
                 labels: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Plot ``keys`` of a run's epoch records against the epoch, one line per list entry.

    Args:
        metrics_path: the run's ``metrics.jsonl`` (a torn last line is ignored, ``runlog``).
        keys: one key or several, e.g. ``"train/fusion.weights"``.
        out_path: the PNG to write.
        labels: names of a list's entries (e.g. ``["events", "image"]``); default their index.
        title: the figure title (default: the keys).
    Returns:
        ``out_path`` as a ``Path``.
    """
    from matplotlib.figure import Figure

    keys = [keys] if isinstance(keys, str) else list(keys)
    records = read_jsonl(metrics_path, kind="epoch").records
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for key in keys:
        epochs, rows = metric_series(records, key)
        width = max(len(r) for r in rows)
        for j in range(width):
            ys = [r[j] if j < len(r) else float("nan") for r in rows]
            name = key if width == 1 else f"{key}[{labels[j] if labels and j < len(labels) else j}]"
            ax.plot(epochs, ys, marker="o", markersize=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_title(title or ", ".join(keys), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return atomic_write(out_path, lambda f: fig.savefig(f, dpi=110, format="png"))
