"""Fixed per-class train/test splits for datasets that ship without one.

``per_class_head_split`` (CIFAR10-DVS) and ``per_class_interleaved_split`` (digits-dvs).

CIFAR10-DVS has no official split. The papers (Spikformer and its successors, through
SpikingJelly's ``split_to_train_test_set(0.9, dataset, 10, random_split=False)``) put the first
90% of each class's samples in training and the rest in test, in the order of SpikingJelly's
``DatasetFolder``: file names sorted as plain strings (so ``..._10`` precedes ``..._2``).
``per_class_head_split`` is that rule. It depends on the labels and their order only: not on
a seed, the number of DataLoader workers, or the machine.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["per_class_head_split", "per_class_interleaved_split", "split_indices"]


def per_class_head_split(labels: Sequence[int],
                         train_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices: the first ``ceil(n_c * f)`` samples of each class train, the rest test.

    Args:
        labels: ``[N]`` class of every sample, in the canonical order (sorted file names).
        train_fraction: ``f`` in (0, 1); 0.9 for the CIFAR10-DVS papers' 9:1 split.
    Returns:
        ``(train_idx, test_idx)``: ascending int64 index arrays, disjoint, covering ``[0, N)``.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
    labels = np.asarray(labels)
    is_train = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)  # this class's samples, in canonical order
        # SpikingJelly: pos = ceil(n * ratio). The 1e-9 keeps 0.9 * 1000 = 900 from rounding up.
        n_train = math.ceil(len(idx) * train_fraction - 1e-9)
        is_train[idx[:n_train]] = True
    return np.flatnonzero(is_train), np.flatnonzero(~is_train)


def per_class_interleaved_split(labels: Sequence[int], every: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out every ``every``-th sample of each class (its positions every-1, 2 every-1, ...).

    Fixed and stratified like ``per_class_head_split``, but spread over the whole ordering: use
    it where the order carries structure (digits-dvs: ``load_digits`` is grouped by writer, so
    a head/tail split would test on unseen writers only). No random numbers: the same on
    every machine and numpy version.

    Returns:
        ``(train_idx, test_idx)``: ascending int64 index arrays, disjoint, covering ``[0, N)``.
    """
    if every < 2:
        raise ValueError(f"every must be >= 2 (hold out 1 in every samples), got {every}")
    labels = np.asarray(labels)
    rank = np.zeros(len(labels), np.int64)  # position of each sample within its class
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(len(idx))
    held_out = rank % every == every - 1
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def split_indices(labels: Sequence[int], split: str, train_fraction: float | None = None,
                  every: int | None = None) -> np.ndarray:
    """The indices of ``split`` ('train' or 'test'): ``per_class_head_split`` with
    ``train_fraction``, or ``per_class_interleaved_split`` with ``every``."""
    if (train_fraction is None) == (every is None):
        raise ValueError("give exactly one of train_fraction and every")
    train, test = (per_class_head_split(labels, train_fraction) if every is None
                   else per_class_interleaved_split(labels, every))
    if split == "train":
        return train
    if split == "test":
        return test
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
