"""Datasets: event recordings -> ``[T, 2, H, W]`` frames, static images, the embedded digits-dvs.

    create_dataset(name, split, *, root, T, size, integration, augment, cache_dir, seed, ...)
    list_datasets(), dataset_info(name), collate_time_major(batch)
    register_dataset(spec | function returning one, replace=False), unregister_dataset(name),
    temporary_dataset(spec), dataset_spec(name)

Each dataset is one registered ``DatasetSpec`` (``spec``): its facts, recipe augmentation,
build, verify and download, defined next to its family's code: ``event_specs`` (with
``layouts``, ``event_datasets``), ``image_datasets`` (with ``image_torchvision``),
``digits_dvs``, ``text_corpus``. The rest, one concept per module: ``events`` (decoders),
``events_original`` (the original releases' and SpikingJelly's formats), ``source_layouts``
(the layouts besides tonic's),
``frames`` (events -> frames), ``cache`` (atomic frame cache), ``splits`` (fixed per-class
split), ``augment`` (frame augmentation), ``collate``, ``registry`` (the lookups),
``inspect`` / ``verify`` / ``prepare`` (what ``spikemoe data`` runs).
"""
from .cache import CacheNotWritableError, FrameCache, default_cache_dir
from .collate import collate_time_major
from .events import EVENT_DTYPE, CorruptEventFileError, UnreadableEventFileError, read_events
from .frames import events_to_frames
from .registry import create_dataset, dataset_info, list_datasets
from .spec import (
    BuildOptions,
    DatasetInfo,
    DatasetSpec,
    dataset_spec,
    register_dataset,
    temporary_dataset,
    unregister_dataset,
)
from .splits import per_class_head_split


def __getattr__(name: str):
    # torchvision costs ~2 s to import: load the augmentation only when it is asked for.
    if name == "EventFrameAugment":
        from .augment import EventFrameAugment

        return EventFrameAugment
    raise AttributeError(f"module 'spikemoe.data' has no attribute {name!r}")


__all__ = [
    "EVENT_DTYPE", "BuildOptions", "CorruptEventFileError", "DatasetInfo", "DatasetSpec",
    "EventFrameAugment", "FrameCache", "collate_time_major", "create_dataset", "dataset_info",
    "dataset_spec", "default_cache_dir", "events_to_frames", "list_datasets",
    "per_class_head_split", "read_events", "register_dataset", "temporary_dataset",
    "unregister_dataset", "CacheNotWritableError", "UnreadableEventFileError",
]
