"""On-disk frame cache: keyed by every parameter that changes the frames, written atomically.

Layout: ``<cache_dir>/<dataset>/<key>/`` where ``key`` is the first 16 hex digits of the SHA-256
of the sorted-JSON ``params`` (dataset, format version, T, integration, size, ...), written
beside the entries as ``params.json`` for people. Changing any parameter changes the key, so
stale frames are never read; old keys stay on disk until deleted (``rm -r`` the folder).

Atomic writes: every entry is written to ``<name>.tmp-<pid>-<random>`` in the same folder,
flushed and fsync'ed, then ``os.replace``'d onto its final name (atomic on POSIX and Windows).
A build killed at any point leaves either the complete file or none under the final name,
plus perhaps a temp file that no reader ever opens; the next build writes the missing entries
and sweeps stray temp files. An entry that is nevertheless unreadable or of the wrong shape
(a disk error, a copy gone wrong) is reported, removed and rebuilt, never returned; one this
process may not read is rebuilt over. A cache folder that may not be written raises
``CacheNotWritableError`` naming it and the three ways to point the cache elsewhere.

``DataLoader`` workers may build entries concurrently: two writers of one entry produce the
same bytes and the last ``os.replace`` wins.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from ..files import atomic_write

__all__ = ["CacheNotWritableError", "FrameCache", "default_cache_dir"]


class CacheNotWritableError(PermissionError, ValueError):
    """The frame cache folder may not be written by this process.

    A ``PermissionError``, and a ``ValueError`` so ``spikemoe`` prints it as one line.
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder)
        super().__init__(
            f"cannot write the frame cache under {self.path}: permission denied. Point the cache "
            "at a folder you may write (data.cache_dir=DIR in a config, --cache-dir DIR for "
            "`spikemoe data prepare`, or $SPIKEMOE_CACHE), or fix that folder with "
            "chmod/ownership. A cache built by another user can be read but not extended."
        )


def default_cache_dir() -> Path:
    """``$SPIKEMOE_CACHE`` if set, else ``~/.cache/spikemoe``."""
    env = os.environ.get("SPIKEMOE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spikemoe"


class FrameCache:
    """One folder of ``.npy`` frame stacks for one parameter set.

    Args:
        cache_dir: the cache root (``default_cache_dir()`` when None).
        params: every parameter the frames depend on; must include ``dataset``. JSON-able.
        shape: the shape every entry must have, e.g. ``(T, 2, H, W)``; entries of another
            shape are treated as corrupt.
    """

    def __init__(self, cache_dir: str | Path | None, params: dict, shape: tuple[int, ...]) -> None:
        if "dataset" not in params:
            raise ValueError(f"cache params need a 'dataset' entry, got {sorted(params)}")
        self.params = dict(params)
        self.shape = tuple(shape)
        blob = json.dumps(self.params, sort_keys=True, default=str).encode()
        self.key = hashlib.sha256(blob).hexdigest()[:16]
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.dir = root / str(self.params["dataset"]) / self.key

    def _ensure_dir(self) -> None:
        if not (self.dir / "params.json").is_file():
            text = json.dumps(self.params, sort_keys=True, indent=1, default=str).encode()
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                atomic_write(self.dir / "params.json", lambda f: f.write(text))
            except PermissionError as e:
                raise CacheNotWritableError(self.dir) from e

    def path(self, entry: str) -> Path:
        """The final path of ``entry`` (a file-system-safe name, no extension)."""
        return self.dir / f"{entry}.npy"

    def has(self, entry: str) -> bool:
        return self.path(entry).is_file()

    def load(self, entry: str) -> np.ndarray | None:
        """The cached array, or None on a miss. A bad entry is warned about, removed, and missed."""
        path = self.path(entry)
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except PermissionError:  # not corrupt: rebuilt and replaced (os.replace needs no read)
            warnings.warn(f"frame cache entry {path} cannot be read (permission denied); "
                          "rebuilding it", stacklevel=2)
            return None
        except (ValueError, OSError, EOFError) as e:  # truncated / garbled file under a final name
            warnings.warn(f"frame cache entry {path} is unreadable ({e}); rebuilding it",
                          stacklevel=2)
            path.unlink(missing_ok=True)
            return None
        if arr.shape != self.shape:
            warnings.warn(f"frame cache entry {path} has shape {list(arr.shape)}, expected "
                          f"{list(self.shape)}; rebuilding it", stacklevel=2)
            path.unlink(missing_ok=True)
            return None
        return arr

    def save(self, entry: str, frames: np.ndarray) -> None:
        """Store integer counts atomically, in the narrowest of uint8 / uint16 / int64 that fits."""
        if frames.shape != self.shape:
            raise ValueError(f"cannot cache frames of shape {list(frames.shape)} in {self.dir}: "
                             f"its entries are {list(self.shape)}")
        self._ensure_dir()
        lo, hi = (int(frames.min()), int(frames.max())) if frames.size else (0, 0)
        dtype = np.int64
        if lo >= 0:
            dtype = np.uint8 if hi <= 255 else np.uint16 if hi <= 65535 else np.int64
        arr = np.ascontiguousarray(frames, dtype)
        try:
            atomic_write(self.path(entry), lambda f: np.save(f, arr, allow_pickle=False))
        except PermissionError as e:
            raise CacheNotWritableError(self.dir) from e

    def sweep_temp_files(self, min_age_s: float = 600.0) -> int:
        """Delete temp files left by killed builds; returns how many were removed.

        Only files older than ``min_age_s`` go, so a build running in another process right
        now (a DataLoader worker, another DDP rank) keeps its temp file.
        """
        if not self.dir.is_dir():
            return 0
        now, removed = time.time(), 0
        for p in self.dir.iterdir():
            try:
                if ".tmp-" in p.name and now - p.stat().st_mtime >= min_age_s:
                    p.unlink()
                    removed += 1
            except FileNotFoundError:  # renamed or removed by its writer meanwhile
                pass
        return removed
