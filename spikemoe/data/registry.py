"""``list_datasets()``, ``dataset_info(name)``, ``create_dataset(...)``: lookups in the spec registry.

Event datasets (and digits-dvs) give ``(x [T, 2, H, W] float32 event counts, y int)``; image
datasets give ``(x [3, H, W] float32 normalised, y int)``; the text dataset ``stdlib-bytes``
gives ``(x [T] int64 bytes, y [T] int64 next bytes)`` (``T`` = bytes per window).
``collate.collate_time_major`` batches them for the models (``[T, B, 2, H, W]`` /
``[B, 3, H, W]`` / ``[B, T]`` with targets ``[B, T]``).

The built-in specs register when their family modules are imported, below, in the order
``list_datasets()`` gives: the embedded default first.
"""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

# Imported for their registrations, in list_datasets() order.
from . import digits_dvs, event_specs, image_datasets, text_corpus  # noqa: F401
from .spec import BuildOptions, DatasetInfo, dataset_spec, registered_names

__all__ = ["DatasetInfo", "create_dataset", "dataset_info", "list_datasets"]


def list_datasets() -> list[str]:
    """Registered dataset names, embedded default first."""
    return registered_names()


def dataset_info(name: str) -> DatasetInfo:
    """The ``DatasetInfo`` of ``name``; unknown names raise with the closest matches."""
    return dataset_spec(name).info


def create_dataset(name: str, split: str, *, root: str | Path | None = None, T: int = 16,
                   size: int | tuple[int, int] | None = None, integration: str = "count",
                   augment=None, cache_dir: str | Path | None = None, seed: int = 0,
                   skip_corrupt: bool = False, download: bool = False,
                   views: str = "events") -> Dataset:
    """Build the ``split`` of dataset ``name`` with its spec's ``build``.

    Args:
        name: one of ``list_datasets()``.
        split: 'train' or 'test' (CIFAR10-DVS: the papers' fixed per-class 9:1 split; digits-dvs:
            every 5th digit of each class held out; stdlib-bytes: files with crc32(path) % 10 == 0).
        root: the folder holding the data (layouts: ``datasets/<name>.md``); digits-dvs needs none,
            stdlib-bytes reads this Python's standard library unless given a folder of .py files.
        T: frames per sample (event datasets; ignored for images); bytes per window (text).
        size: output H = W (int) or (H, W); None = native (events: on events, ``frames.py``).
        integration: 'count' (equal event counts per frame, SpikingJelly split_by='number') or
            'time' (equal time windows). Event datasets only.
        augment: None = the recipe's train augmentation on 'train', nothing on 'test';
            False = none; True = the recipe's on either split (for event datasets whose recipe
            has none: ``EventFrameAugment(flip=False)``); a callable = applied to every item's
            tensor instead (after the eval transform for images).
        cache_dir: frame cache root (None: ``$SPIKEMOE_CACHE`` or ``~/.cache/spikemoe``).
        seed: digits-dvs simulation seed (other datasets are fixed recordings).
        skip_corrupt: leave undecodable event files out (with a warning) instead of raising.
        download: let tonic / torchvision download a missing copy (never done otherwise).
        views: 'events' (default: the items above) or another of ``dataset_info(name).views``:
            digits-dvs 'events+image' gives ``({"events": [T, 2, H, W], "image": [1, H, W]}, y)``,
            the frames and the intensity image they were simulated from (``digits_dvs``).
    Returns:
        A ``torch.utils.data.Dataset`` of ``(x, y)``; event datasets have their frame cache built.
        Every one has ``skipped_files: list[tuple[str, str]]``, the ``(path, reason)`` of each
        file ``skip_corrupt`` left out (always empty for datasets without files to skip).
    Raises:
        ValueError / FileNotFoundError: bad arguments, missing root or wrong layout, with the
        layout expected and the command that fixes it.
    """
    spec = dataset_spec(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if views not in spec.info.views:
        raise ValueError(f"dataset {name!r} has no views={views!r}: it offers "
                         f"{', '.join(map(repr, spec.info.views))}. Leave data.views at 'events' "
                         "(the default), or pick a multi-view dataset (digits-dvs has "
                         "'events+image').")
    options = BuildOptions(root=root, T=T, size=size, integration=integration, augment=augment,
                           cache_dir=cache_dir, seed=seed, skip_corrupt=skip_corrupt,
                           download=download, views=views)
    ds = spec.build(spec, split, options)
    if not hasattr(ds, "skipped_files"):  # EventFrameDataset keeps its own
        ds.skipped_files = []
    return ds
