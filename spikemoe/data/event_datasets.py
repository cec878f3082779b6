"""Event-camera datasets (CIFAR10-DVS, N-MNIST, DVS128 Gesture) as cached ``[T, 2, H, W]`` frames.

One sample: event file --(``events.read_events``: tonic / aedat decoders)--> events
--(``frames.events_to_frames``: T frames, optional resize)--> ``[T, 2, H, W]`` counts
--(``cache.FrameCache``: uint8 / uint16 ``.npy``, atomic)--> float32 tensor --(augmentation)--> x.

Frames are built once per parameter set: ``build_cache()`` builds every missing entry with a
tqdm bar (``create_dataset`` calls it; ``datasets/prepare_*.py`` call it ahead of training),
and ``__getitem__`` rebuilds an entry that has gone missing since. Cache entries are named
after the file's path relative to the dataset root and its size, so both splits share them
and a replaced file is rebuilt.

Bad files: an undecodable file raises ``CorruptEventFileError`` naming it, unless
``skip_corrupt=True``: then ``build_cache`` drops it from the index, warns with the count and
names, and lists it in ``self.skipped_files`` as ``(path, reason)`` strings, for the run's
``summary.json`` and ``train.log``. A file this process may not read
raises ``UnreadableEventFileError`` even with ``skip_corrupt``: it is not corrupt, and a run
must not silently train on less data because of a file mode. An empty recording (zero events)
gives all-zero frames and a warning, never a crash or a shape change.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .cache import FrameCache
from .events import CorruptEventFileError, read_events
from .frames import events_to_frames, to_hw

__all__ = ["FRAMES_VERSION", "EventFrameDataset"]

# Bump when the event -> frame code changes what it produces: it is part of every cache key.
FRAMES_VERSION = 1


class EventFrameDataset(Dataset):
    """Event files -> ``(x [T, 2, H, W] float32 counts, y int)``.

    Args:
        name: dataset name (part of the cache key), e.g. 'cifar10-dvs'.
        files: event files, in canonical order. labels: their classes.
        base: the folder ``files`` are relative to (for cache entry names).
        sensor_hw: the sensor ``(H, W)``. T: frames per sample. integration: 'count' | 'time'.
        size: output ``(H, W)`` or int, None = sensor size (resize on events, ``frames.py``).
        cache_dir: cache root (None: ``$SPIKEMOE_CACHE`` or ``~/.cache/spikemoe``).
        transform: applied to the float frames on every access (train augmentation).
        skip_corrupt: drop undecodable files at ``build_cache`` instead of raising (never
            unreadable ones, see the module docstring).

    Attributes:
        skipped_files: ``[(path, reason), ...]`` as strings, the files ``build_cache`` left out
            because ``skip_corrupt`` was set; empty when none were (or before ``build_cache``).
    """

    def __init__(self, name: str, files: list[Path], labels: list[int], base: Path, *,
                 sensor_hw: tuple[int, int], T: int, integration: str = "count",
                 size: int | tuple[int, int] | None = None, cache_dir: str | Path | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 skip_corrupt: bool = False) -> None:
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.name = name
        self.files = [Path(f) for f in files]
        self.labels = [int(c) for c in labels]
        self.base = Path(base)
        self.sensor_hw = tuple(sensor_hw)
        self.T, self.integration = int(T), integration
        self.out_hw = to_hw(size, self.sensor_hw)
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.skipped_files: list[tuple[str, str]] = []
        params = {"dataset": name, "frames_version": FRAMES_VERSION, "T": self.T,
                  "integration": integration, "size": list(self.out_hw),
                  "sensor": list(self.sensor_hw)}
        self.cache = FrameCache(cache_dir, params, (self.T, 2, *self.out_hw))
        self._entries = [self._entry_name(f) for f in self.files]

    def _entry_name(self, path: Path) -> str:
        try:
            rel = path.relative_to(self.base).as_posix()
        except ValueError:
            rel = path.name
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.replace("/", "__"))
        return f"{safe}-{path.stat().st_size}"

    def __len__(self) -> int:
        return len(self.files)

    def build_frames(self, i: int) -> np.ndarray:
        """Decode file ``i`` and count it into ``[T, 2, H, W]`` int64 frames (no cache)."""
        events, hw = read_events(self.files[i])
        if tuple(hw) != self.sensor_hw:
            raise CorruptEventFileError(self.files[i], f"it declares a {hw[1]} x {hw[0]} sensor, "
                                        f"{self.name} is {self.sensor_hw[1]} x {self.sensor_hw[0]}")
        if len(events) == 0:
            warnings.warn(f"{self.files[i]} is an empty recording (0 events): its frames are "
                          "all zero", stacklevel=2)
        return events_to_frames(events, self.sensor_hw, self.T, self.integration, self.out_hw)

    def _frames(self, i: int) -> np.ndarray:
        frames = self.cache.load(self._entries[i])
        if frames is None:
            frames = self.build_frames(i)
            self.cache.save(self._entries[i], frames)
        return frames

    def build_cache(self, progress: bool = True) -> dict:
        """Build every missing cache entry (tqdm bar); drop corrupt files if ``skip_corrupt``.

        Returns:
            ``{"built": n, "cached": n, "skipped": [(path, reason), ...], "cache_dir": path}``.
        Raises:
            CorruptEventFileError: an undecodable file, when ``skip_corrupt`` is False.
            UnreadableEventFileError: a file this process may not read (always).
        """
        self.cache.sweep_temp_files()
        missing = [i for i, e in enumerate(self._entries) if not self.cache.has(e)]
        bad: dict[int, str] = {}
        h, w = self.out_hw
        desc = f"{self.name} frames (T={self.T}, {self.integration}, {h}x{w})"
        for i in tqdm(missing, desc=desc, unit="file", disable=not progress or not missing):
            try:
                self.cache.save(self._entries[i], self.build_frames(i))
            except CorruptEventFileError as e:
                if not self.skip_corrupt:
                    raise
                bad[i] = e.reason
        if bad:
            self.skipped_files += [(str(self.files[i]), r) for i, r in bad.items()]
            keep = [i for i in range(len(self.files)) if i not in bad]
            self.files = [self.files[i] for i in keep]
            self.labels = [self.labels[i] for i in keep]
            self._entries = [self._entries[i] for i in keep]
            names = ", ".join(Path(p).name for p, _ in self.skipped_files[:5])
            more = ", ..." if len(self.skipped_files) > 5 else ""
            warnings.warn(f"{self.name}: skipped {len(bad)} corrupt file(s) of "
                          f"{len(keep) + len(bad)} ({names}{more}); see .skipped_files",
                          stacklevel=2)
        n_files = len(self._entries) + len(bad)
        return {"built": len(missing) - len(bad), "cached": n_files - len(missing),
                "skipped": list(self.skipped_files), "cache_dir": str(self.cache.dir)}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self._frames(i).astype(np.float32))  # [T, 2, H, W] counts
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, {len(self)} files, T={self.T}, "
                f"integration={self.integration!r}, size={self.out_hw}, cache={self.cache.dir})")
