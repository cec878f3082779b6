"""Event-camera datasets (CIFAR10-DVS, N-MNIST, DVS128 Gesture) as cached ``[T, 2, H, W]`` frames.

One sample (a ``Recording``): event file --(its reader: ``events.read_events`` by extension, or
an original-release / SpikingJelly reader, ``events_original``)--> events [--(a time slice, for a
DVS128 Gesture trial)] --(``frames.events_to_frames``: T frames, optional resize)--> ``[T, 2, H,
W]`` counts --(``cache.FrameCache``: uint8 / uint16 ``.npy``, atomic)--> float32 tensor
--(augmentation)--> x. A SpikingJelly frame file skips the events: its counts are read (and
sum-pooled to ``size`` by an integer factor, which equals resizing the events).

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .cache import FrameCache
from .events import CorruptEventFileError, read_events
from .events_original import read_spikingjelly_frames
from .frames import events_to_frames, to_hw

__all__ = ["FRAMES_VERSION", "EventFrameDataset", "Recording"]

# Bump when the event -> frame code changes what it produces: it is part of every cache key.
FRAMES_VERSION = 1


@dataclass(frozen=True)
class Recording:
    """One sample on disk: a whole event file, a time slice of one, or a frame file.

    Attributes:
        path: the file. label: its class. name: the sample's name, unique within its class
            (the file's stem, e.g. ``cifar10_cat_10``, or SpikingJelly's ``user01_led_3`` for
            the fourth gesture of class 3 in trial ``user01_led``).
        reader: ``path -> (events, (H, W))``; None: ``events.read_events`` by extension.
        t_range: ``[start, end)`` in us: the sample is these events of ``path`` (a DVS128
            Gesture trial's gesture); None: all of them.
        part: the slice's row in the trial's labels file (the order of decoding).
        frames_T: ``path`` is a SpikingJelly frame file of this many frames (no events).
        source: the layout it came from ('' for tonic's; ``source_layouts``), a prefix of its
            cache entry's name, so two layouts' files with one relative path never share one.
    """

    path: Path
    label: int
    name: str = ""
    reader: Callable | None = None
    t_range: tuple[int, int] | None = None
    part: int = 0
    frames_T: int | None = None
    source: str = ""

    def describe(self) -> str:
        """The file, and the slice of it, for messages and ``skipped_files``."""
        if self.t_range is None:
            return str(self.path)
        return f"{self.path} [{self.t_range[0]}, {self.t_range[1]}) us"


class EventFrameDataset(Dataset):
    """Recordings -> ``(x [T, 2, H, W] float32 counts, y int)``.

    Args:
        name: dataset name (part of the cache key), e.g. 'cifar10-dvs'.
        recordings: the samples (``Recording``), in canonical order; plain paths are whole
            event files, with ``labels`` their classes.
        labels: the classes of plain paths (None with ``Recording`` items).
        base: the folder the files are relative to (for cache entry names).
        sensor_hw: the sensor ``(H, W)``. T: frames per sample. integration: 'count' | 'time'.
        size: output ``(H, W)`` or int, None = sensor size (resize on events, ``frames.py``).
        cache_dir: cache root (None: ``$SPIKEMOE_CACHE`` or ``~/.cache/spikemoe``).
        transform: applied to the float frames on every access (train augmentation).
        skip_corrupt: drop undecodable files at ``build_cache`` instead of raising (never
            unreadable ones, see the module docstring).

    Attributes:
        recordings: the samples; ``files`` and ``labels``: their paths and classes.
        skipped_files: ``[(path, reason), ...]`` as strings, the files ``build_cache`` left out
            because ``skip_corrupt`` was set; empty when none were (or before ``build_cache``).
    """

    def __init__(self, name: str, recordings: list[Recording] | list[Path],
                 labels: list[int] | None, base: Path, *,
                 sensor_hw: tuple[int, int], T: int, integration: str = "count",
                 size: int | tuple[int, int] | None = None, cache_dir: str | Path | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 skip_corrupt: bool = False) -> None:
        if labels is not None:
            if len(recordings) != len(labels):
                raise ValueError(f"{len(recordings)} files but {len(labels)} labels")
            recordings = [Recording(Path(f), int(c), Path(f).stem)
                          for f, c in zip(recordings, labels, strict=True)]
        self.name = name
        self.recordings: list[Recording] = list(recordings)
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
        self._entries = [self._entry_name(r) for r in self.recordings]
        self._decoded: tuple[Path, np.ndarray, tuple[int, int]] | None = None  # last whole file

    @property
    def files(self) -> list[Path]:
        return [r.path for r in self.recordings]

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.recordings]

    def _entry_name(self, rec: Recording) -> str:
        path = rec.path
        try:
            rel = path.relative_to(self.base).as_posix()
        except ValueError:
            rel = path.name
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.replace("/", "__"))
        prefix = f"{rec.source}__" if rec.source else ""
        # A gesture is named by its time range: an edited labels file makes a new entry.
        part = "" if rec.t_range is None else f"-{rec.t_range[0]}-{rec.t_range[1]}"
        return f"{prefix}{safe}-{path.stat().st_size}{part}"

    def __len__(self) -> int:
        return len(self.recordings)

    def _decode(self, rec: Recording) -> tuple[np.ndarray, tuple[int, int]]:
        """The recording's events; a trial file sliced into gestures is decoded once in a row."""
        if self._decoded is not None and self._decoded[0] == rec.path:
            events, hw = self._decoded[1:]
        else:
            events, hw = (rec.reader or read_events)(rec.path)
            self._decoded = (rec.path, events, hw) if rec.t_range is not None else None
        if rec.t_range is not None:
            t0, t1 = rec.t_range
            events = events[(events["t"] >= t0) & (events["t"] < t1)]
        return events, hw

    def build_frames(self, i: int) -> np.ndarray:
        """Decode recording ``i`` and count it into ``[T, 2, H, W]`` int64 frames (no cache)."""
        rec = self.recordings[i]
        if rec.frames_T is not None:
            return self._pooled(read_spikingjelly_frames(rec.path, rec.frames_T, self.sensor_hw))
        events, hw = self._decode(rec)
        if tuple(hw) != self.sensor_hw:
            raise CorruptEventFileError(rec.path, f"it declares a {hw[1]} x {hw[0]} sensor, "
                                        f"{self.name} is {self.sensor_hw[1]} x {self.sensor_hw[0]}")
        if len(events) == 0:
            warnings.warn(f"{rec.describe()} is an empty recording (0 events): its frames are "
                          "all zero", stacklevel=2)
        return events_to_frames(events, self.sensor_hw, self.T, self.integration, self.out_hw)

    def _pooled(self, frames: np.ndarray) -> np.ndarray:
        """Sum-pool sensor-size frames ``[T, 2, H, W]`` to ``out_hw`` (an integer factor)."""
        (H, W), (h, w) = self.sensor_hw, self.out_hw
        if (h, w) == (H, W):
            return frames
        if H % h or W % w:
            raise ValueError(
                f"{self.name}: SpikingJelly's frames are {W} x {H}; size {w} x {h} is not an "
                "integer reduction of them. Use a size that divides the sensor, or point root at "
                "a copy with events (SpikingJelly's events_np folder), which resizes any way")
        t = frames.shape[0]
        return frames.reshape(t, 2, h, H // h, w, W // w).sum(axis=(3, 5))  # -> [T, 2, h, w]

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
        # The gestures of one trial file one after another: the file is decoded once.
        missing.sort(key=lambda i: (str(self.recordings[i].path), self.recordings[i].part))
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
        self._decoded = None
        if bad:
            self.skipped_files += [(self.recordings[i].describe(), r) for i, r in sorted(bad.items())]
            keep = [i for i in range(len(self.recordings)) if i not in bad]
            self.recordings = [self.recordings[i] for i in keep]
            self._entries = [self._entries[i] for i in keep]
            names = ", ".join(Path(p).name for p, _ in self.skipped_files[:5])
            more = ", ..." if len(self.skipped_files) > 5 else ""
            warnings.warn(f"{self.name}: skipped {len(bad)} corrupt recording(s) of "
                          f"{len(keep) + len(bad)} ({names}{more}); see .skipped_files",
                          stacklevel=2)
        n_files = len(self._entries) + len(bad)
        return {"built": len(missing) - len(bad), "cached": n_files - len(missing),
                "skipped": list(self.skipped_files), "cache_dir": str(self.cache.dir)}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self._frames(i).astype(np.float32))  # [T, 2, H, W] counts
        if self.transform is not None:
            x = self.transform(x)
        return x, self.recordings[i].label

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, {len(self)} files, T={self.T}, "
                f"integration={self.integration!r}, size={self.out_hw}, cache={self.cache.dir})")
