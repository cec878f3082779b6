"""A run's summary (``summary.json``, the ``final`` record of ``metrics.jsonl``, the last log
line) and its opening log lines.

``summary.json`` holds: ``run_dir``, ``model``, ``data``, ``epochs``, ``steps``, the task's
figures (``task.summary_fields``: ``best_top1``, ``best_epoch``, ``final_top1``,
``final_top5``, ``final_top1_ema``; a language model adds ``final_perplexity`` and
``best_perplexity``), ``stopped`` (a ``run.stop_after_steps`` stop), the dataset's
``baselines`` where it has some, ``samples_per_s`` (mean over the epochs trained),
``skipped_files`` and ``wall_s``.
"""
from __future__ import annotations

import json
from pathlib import Path

from .logging import read_metrics

__all__ = ["banner_lines", "build_summary", "read_finished_summary", "recorded_throughput"]


def build_summary(*, run_dir: Path, model: str, data: str, epochs: int, steps: int,
                  task_fields: dict, stopped: bool, baselines: dict | None,
                  throughput: list[float] | None, skipped_files: list, wall_s: float) -> dict:
    """The summary's entries, in the order ``summary.json`` lists them (module docstring)."""
    return {"run_dir": str(run_dir), "model": model, "data": data, "epochs": epochs,
            "steps": steps, **task_fields, "stopped": stopped,
            **({"baselines": baselines} if baselines else {}),
            "samples_per_s": (sum(throughput) / len(throughput)) if throughput else None,
            "skipped_files": [list(item) for item in skipped_files], "wall_s": wall_s}


def read_finished_summary(run_dir: Path) -> dict | None:
    """The ``summary.json`` of a run that finished (None: missing, unreadable, or written by
    a ``stop_after_steps`` stop)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and not summary.get("stopped") else None


def recorded_throughput(run_dir: Path) -> list[float]:
    """``samples_per_s`` of every epoch record in the run's ``metrics.jsonl``."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return []
    return [r["samples_per_s"] for r in read_metrics(metrics, "epoch") if "samples_per_s" in r]


def banner_lines(run_dir: Path, model: str, params: int, data: str, epochs: int,
                 steps_per_epoch: int, world_size: int, device, baselines: dict | None
                 ) -> list[str]:
    """The first lines of a new run's log: what trains on what, and the data's reference."""
    lines = [f"run {run_dir}: {model} ({params:,} parameters) on {data}, {epochs} epochs x "
             f"{steps_per_epoch} steps, {world_size} process(es) on {device}"]
    if baselines and "unigram_perplexity" in baselines:
        lines.append(f"reference: unigram perplexity {baselines['unigram_perplexity']:.3f} "
                     f"(byte entropy of the training split, "
                     f"{baselines['unigram_entropy_bits']:.3f} bits)")
    return lines
