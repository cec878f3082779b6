"""``stdlib-bytes``: a local byte-level language-modelling corpus, the Python standard
library's own ``.py`` sources on this machine (nothing downloaded).

Corpus: every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]`` (or ``root``), leaving
out ``site-packages`` / ``dist-packages`` (installed third-party code, not the standard
library), in sorted relative-path order. CPython 3.11 on Linux: ~1,800 files, ~31 MB.

Split (file level, deterministic, independent of which other files exist): a file is held
out when ``crc32(relative path) % 10 == 0`` (about 10% of the files, so no test byte comes
from a file seen in training). Each split is its files' bytes concatenated in order.

Items: non-overlapping windows of ``seq_len + 1`` bytes at stride ``seq_len``; window i gives

    x = bytes[i L : i L + L]          int64 [L]   (L = seq_len; 0..255)
    y = bytes[i L + 1 : i L + L + 1]  int64 [L]   (x shifted by one: the next byte)

``baselines()`` gives the unigram reference an LM must beat: the byte entropy of the
training split, ``H = -sum_b p_b ln p_b`` (nats per byte) and its perplexity ``exp(H)``,
plus the cross-entropy of that unigram model on the held-out split (add-one smoothing) and
its perplexity.
"""
from __future__ import annotations

import math
import os
import sysconfig
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .spec import BuildOptions, DatasetInfo, DatasetSpec, register_dataset

__all__ = ["StdlibBytes", "build_stdlib_bytes", "split_of", "stdlib_files", "verify_stdlib_bytes"]

_EXCLUDED = ("site-packages", "dist-packages", "__pycache__")


def stdlib_files(root: str | Path | None = None) -> tuple[Path, list[Path]]:
    """``(root, sorted .py files under it)``; root None = this Python's standard library.

    Raises:
        FileNotFoundError: the root does not exist or holds no ``.py`` file.
    """
    base = Path(root if root is not None else sysconfig.get_paths()["stdlib"]).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"stdlib-bytes: {base} is not a directory. Pass data.root=DIR "
                                "holding .py files, or data.root=null for this Python's "
                                "standard library.")
    files = []
    for folder, dirs, names in os.walk(base):  # pruned: site-packages is never walked
        dirs[:] = [d for d in dirs if d not in _EXCLUDED]
        files += [Path(folder) / n for n in names if n.endswith(".py")]
    files = sorted((p for p in files if p.is_file()), key=lambda p: p.relative_to(base).as_posix())
    if not files:
        raise FileNotFoundError(f"stdlib-bytes: no .py file under {base}. Pass data.root=DIR "
                                "holding .py files, or data.root=null for this Python's "
                                "standard library.")
    return base, files


def split_of(relative_path: str) -> str:
    """'test' when ``crc32(relative path) % 10 == 0``, else 'train'."""
    return "test" if zlib.crc32(relative_path.encode()) % 10 == 0 else "train"


class StdlibBytes(Dataset):
    """One split of ``stdlib-bytes`` (module docstring): ``(x [L] int64, y [L] int64)``.

    Args:
        split: 'train' or 'test'.  seq_len: L, bytes per window.
        root: the folder of ``.py`` files (None: this Python's standard library).
    """

    def __init__(self, split: str, seq_len: int = 128, root: str | Path | None = None) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"stdlib-bytes: seq_len (data.T) must be a positive int, got "
                             f"{seq_len!r}")
        self.split, self.seq_len = split, seq_len
        self.root, files = stdlib_files(root)
        self.files = [p for p in files if split_of(p.relative_to(self.root).as_posix()) == split]
        if not self.files:
            raise FileNotFoundError(f"stdlib-bytes: no file of {self.root} falls in the {split} "
                                    "split (crc32(path) % 10 == 0 holds out ~10%); add files.")
        self.data = np.frombuffer(b"".join(p.read_bytes() for p in self.files), dtype=np.uint8)
        self.num_windows = max(0, (len(self.data) - 1) // seq_len)
        if self.num_windows == 0:
            raise ValueError(f"stdlib-bytes: the {split} split has {len(self.data)} bytes, fewer "
                             f"than one window of {seq_len + 1}; lower data.T.")

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.num_windows:
            raise IndexError(f"window {i} out of range 0..{self.num_windows - 1}")
        start = i * self.seq_len
        chunk = torch.from_numpy(self.data[start:start + self.seq_len + 1].astype(np.int64))
        return chunk[:-1], chunk[1:]  # [L + 1] -> x [L], y [L] (the next byte of each x)

    def byte_counts(self) -> np.ndarray:
        """Occurrences of each byte value in this split: ``[256]`` int64."""
        return np.bincount(self.data, minlength=256).astype(np.int64)

    def baselines(self, test: StdlibBytes | None = None) -> dict:
        """The unigram reference (module docstring); computed on this (training) split, and
        scored on ``test`` when given."""
        counts = self.byte_counts()
        p = counts / counts.sum()
        nz = p > 0
        entropy = float(-(p[nz] * np.log(p[nz])).sum())
        out = {"unigram_entropy_nats": entropy, "unigram_entropy_bits": entropy / math.log(2),
               "unigram_perplexity": math.exp(entropy), "train_bytes": int(counts.sum())}
        if isinstance(test, StdlibBytes):
            smoothed = (counts + 1) / (counts.sum() + 256)  # add-one: unseen bytes are possible
            tc = test.byte_counts()
            xent = float(-(tc * np.log(smoothed)).sum() / tc.sum())
            out.update(unigram_test_xent_nats=xent, unigram_test_perplexity=math.exp(xent),
                       test_bytes=int(tc.sum()))
        return out


def build_stdlib_bytes(spec: DatasetSpec, split: str, options: BuildOptions) -> StdlibBytes:
    """The ``split`` of stdlib-bytes for ``create_dataset``: windows of ``options.T`` bytes."""
    if options.augment not in (None, False):
        raise ValueError(f"{spec.name} has no augmentation; set data.augment=null, got "
                         f"{options.augment!r}")
    return StdlibBytes(split, seq_len=options.T, root=options.root)


def verify_stdlib_bytes(spec: DatasetSpec, root, deep: bool) -> tuple[list[str], list[str]]:
    """The ``.py`` files under ``root`` (None: this Python's standard library) and the split."""
    try:
        base, files = stdlib_files(root)
    except FileNotFoundError as e:
        return [str(e)], []
    held = sum(split_of(p.relative_to(base).as_posix()) == "test" for p in files)
    return [], [f"{base}: {len(files)} .py files, {held} held out for test"]


@register_dataset
def stdlib_bytes() -> DatasetSpec:
    """stdlib-bytes (module docstring): kind 'text', 256 byte values, nothing to fetch."""
    return DatasetSpec(
        info=DatasetInfo("stdlib-bytes", "text", 256, 1, (1, 1), "none (fixed windows)",
                         "datasets/stdlib-bytes.md", needs_root=False),
        build=build_stdlib_bytes, verify=verify_stdlib_bytes)
