"""Checkpoints: atomic writes, weights-only reads, clear errors.

Layout in a run directory::

    checkpoints/last.pt       every epoch (and every ``run.save_every_steps`` steps)
    checkpoints/last.prev.pt  the ``last`` before it (a hard link: no extra disk)
    checkpoints/best.pt       the epoch with the best test top-1

A write goes to ``<name>.tmp-<pid>``, is flushed to disk, then renamed over the old file
(``os.replace`` is atomic on POSIX): a crash or SIGKILL mid-write leaves the previous
checkpoint whole. Reads use ``torch.load(weights_only=True)``: tensors and plain data only,
no pickle code runs; the config is stored as plain data (``config.config_to_dict``).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["CheckpointError", "find_checkpoint", "load_checkpoint", "run_dir_of",
           "save_checkpoint"]

CKPT_DIR = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do instead."""


def save_checkpoint(state: dict, path: str | Path, keep_previous: bool = False) -> Path:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename).

    Args:
        state: tensors and plain data only (what ``weights_only`` loading accepts).
        keep_previous: first link the current ``path`` to ``<stem>.prev.pt``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            prev = path.with_suffix(".prev.pt")
            prev_tmp = prev.with_name(f"{prev.name}.tmp-{os.getpid()}")
            try:
                os.link(path, prev_tmp)  # no copy; `path` stays valid throughout
            except OSError:
                import shutil

                shutil.copyfile(path, prev_tmp)
            os.replace(prev_tmp, prev)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint with weights-only loading.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: truncated, corrupt, or not a spikemoe checkpoint; the message names
            the previous checkpoint when there is one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001  (zip/unpickling errors have many types)
        prev = path.with_suffix(".prev.pt")
        alt = ""
        if prev.is_file() and prev != path:
            alt = f" The previous checkpoint {prev} is intact: resume=" + str(prev)
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0]}): "
            f"it is truncated or corrupt (a copy cut short, a full disk).{alt} "
            f"Otherwise use best.pt beside it, or start a fresh run.") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a spikemoe training checkpoint (expected a dict "
                              "with 'model' and 'config'; write one with `spikemoe train`).")
    return state


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
