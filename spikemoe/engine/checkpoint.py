"""Checkpoints: atomic writes, weights-only reads, clear errors.

Layout in a run directory::

    checkpoints/last.pt       every epoch (and every ``run.save_every_steps`` steps)
    checkpoints/last.prev.pt  the ``last`` before it (a hard link: no extra disk)
    checkpoints/best.pt       the best epoch (test top-1; lowest perplexity for a language model)

A write goes through ``spikemoe.files.atomic_write`` (temporary name, fsync, atomic rename):
a crash or SIGKILL mid-write leaves the previous checkpoint whole. Reads use ``torch.load(weights_only=True)``: tensors and plain data only,
no pickle code runs; the config is stored as plain data (``config.config_to_dict``).
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from ..files import atomic_write, link_or_copy

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "find_checkpoint", "is_whole_checkpoint", "load_checkpoint", "run_dir_of", "save_checkpoint"]

CKPT_DIR = "checkpoints"
CHECKPOINT_FORMAT = 1  # the layout of a training checkpoint (``Trainer.state_dict``)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do instead."""


def save_checkpoint(state: dict, path: str | Path, keep_previous: bool = False,
                    previous_ok: bool = False) -> Path:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename).

    Args:
        state: tensors and plain data only (what ``weights_only`` loading accepts).
        keep_previous: first link the current ``path`` to ``<stem>.prev.pt`` — only if the
            current file is a whole checkpoint: a corrupt one is replaced without touching
            ``<stem>.prev.pt`` (which may be the only good copy).
        previous_ok: the caller knows the current ``path`` is whole (it wrote or loaded it in
            this process); otherwise it is checked (zip CRCs) before it is kept.
    """
    path = Path(path)

    def keep_the_previous() -> None:
        if keep_previous and path.exists() and (previous_ok or is_whole_checkpoint(path)):
            link_or_copy(path, path.with_suffix(".prev.pt"))

    return atomic_write(path, lambda f: torch.save(state, f), before_replace=keep_the_previous)


def is_whole_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a complete torch zip archive whose every member passes its CRC
    (reads the file once; does not unpickle anything)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None and any(n.endswith("data.pkl")
                                                     for n in archive.namelist())
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def _first_line(error: BaseException) -> str:
    """The first sentence of an exception's message ("no message" for an empty one)."""
    lines = str(error).strip().splitlines()
    return lines[0].split(". ")[0].rstrip(".") if lines else "no message"


def _why_unreadable(path: Path, error: BaseException) -> str:
    """What is wrong with a checkpoint that ``torch.load`` refused, in words."""
    if path.stat().st_size == 0:
        return "it is empty (0 bytes: a copy cut short, a full disk, or a killed write)"
    if isinstance(error, pickle.UnpicklingError) or "Weights only load failed" in str(error):
        return ("it holds Python objects that weights-only loading refuses to run (it was not "
                "written by `spikemoe train`, or it was tampered with); spikemoe never "
                "unpickles code from a checkpoint")
    if isinstance(error, PermissionError):
        return "it cannot be read: permission denied (fix its permissions or ownership)"
    return (f"it is truncated or corrupt ({type(error).__name__}: {_first_line(error)}; "
            "a copy cut short, a full disk)")


def _readable(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return True
    except Exception:  # noqa: BLE001
        return False


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint with weights-only loading.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: empty, truncated, corrupt, unreadable, or not a spikemoe checkpoint;
            the message names the other checkpoints of the run that were checked and load
            (never one that was not checked).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001  (zip/unpickling errors have many types)
        raise CheckpointError(f"checkpoint {path} cannot be used: {_why_unreadable(path, e)}. "
                              f"{_alternatives(path)}") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a spikemoe training checkpoint (expected a dict "
                              "with 'model' and 'config'; write one with `spikemoe train`).")
    return state


def _alternatives(path: Path) -> str:
    """Advice naming the run's other checkpoints that were loaded and found whole."""
    folder = path.parent
    candidates = [folder / n for n in ("last.prev.pt", "best.pt", "last.pt")]
    good, bad = [], []
    for candidate in candidates:
        if candidate.is_file() and candidate.resolve() != path.resolve():
            (good if _readable(candidate) else bad).append(candidate)
    advice = ""
    if good:
        advice = (f"Checked and readable: {', '.join(str(g) for g in good)}; resume from one "
                  f"with resume={good[0]} (it keeps its own step), or evaluate it directly. ")
    if bad:
        advice += f"Also unreadable: {', '.join(str(b) for b in bad)}. "
    if not good:
        advice += "No other readable checkpoint of this run was found: start a fresh run."
    return advice.strip()


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run directory of ``run/checkpoints/x.pt``; the parent folder otherwise."""
    checkpoint = Path(checkpoint)
    if checkpoint.parent.name == CKPT_DIR:
        return checkpoint.parent.parent
    return checkpoint.parent


def find_checkpoint(target: str | Path, prefer: str = "last") -> Path:
    """The checkpoint file ``target`` names: a file, or a run directory's ``prefer`` (then
    the other one).

    Raises:
        FileNotFoundError: the path does not exist, or the run directory has no checkpoint.
    """
    target = Path(target)
    if target.is_file():
        return target
    if not target.is_dir():
        raise FileNotFoundError(f"{str(target)!r} is neither a checkpoint file nor a run "
                                "directory. Runs are under run.out_dir (default runs/).")
    order = ["last", "best"] if prefer == "last" else ["best", "last"]
    for name in order:
        for folder in (target / CKPT_DIR, target):
            if (folder / f"{name}.pt").is_file():
                return folder / f"{name}.pt"
    raise FileNotFoundError(
        f"run directory {target} has no checkpoint (looked for {CKPT_DIR}/last.pt and "
        f"{CKPT_DIR}/best.pt; `last` is written at the end of every epoch, or every "
        "run.save_every_steps steps). The run stopped before its first save: start it again "
        "without resume=, or set run.save_every_steps to save sooner.")
