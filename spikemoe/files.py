"""Writing files so that a crash, a kill or a full disk never leaves a half-written one under
its final name: the one place in spikemoe that does it (checkpoints, the frame cache, metrics,
profiles, plots, converted weights, reports).

The pattern: write to a temporary name in the target's own folder (same file system, so the
rename is atomic), flush and ``fsync``, then ``os.replace`` onto the final name (atomic on
POSIX and Windows). A reader sees the old file or the new one, never a mix; the temporary
file is removed whatever happens (``KeyboardInterrupt`` included).
"""
from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "link_or_copy", "write_bytes_atomic", "write_text_atomic"]


def _temp_beside(path: Path) -> Path:
    # pid + random: two processes (or threads) writing the same name never share a temp file
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], *,
                 before_replace: Callable[[], None] | None = None) -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, fsync it, then rename it
    onto ``path``. The parent folder is created if missing.

    Args:
        path: the final name.
        write: writes the content to the binary file object it is given.
        before_replace: called after the new content is safely on disk and before it takes
            the name (``checkpoint.save_checkpoint`` keeps the previous file there).
    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """``path`` := ``data``, atomically (``atomic_write``)."""
    return atomic_write(path, lambda f: f.write(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``path`` := ``text`` (UTF-8), atomically (``atomic_write``)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """``target`` := ``source`` atomically: a hard link (no extra disk) where the file system
    allows one, else a copy; then renamed over ``target``."""
    source, target = Path(source), Path(target)
    tmp = _temp_beside(target)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
