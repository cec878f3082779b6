"""The tonic event datasets: CIFAR10-DVS, DVS128 Gesture, N-MNIST, one registered spec each.

Each spec holds its on-disk layout (``layouts.EventLayout``, tonic 1.7's), the other layouts
it accepts (``sources``: SpikingJelly's folders and the original releases, ``source_layouts``)
and its recipe's train augmentation; the three share one build (whichever layout ``root`` holds
-> recordings -> ``EventFrameDataset`` with its frame cache built), one verify and one download
(tonic's: where none of the other layouts is found). tonic's layouts:

    cifar10-dvs     ROOT/CIFAR10DVS/<class>/*.aedat4        10 classes x 1000 recordings, 128 x 128
    dvs128-gesture  ROOT/DVSGesture/{ibmGestureTrain,ibmGestureTest}/user<NN>_<lighting>/<label>.npy
                                                    11 classes, users 1-23 train / 24-29 test
    n-mnist         ROOT/NMNIST/{Train,Test}/<digit>/*.bin   60000 / 10000 samples, 34 x 34

Verify (``spikemoe data verify``): the layout found; for tonic's, its problems
(``layouts.layout_problems``), for the others, each split's recordings per class; ``deep=True``
also decodes every file and lists the corrupt, the unreadable (permissions) and
the empty ones, and every file whose sensor is not the dataset's (an AEDAT 4.0 file declares
its own size: a 320 x 240 recording in a 128 x 128 dataset decodes fine, but ``prepare`` and
training would reject it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import layouts
from .event_options import check_event_options, event_transform
from .events import CorruptEventFileError, UnreadableEventFileError, read_events
from .events_original import read_spikingjelly_frames
from .layouts import EventLayout
from .source_layouts import (
    SourceLayout,
    find_source,
    index_recordings,
    original_cifar10dvs,
    original_dvs128_gesture,
    spikingjelly_events,
    spikingjelly_frames,
)
from .spec import BuildOptions, DatasetInfo, DatasetSpec, register_dataset

__all__ = ["EventSpec", "build_event_dataset", "download_event_copy", "verify_event_copy"]


@dataclass(frozen=True, kw_only=True)
class EventSpec(DatasetSpec):
    """A dataset of event files on disk: a ``DatasetSpec``, its tonic ``layout`` and the other
    layouts it reads (``sources``, tried in order after tonic's)."""

    layout: EventLayout
    sources: tuple[SourceLayout, ...] = ()

    def expected_layout(self) -> str:
        return "; or ".join([self.layout.layout] + [s.pattern for s in self.sources])


def build_event_dataset(spec: EventSpec, split: str, options: BuildOptions) -> Dataset:
    """Index the recordings of ``split`` in the layout ``root`` holds and build their frame
    cache (``EventFrameDataset``). CIFAR10-DVS gets the papers' fixed per-class 9:1 split."""
    from .event_datasets import EventFrameDataset

    check_event_options(spec, options)
    transform = event_transform(spec, split, options)
    layout, root = spec.layout, options.root
    if options.download and root is None:
        raise ValueError(f"{spec.name}: download=True needs root=DIR to download into")
    try:
        source, base = find_source(layout, spec.sources, root, options)
    except FileNotFoundError:
        if not options.download:
            raise
        source = None  # none of the accepted layouts yet
    if options.download and (source is None or source.key == "tonic"):
        spec.download(spec, root)  # tonic skips what it finds present
        source, base = find_source(layout, spec.sources, root, options)
    recordings = index_recordings(layout, source, base, split, options)
    ds = EventFrameDataset(spec.name, recordings, None, base, sensor_hw=layout.sensor_hw, T=options.T,
                           integration=options.integration, size=options.size,
                           cache_dir=options.cache_dir, transform=transform,
                           skip_corrupt=options.skip_corrupt)
    ds.build_cache(progress=True)
    return ds


def download_event_copy(spec: EventSpec, root: str | Path | None) -> None:
    """Let tonic download and extract the dataset into ``root`` (``layouts``)."""
    if root is None:
        raise ValueError(f"{spec.name}: downloading needs a root folder to download into "
                         "(--root DIR, or root=DIR)")
    layouts.download_event_dataset(spec.layout, root)


def verify_event_copy(spec: EventSpec, root: Path, deep: bool) -> tuple[list[str], list[str]]:
    """The layout's problems and file counts; with ``deep``, decode every file (module doc)."""
    layout = spec.layout
    options = _verify_options(root)
    try:
        source, base = find_source(layout, spec.sources, root, options)
    except (FileNotFoundError, ValueError) as e:  # ValueError: unreadable, unfinished
        return [str(e)], []
    if source.key != "tonic":
        return _verify_source(spec, source, base, options, deep)
    problems, files = layouts.layout_problems(layout, root)
    notes = [f"{split}: {len(paths)} {layout.extension} files" for split, paths in files.items()]
    if not deep:
        return problems, notes
    return _decode_all(spec, [(p, read_events) for ps in files.values() for p in ps],
                       problems, notes)


def _verify_options(root: Path) -> BuildOptions:
    """The T and integration of a SpikingJelly frame folder in ``root`` (the first by name), so
    that verify finds a copy of frames only, whatever its T; T = 16, 'count' if there is none."""
    root = Path(root)
    try:
        names = [root.name] + (sorted(p.name for p in root.iterdir()) if root.is_dir() else [])
    except PermissionError:  # find_source names the folder
        names = [root.name]
    for name in names:
        m = re.fullmatch(r"frames_number_(\d+)_split_by_(number|time)", name)
        if m:
            return BuildOptions(T=int(m.group(1)),
                                integration="count" if m.group(2) == "number" else "time")
    return BuildOptions(T=16, integration="count")


def _verify_source(spec: EventSpec, source: SourceLayout, base: Path, options: BuildOptions,
                   deep: bool) -> tuple[list[str], list[str]]:
    """Verify a copy in a layout other than tonic's: recordings per split and class."""
    layout = spec.layout
    notes = [f"layout: {source.key}: {source.pattern}"]
    problems, found = [], []
    for split in ("train", "test"):
        try:
            recordings = index_recordings(layout, source, base, split, options)
        except (FileNotFoundError, ValueError) as e:
            problems.append(f"{split}: {e}")
            continue
        counts = np.bincount([r.label for r in recordings], minlength=len(layout.classes))
        notes.append(f"{split}: {len(recordings)} recordings; per class "
                     + ", ".join(f"{c}: {n}" for c, n in zip(layout.classes, counts, strict=True)))
        empty = [c for c, n in zip(layout.classes, counts, strict=True) if n == 0]
        if empty:
            problems.append(f"{split}: no recordings of class {', '.join(empty)}")
        found += recordings
    if not deep:
        return problems, notes
    if source.key == "spikingjelly-frames":
        T = options.T
        readers = [(r.path, lambda p, T=T: (read_spikingjelly_frames(p, T, layout.sensor_hw),
                                            layout.sensor_hw)) for r in found]
        return _decode_all(spec, readers, problems, notes, frames=True)
    paths = {r.path: r.reader or read_events for r in found}  # a trial file once
    return _decode_all(spec, list(paths.items()), problems, notes)


def _decode_all(spec: EventSpec, readers: list, problems: list[str], notes: list[str],
                frames: bool = False) -> tuple[list[str], list[str]]:
    """Decode every ``(path, reader)``; list the corrupt, unreadable, empty, wrong-sensor."""
    sensor_h, sensor_w = spec.layout.sensor_hw
    empty = unreadable = wrong_sensor = unsorted = 0
    for path, reader in tqdm(readers, desc=f"decoding {spec.name}", unit="file"):
        try:
            events, (h, w) = reader(path)
        except UnreadableEventFileError:
            unreadable += 1
            problems.append(f"unreadable: {path}: permission denied (not corrupt; fix "
                            f"with chmod/ownership, e.g. `chmod a+r {path}`)")
            continue
        except CorruptEventFileError as e:
            problems.append(f"corrupt: {path}: {e.reason}")
            continue
        # The reader checked x, y against the size the file declares: if that is the
        # dataset's, the coordinates fit the dataset's sensor too.
        if (h, w) != (sensor_h, sensor_w):
            wrong_sensor += 1
            x_max = int(events["x"].max()) if len(events) else None
            y_max = int(events["y"].max()) if len(events) else None
            problems.append(
                f"wrong sensor: {path} is a {w} x {h} recording (W x H; x up to {x_max}, y up "
                f"to {y_max}), {spec.name} is {sensor_w} x {sensor_h}: not a file of this "
                "dataset's release; replace it with the original")
            continue
        if (events.sum() if frames else len(events)) == 0:
            empty += 1
            notes.append(f"empty recording (0 events, all-zero frames): {path}")
        elif not frames and np.any(np.diff(events["t"]) < 0):
            unsorted += 1
    notes.append(f"decoded {len(readers)} files, {empty} empty, {unreadable} unreadable, "
                 f"{wrong_sensor} of another sensor size than {sensor_w} x {sensor_h}")
    if unsorted:  # frames.py: 'time' slices by timestamp, SpikingJelly by file position
        notes.append(f"{unsorted} files have timestamps out of order: their integration='time' "
                     "frames differ from SpikingJelly's split_by='time' ('count' frames do not)")
    return problems, notes


def _augment_with_flip(flip: bool):
    """The Spikformer event recipe's ``EventFrameAugment`` builder (``augment.py``)."""
    def build(out_hw: tuple[int, int]):
        from .augment import EventFrameAugment  # torchvision: imported only when needed

        return EventFrameAugment(flip=flip)
    return build


def _sources(original: SourceLayout | None, sensor_hw: tuple[int, int], split: bool
             ) -> tuple[SourceLayout, ...]:
    """The layouts besides tonic's, in the order they are tried (``source_layouts``):
    SpikingJelly's events, the original release (where it is not tonic's), SpikingJelly's
    frames."""
    found = (spikingjelly_events(sensor_hw, split), original, spikingjelly_frames(split))
    return tuple(s for s in found if s is not None)


_POLICY = "TrivialAugment-style shear/translate/rotate/cutout"
_FAMILY = {"build": build_event_dataset, "verify": verify_event_copy,
           "download": download_event_copy}


@register_dataset
def cifar10_dvs() -> EventSpec:
    """CIFAR10-DVS (Li et al. 2017): 10 classes x 1000 AEDAT 4.0 recordings, no official split."""
    return EventSpec(
        info=DatasetInfo("cifar10-dvs", "events", 10, 2, (128, 128),
                         f"horizontal flip + {_POLICY} (EventFrameAugment)",
                         "datasets/cifar10-dvs.md"),
        recipe_augment=_augment_with_flip(True), **_FAMILY,
        layout=EventLayout(
            "cifar10-dvs", "CIFAR10DVS",
            ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"),
            (128, 128), ".aedat4", None, {"all": (1000,) * 10},
            "ROOT/CIFAR10DVS/<class>/*.aedat4 with <class> in airplane, automobile, ..., truck",
            "prepare_cifar10dvs.py"),
        sources=_sources(original_cifar10dvs(), (128, 128), split=False))


@register_dataset
def dvs128_gesture() -> EventSpec:
    """DVS128 Gesture (Amir et al. 2017), tonic's ``.npy`` release: users 1-23 train, 24-29 test.

    No flip in the recipe: a mirrored right-hand wave is the left-hand class.
    """
    return EventSpec(
        info=DatasetInfo("dvs128-gesture", "events", 11, 2, (128, 128),
                         f"{_POLICY}, no flip (EventFrameAugment(flip=False)): a mirrored "
                         "right-hand wave is the left-hand class",
                         "datasets/dvs128-gesture.md"),
        recipe_augment=_augment_with_flip(False), **_FAMILY,
        layout=EventLayout(
            "dvs128-gesture", "DVSGesture", tuple(str(c) for c in range(11)), (128, 128), ".npy",
            {"train": "ibmGestureTrain", "test": "ibmGestureTest"}, {},
            "ROOT/DVSGesture/{ibmGestureTrain,ibmGestureTest}/user<NN>_<lighting>/<label 0-10>"
            ".npy (tonic's release)", "prepare_dvs128_gesture.py",
            label_from_stem=True, session_pattern=r"^user(\d+)_\w+$",
            session_example="user<NN>_<lighting>, e.g. user01_fluorescent",
            subjects={"train": range(1, 24), "test": range(24, 30)}),
        sources=_sources(original_dvs128_gesture(), (128, 128), split=True))


@register_dataset
def n_mnist() -> EventSpec:
    """N-MNIST (Orchard et al. 2015): MNIST recorded by an ATIS on saccades, 34 x 34."""
    return EventSpec(
        info=DatasetInfo("n-mnist", "events", 10, 2, (34, 34),
                         "none (not in the papers' recipes)", "datasets/n-mnist.md"),
        **_FAMILY,
        layout=EventLayout(
            "n-mnist", "NMNIST", tuple(str(d) for d in range(10)), (34, 34), ".bin",
            {"train": "Train", "test": "Test"},
            {"train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
             "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)},
            "ROOT/NMNIST/{Train,Test}/<digit 0-9>/*.bin", "prepare_nmnist.py"),
        sources=_sources(None, (34, 34), split=True))
