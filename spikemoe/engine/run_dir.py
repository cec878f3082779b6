"""Claiming a run directory: one run, one folder, never shared.

``claim_run_dir`` creates ``out_dir/name`` with ``os.mkdir`` (an exclusive create: of two
processes asking for the same path, exactly one succeeds). A name the user chose
(``run.name``) that is taken is refused; a generated name (``model-dataset-time``) that is
taken, e.g. by a run started in the same second, gets the first free suffix ``-2``, ``-3``, ...
So two concurrent ``spikemoe train`` never write into one folder, and a new run never appends
to the metrics of an old one.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["RunDirError", "claim_run_dir"]


class RunDirError(ValueError):
    """The run directory cannot be created; the message says why and what to do."""


def claim_run_dir(out_dir: str | Path, name: str, chosen: bool, tries: int = 1000) -> Path:
    """Create and return a new, empty run directory under ``out_dir``.

    Args:
        out_dir: the parent folder (``run.out_dir``; created if missing).
        name: the folder name wanted.
        chosen: the user set ``name`` (``run.name``): refuse it if taken. Otherwise suffix it.
        tries: how many suffixes to try before giving up.

    Raises:
        RunDirError: ``out_dir`` cannot be created or written, or a chosen name is taken.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(f"run.out_dir={str(out_dir)!r} exists but is not a folder; set "
                          "run.out_dir to a folder.") from None
    except OSError as e:
        raise RunDirError(f"run.out_dir={str(out_dir)!r} cannot be created ({e.strerror}); set "
                          "run.out_dir to a folder you can write.") from None
    for i in range(1, tries + 1):
        path = out_dir / (name if i == 1 else f"{name}-{i}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            if chosen:
                raise RunDirError(_taken(path)) from None
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise RunDirError(f"cannot create the run directory {path}: {e.strerror}. Set "
                                  "run.out_dir to a folder you can write.") from None
            raise
    raise RunDirError(f"{tries} run directories named {name}[-N] exist in {out_dir}; set "
                      "run.name or clean up run.out_dir.")


def _taken(path: Path) -> str:
    has_ckpt = any((path / "checkpoints").glob("*.pt")) if (path / "checkpoints").is_dir() \
        else False
    if has_ckpt:
        return (f"run directory {path} already holds a run (run.name is taken). Continue it with "
                f"resume={path}, or pick another run.name.")
    return (f"run directory {path} already exists (a run that stopped before its first "
            "checkpoint, or another folder): a new run never shares a folder. Pick another "
            f"run.name, or remove {path} if it holds nothing you need.")
