"""The tonic event datasets: CIFAR10-DVS, DVS128 Gesture, N-MNIST, one registered spec each.

Each spec holds its on-disk layout (``layouts.EventLayout``, tonic 1.7's) and its recipe's
train augmentation; the three share one build (files -> ``EventFrameDataset`` with its frame
cache built), one verify and one download (tonic):

    cifar10-dvs     ROOT/CIFAR10DVS/<class>/*.aedat4        10 classes x 1000 recordings, 128 x 128
    dvs128-gesture  ROOT/DVSGesture/{ibmGestureTrain,ibmGestureTest}/user<NN>_<lighting>/<label>.npy
                                                    11 classes, users 1-23 train / 24-29 test
    n-mnist         ROOT/NMNIST/{Train,Test}/<digit>/*.bin   60000 / 10000 samples, 34 x 34

Verify (``spikemoe data verify``): the layout's problems (``layouts.layout_problems``);
``deep=True`` also decodes every file and lists the corrupt, the unreadable (permissions) and
the empty ones, and every file whose sensor is not the dataset's (an AEDAT 4.0 file declares
its own size: a 320 x 240 recording in a 128 x 128 dataset decodes fine, but ``prepare`` and
training would reject it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import layouts
from .event_options import check_event_options, event_transform
from .events import CorruptEventFileError, UnreadableEventFileError, read_events
from .layouts import EventLayout
from .spec import BuildOptions, DatasetInfo, DatasetSpec, register_dataset

__all__ = ["EventSpec", "build_event_dataset", "download_event_copy", "verify_event_copy"]


@dataclass(frozen=True, kw_only=True)
class EventSpec(DatasetSpec):
    """A dataset of event files on disk: a ``DatasetSpec`` plus its ``layout``."""

    layout: EventLayout

    def expected_layout(self) -> str:
        return self.layout.layout


def build_event_dataset(spec: EventSpec, split: str, options: BuildOptions) -> Dataset:
    """Index the files of ``split`` and build their frame cache (``EventFrameDataset``)."""
    from .event_datasets import EventFrameDataset
    from .splits import split_indices

    check_event_options(spec, options)
    transform = event_transform(spec, split, options)
    layout, root = spec.layout, options.root
    if options.download:
        if root is None:
            raise ValueError(f"{spec.name}: download=True needs root=DIR to download into")
        spec.download(spec, root)
    if layout.split_folders is None:  # CIFAR10-DVS: the papers' fixed per-class 9:1 split
        files, labels = layouts.index_files(layout, root, "train")
        keep = split_indices(labels, split, train_fraction=0.9)
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    else:
        files, labels = layouts.index_files(layout, root, split)
    ds = EventFrameDataset(spec.name, files, labels, layouts.resolve_base(layout, root),
                           sensor_hw=layout.sensor_hw, T=options.T,
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
    problems, files = layouts.layout_problems(layout, root)
    notes = [f"{split}: {len(paths)} {layout.extension} files" for split, paths in files.items()]
    if not deep:
        return problems, notes
    sensor_h, sensor_w = layout.sensor_hw
    paths = [p for ps in files.values() for p in ps]
    empty = unreadable = wrong_sensor = 0
    for path in tqdm(paths, desc=f"decoding {spec.name}", unit="file"):
        try:
            events, (h, w) = read_events(path)
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
        if len(events) == 0:
            empty += 1
            notes.append(f"empty recording (0 events, all-zero frames): {path}")
    notes.append(f"decoded {len(paths)} files, {empty} empty, {unreadable} unreadable, "
                 f"{wrong_sensor} of another sensor size than {sensor_w} x {sensor_h}")
    return problems, notes


def _augment_with_flip(flip: bool):
    """The Spikformer event recipe's ``EventFrameAugment`` builder (``augment.py``)."""
    def build(out_hw: tuple[int, int]):
        from .augment import EventFrameAugment  # torchvision: imported only when needed

        return EventFrameAugment(flip=flip)
    return build


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
            "prepare_cifar10dvs.py"))


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
            subjects={"train": range(1, 24), "test": range(24, 30)}))


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
            "ROOT/NMNIST/{Train,Test}/<digit 0-9>/*.bin", "prepare_nmnist.py"))
