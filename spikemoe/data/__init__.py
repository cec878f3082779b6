"""Datasets: event recordings -> ``[T, 2, H, W]`` frames, static images, the embedded digits-dvs.

    create_dataset(name, split, *, root, T, size, integration, augment, cache_dir, seed, ...)
    list_datasets(), dataset_info(name), collate_time_major(batch)

One concept per module: ``events`` (decoders), ``frames`` (events -> frames), ``cache``
(atomic frame cache), ``splits`` (fixed per-class split), ``layouts`` (on-disk layouts),
``event_datasets`` / ``image_datasets`` / ``digits_dvs`` (the datasets), ``augment`` (frame
augmentation), ``collate``, ``inspect`` / ``verify`` / ``prepare`` / ``commands`` (CLI).
"""
from .cache import CacheNotWritableError, FrameCache, default_cache_dir
from .collate import collate_time_major
from .events import EVENT_DTYPE, CorruptEventFileError, UnreadableEventFileError, read_events
from .frames import events_to_frames
from .registry import DatasetInfo, create_dataset, dataset_info, list_datasets
from .splits import per_class_head_split


def __getattr__(name: str):
    # torchvision costs ~2 s to import: load the augmentation only when it is asked for.
    if name == "EventFrameAugment":
        from .augment import EventFrameAugment

        return EventFrameAugment
    raise AttributeError(f"module 'spikemoe.data' has no attribute {name!r}")


__all__ = [
    "EVENT_DTYPE", "CorruptEventFileError", "DatasetInfo", "EventFrameAugment", "FrameCache",
    "collate_time_major", "create_dataset", "dataset_info", "default_cache_dir",
    "events_to_frames", "list_datasets", "per_class_head_split", "read_events",
    "CacheNotWritableError", "UnreadableEventFileError",
]
