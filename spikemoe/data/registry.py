"""The dataset registry: ``list_datasets()``, ``dataset_info(name)``, ``create_dataset(...)``.

Event datasets (and digits-dvs) give ``(x [T, 2, H, W] float32 event counts, y int)``; image
datasets give ``(x [3, H, W] float32 normalised, y int)``; the text dataset ``stdlib-bytes``
gives ``(x [T] int64 bytes, y [T] int64 next bytes)`` (``T`` = bytes per window).
``collate.collate_time_major`` batches them for the models (``[T, B, 2, H, W]`` /
``[B, 3, H, W]`` / ``[B, T]`` with targets ``[B, T]``).
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from .frames import INTEGRATIONS, to_hw

__all__ = ["DatasetInfo", "create_dataset", "dataset_info", "list_datasets"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is, for model building and messages.

    Attributes:
        name: registry name. kind: 'events' (items ``[T, 2, H, W]``), 'images' (``[C, H, W]``)
            or 'text' (byte ids ``[T]`` with next-byte targets ``[T]``; num_classes = 256 is the
            vocabulary, in_channels and native_size are 1 and (1, 1), unused).
        num_classes, in_channels: model head and stem sizes.
        native_size: ``(H, W)`` of the sensor (events) or the recipe's crop (images).
        train_augment: the recipe's train augmentation, in words (``augment=None``).
        card: the dataset card under ``datasets/``.
    """

    name: str
    kind: str
    num_classes: int
    in_channels: int
    native_size: tuple[int, int]
    train_augment: str
    card: str
    needs_root: bool = True


_POLICY = "TrivialAugment-style shear/translate/rotate/cutout"
_EVENT_AUG = f"horizontal flip + {_POLICY} (EventFrameAugment)"
_NO_FLIP = f"{_POLICY}, no flip (EventFrameAugment(flip=False))"
_CIFAR_AUG = "RandomCrop(pad 4), flip, RandAugment(1, m9), random erasing 0.25"
_INFOS = {i.name: i for i in [
    DatasetInfo("digits-dvs", "events", 10, 2, (32, 32),
                "none (a flipped digit is another shape; the demo trains for minutes)",
                "datasets/digits-dvs.md", needs_root=False),
    DatasetInfo("cifar10-dvs", "events", 10, 2, (128, 128), _EVENT_AUG, "datasets/cifar10-dvs.md"),
    DatasetInfo("dvs128-gesture", "events", 11, 2, (128, 128),
                _NO_FLIP + ": a mirrored right-hand wave is the left-hand class",
                "datasets/dvs128-gesture.md"),
    DatasetInfo("n-mnist", "events", 10, 2, (34, 34), "none (not in the papers' recipes)",
                "datasets/n-mnist.md"),
    DatasetInfo("cifar10", "images", 10, 3, (32, 32),
                _CIFAR_AUG, "datasets/cifar.md"),
    DatasetInfo("cifar100", "images", 100, 3, (32, 32),
                _CIFAR_AUG, "datasets/cifar.md"),
    DatasetInfo("imagenet", "images", 1000, 3, (224, 224),
                "RandomResizedCrop, flip, RandAugment(2, m9), random erasing 0.25",
                "datasets/imagenet.md"),
    DatasetInfo("stdlib-bytes", "text", 256, 1, (1, 1), "none (fixed windows)",
                "datasets/stdlib-bytes.md", needs_root=False),
]}

_RECIPE_EVENT_FLIP: dict[str, bool | None] = {  # None: the recipe has no augmentation
    "digits-dvs": None, "n-mnist": None, "cifar10-dvs": True, "dvs128-gesture": False,
}


def list_datasets() -> list[str]:
    """Registered dataset names, embedded default first."""
    return list(_INFOS)


def dataset_info(name: str) -> DatasetInfo:
    """The ``DatasetInfo`` of ``name``; unknown names raise with the closest matches."""
    try:
        return _INFOS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), _INFOS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}.{hint} Known: {', '.join(_INFOS)}.") from None


def _event_transform(name: str, split: str, augment) -> Callable | None:
    """``augment``: None = recipe on train only; True = recipe on any split; False = none;
    a callable = that instead of the recipe (on any split)."""
    if augment is None:
        augment = split == "train" and _RECIPE_EVENT_FLIP[name] is not None
    if augment is False:
        return None
    if augment is True:  # asked for: the recipe's, or the no-flip policy where the recipe has none
        from .augment import EventFrameAugment  # torchvision: imported only when needed

        return EventFrameAugment(flip=bool(_RECIPE_EVENT_FLIP[name]))
    if callable(augment):
        return augment
    raise ValueError(f"augment must be None, True, False or a callable, got {augment!r}")


def create_dataset(name: str, split: str, *, root: str | Path | None = None, T: int = 16,
                   size: int | tuple[int, int] | None = None, integration: str = "count",
                   augment=None, cache_dir: str | Path | None = None, seed: int = 0,
                   skip_corrupt: bool = False, download: bool = False) -> Dataset:
    """Build the ``split`` of dataset ``name``.

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
    Returns:
        A ``torch.utils.data.Dataset`` of ``(x, y)``; event datasets have their frame cache built.
        Every one has ``skipped_files: list[tuple[str, str]]``, the ``(path, reason)`` of each
        file ``skip_corrupt`` left out (always empty for datasets without files to skip).
    Raises:
        ValueError / FileNotFoundError: bad arguments, missing root or wrong layout, with the
        layout expected and the command that fixes it.
    """
    info = dataset_info(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if info.kind == "text":
        if augment not in (None, False):
            raise ValueError(f"{name} has no augmentation; set data.augment=null, got {augment!r}")
        from .text_corpus import StdlibBytes

        return _with_skipped_files(StdlibBytes(split, seq_len=T, root=root))
    if info.kind == "images":
        if not (isinstance(augment, bool) or augment is None or callable(augment)):
            raise ValueError(f"augment must be None, True, False or a callable, got {augment!r}")
        from .image_datasets import create_image_dataset

        out = to_hw(size, info.native_size)
        if out[0] != out[1]:
            raise ValueError(f"{name}: size must be square for image datasets, got {size!r}")
        train_aug = (split == "train") if augment is None else augment is True
        extra = augment if callable(augment) and not isinstance(augment, bool) else None
        return _with_skipped_files(create_image_dataset(
            name, split, root, size=out[0], train_aug=train_aug, extra=extra, download=download))
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int (frames per sample), got {T!r}")
    if integration not in INTEGRATIONS:
        raise ValueError(f"integration must be one of {INTEGRATIONS}, got {integration!r}")
    to_hw(size, info.native_size)  # validates size
    transform = _event_transform(name, split, augment)
    if name == "digits-dvs":
        from .digits_dvs import DigitsDVS

        return _with_skipped_files(DigitsDVS(split, T=T, integration=integration, size=size,
                                             seed=seed, cache_dir=cache_dir, transform=transform))
    return _create_event_dataset(name, split, root, T=T, size=size, integration=integration,
                                 transform=transform, cache_dir=cache_dir,
                                 skip_corrupt=skip_corrupt, download=download)


def _with_skipped_files(ds: Dataset) -> Dataset:
    """Give ``ds`` an empty ``skipped_files`` unless it has its own (``EventFrameDataset``)."""
    if not hasattr(ds, "skipped_files"):
        ds.skipped_files = []
    return ds


def _create_event_dataset(name, split, root, *, T, size, integration, transform, cache_dir,
                          skip_corrupt, download):
    from .event_datasets import EventFrameDataset
    from .layouts import EVENT_LAYOUTS, download_event_dataset, index_files, resolve_base
    from .splits import split_indices

    layout = EVENT_LAYOUTS[name]
    if download:
        if root is None:
            raise ValueError(f"{name}: download=True needs root=DIR to download into")
        download_event_dataset(name, root)
    if layout.split_folders is None:  # CIFAR10-DVS: the papers' fixed per-class 9:1 split
        files, labels = index_files(name, root, "train")
        keep = split_indices(labels, split, train_fraction=0.9)
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    else:
        files, labels = index_files(name, root, split)
    ds = EventFrameDataset(name, files, labels, resolve_base(layout, root),
                           sensor_hw=layout.sensor_hw, T=T, integration=integration, size=size,
                           cache_dir=cache_dir, transform=transform, skip_corrupt=skip_corrupt)
    ds.build_cache(progress=True)
    return ds
