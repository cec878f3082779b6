"""Run logs on rank 0: ``metrics.jsonl``, TensorBoard events, a text log, tqdm-safe console.

    <run>/metrics.jsonl   one JSON object per line: {"kind": "step"|"epoch"|"final"|"event", ...}
    <run>/tb/             TensorBoard scalars (``tensorboard --logdir runs``)
    <run>/train.log       the console messages, with times

On resume, records after the checkpoint's step are dropped from ``metrics.jsonl`` and
TensorBoard is purged from that step (``SummaryWriter(purge_step=...)``), so both show one
trajectory. Every other rank gets a logger that does nothing.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

import tqdm

from ..files import write_text_atomic

__all__ = ["RunLogger", "read_metrics"]


class _TqdmHandler(logging.Handler):
    """Console messages that do not break the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.tqdm.write(self.format(record), file=sys.stderr)


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no nan/inf; keep them readable
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict]:
    """The records of a ``metrics.jsonl`` (of one ``kind``), in order. A torn last line, as a
    killed run leaves it, is skipped; a damaged line elsewhere raises ``RunFileError`` naming
    file and line (``spikemoe.analysis.read_jsonl``)."""
    from spikemoe.analysis.runlog import read_jsonl

    return read_jsonl(path, kind).records


class RunLogger:
    """Writes a run's logs (rank 0) or nothing (other ranks).

    Args:
        run_dir: the run directory (created if missing).
        enabled: False on ranks other than 0.
        tensorboard: also write TensorBoard events.
        resume_step: the step training restarts from (None for a fresh run).
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True,
                 resume_step: int | None = None) -> None:
        self.enabled, self.run_dir = enabled, Path(run_dir)
        self.log = logging.getLogger(f"spikemoe.run.{os.getpid()}.{id(self)}")
        self.log.propagate = False
        self.log.setLevel(logging.INFO)
        self.tb = None
        self._metrics = None
        self.notes: list[str] = []  # what was repaired on resume (a torn last metrics line)
        if not enabled:
            self.log.addHandler(logging.NullHandler())
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics = self.run_dir / "metrics.jsonl"
        if resume_step is not None and metrics.exists():
            from spikemoe.analysis.runlog import read_jsonl

            log = read_jsonl(metrics)
            self.notes += [log.note] if log.note else []
            keep = [json.dumps(r) for r in log.records if r.get("step", 0) <= resume_step]
            write_text_atomic(metrics, "".join(line + "\n" for line in keep))
        # open for the run's life, closed by close(); line-buffered: a kill loses no record
        self._metrics = open(metrics, "a", buffering=1)  # noqa: SIM115
        fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
        file_handler = logging.FileHandler(self.run_dir / "train.log")
        file_handler.setFormatter(fmt)
        console = _TqdmHandler()
        console.setFormatter(logging.Formatter("%(message)s"))
        self.log.addHandler(file_handler)
        self.log.addHandler(console)
        for note in self.notes:
            self.log.info(f"note: {note}")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge what the killed run logged after the checkpoint (purge_step is inclusive)
            purge = None if resume_step is None else resume_step + 1
            self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge)

    def info(self, message: str) -> None:
        """A console + ``train.log`` line."""
        self.log.info(message)

    def write(self, kind: str, step: int, values: dict) -> None:
        """One ``metrics.jsonl`` record; its scalar numbers also go to TensorBoard at ``step``."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, **{k: _jsonable(v) for k, v in values.items()}}
        self._metrics.write(json.dumps(record) + "\n")
        if self.tb is not None and kind in ("step", "epoch"):
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) \
                        and key not in ("epoch", "step"):
                    self.tb.add_scalar(key if "/" in key else f"{kind}/{key}", value, step)

    def progress(self, total: int, desc: str, show: bool = True) -> tqdm.tqdm:
        """A tqdm bar on rank 0 when ``show`` (disabled elsewhere)."""
        return tqdm.tqdm(total=total, desc=desc, disable=not (self.enabled and show), leave=False,
                         dynamic_ncols=True, file=sys.stderr)

    def close(self) -> None:
        for handler in list(self.log.handlers):
            handler.close()
            self.log.removeHandler(handler)
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None
