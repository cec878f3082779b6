"""Event datasets where users already have them: the layouts besides tonic's, found and indexed.

``data.root`` may point at any of these; the first one found, in this order, is read (``spikemoe
data verify`` names it). Nothing is converted or copied: the frame cache is built from them.

    tonic                 tonic 1.7's folder (``layouts.EventLayout``; the dataset card)
    spikingjelly-events   SpikingJelly's ``events_np`` folder, what its dataset classes convert a
                          release into: ``ROOT/events_np/<class>/*.npz`` (CIFAR10-DVS) or
                          ``ROOT/events_np/{train,test}/<class>/*.npz`` (DVS128 Gesture, N-MNIST);
                          ``ROOT`` is the folder given to ``spikingjelly.datasets.X(root)``
    original              the original release as its authors publish it (CIFAR10-DVS: jAER
                          AEDAT 2.0 ``<class>/*.aedat``; DVS128 Gesture: AEDAT 3.1
                          ``DvsGesture/user<NN>_<lighting>.aedat`` + ``*_labels.csv`` +
                          ``trials_to_{train,test}.txt``), unpacked by hand or by SpikingJelly
                          (``ROOT/extract/...``); N-MNIST's original release is tonic's layout
    spikingjelly-frames   SpikingJelly's pre-integrated frames, ``ROOT/frames_number_<T>_split_by_
                          <number|time>/...`` (class folders as in ``events_np``): read only when
                          no events are there, and only for the same ``T`` and integration
                          ('count' is ``split_by='number'``)

Splits are the papers': CIFAR10-DVS's per-class 9:1 head split of the files sorted by name
(``splits.py``; SpikingJelly's file names ``cifar10_<class>_<i>`` sort as tonic's do), whatever
the layout; a ``train``/``test`` folder of links beside the class folders (SpikingJelly's
``CIFAR10DVSTEBNSplit``, another split) is ignored. DVS128 Gesture: the release's
``trials_to_train.txt`` / ``trials_to_test.txt`` (users 1-23 / 24-29 when they are missing), or
SpikingJelly's ``train``/``test`` folders, which it filled from those files.

A gesture of the original release is the time slice ``[startTime_usec, endTime_usec)`` of its
trial's recording, named ``<trial>_<k>`` with ``k`` counting that label's rows in the trial (as
SpikingJelly names its ``events_np`` files): SpikingJelly's 1,176 / 288 samples, where tonic's
release has 1,077 / 264. Labels are the gesture ids minus one, 0-10 (the csv, tonic): SpikingJelly's
``DatasetFolder`` numbers the folders in string order, so its label of folder ``10`` is 2.
"""
from __future__ import annotations

import functools
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import layouts
from .event_datasets import Recording
from .events import UnreadableEventFileError
from .events_original import (
    read_aedat2_cifar10dvs,
    read_aedat3_dvs128,
    read_spikingjelly_events,
)
from .layouts import EventLayout
from .spec import BuildOptions

__all__ = ["SourceLayout", "find_source", "frames_folder_name", "index_recordings",
           "original_cifar10dvs", "original_dvs128_gesture", "spikingjelly_events",
           "spikingjelly_frames"]


@dataclass(frozen=True)
class SourceLayout:
    """One way an event dataset can lie on disk.

    Attributes:
        key: 'tonic', 'spikingjelly-events', 'original' or 'spikingjelly-frames'.
        pattern: the layout in one line, for messages and the dataset cards.
        find: ``(layout, root, options) -> base folder`` if ``root`` holds this layout, else None.
        index: ``(layout, base, split, options) -> recordings`` of ``split`` ('train', 'test',
            or 'all' where the release has no split).
    """

    key: str
    pattern: str
    find: Callable[[EventLayout, Path, BuildOptions], Path | None]
    index: Callable[[EventLayout, Path, str, BuildOptions], list[Recording]]


def frames_folder_name(T: int, integration: str) -> str:
    """SpikingJelly's frame folder for ``T`` frames: ``frames_number_16_split_by_number``."""
    return f"frames_number_{T}_split_by_{'number' if integration == 'count' else 'time'}"


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except PermissionError as e:  # its parent may not be searched
        raise UnreadableEventFileError(path.parent) from e


def _named(folder_name: str) -> Callable[[EventLayout, Path, BuildOptions], Path | None]:
    """Find ``ROOT/<folder_name>``, or ``ROOT`` itself if that is the folder.

    Raises:
        ValueError: SpikingJelly's ``<folder_name>.building`` marker lies beside it: its
            conversion stopped midway, so the folder may lack files.
    """
    def find(layout: EventLayout, root: Path, options: BuildOptions) -> Path | None:
        if _is_dir(root / folder_name):
            base = root / folder_name
        elif root.name == folder_name:
            base = root
        else:
            return None
        marker = base.with_name(f"{base.name}.building")
        if marker.exists():
            raise ValueError(
                f"{layout.name}: SpikingJelly's conversion into {base} did not finish (its "
                f"marker {marker} is still there), so files may be missing. Delete both and "
                "let SpikingJelly convert again, or point root at the original release")
        return base
    return find


def _has_file(folder: Path, suffix: str) -> bool:
    """Whether any file under ``folder`` ends with ``suffix`` (stops at the first)."""
    for _, _, names in os.walk(folder):
        if any(n.endswith(suffix) for n in names):
            return True
    return False


def _listdir(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except PermissionError as e:
        raise UnreadableEventFileError(folder) from e


def _class_folders(layout: EventLayout, folder: Path, suffix: str, ignore: tuple[str, ...] = ()
                   ) -> list[tuple[Path, int]]:
    """``(file, label)`` for every ``folder/<class>/*<suffix>``, sorted by (label, name).

    Raises:
        FileNotFoundError: no such folder, or no file in it.
        ValueError: a folder that is not a class name (nor in ``ignore``).
    """
    if not _is_dir(folder):
        raise FileNotFoundError(f"{layout.name}: no folder {folder}")
    items = []
    for sub in _listdir(folder):
        if not sub.is_dir() or sub.name in ignore:
            continue
        if sub.name not in layout.classes:
            raise ValueError(f"{layout.name}: unknown class folder {sub.name!r} in {folder}; "
                             f"expected one of: {', '.join(layout.classes)}. Rename or remove it")
        label = layout.classes.index(sub.name)
        items += [(p, label) for p in _listdir(sub) if p.name.endswith(suffix)]
    if not items:
        raise FileNotFoundError(f"{layout.name}: no {suffix} files in the class folders of "
                                f"{folder}")
    items.sort(key=lambda it: (it[1], it[0].name))
    return items


def _split_folder(layout: EventLayout, base: Path, split: str) -> Path:
    """``base`` for a release without a split ('all'), else ``base/<split>``."""
    return base if split == "all" else base / split


def _class_path(split: bool) -> str:
    return "{train,test}/<class>" if split else "<class>"


def spikingjelly_events(sensor_hw: tuple[int, int], split: bool) -> SourceLayout:
    """SpikingJelly's ``events_np`` folder of a ``sensor_hw`` dataset, with train/test folders
    if ``split`` (module docstring)."""
    classes = _class_path(split)
    reader = functools.partial(read_spikingjelly_events, sensor_hw=tuple(sensor_hw))

    def index(layout: EventLayout, base: Path, split: str, options: BuildOptions):
        items = _class_folders(layout, _split_folder(layout, base, split), ".npz",
                               ignore=("train", "test") if split == "all" else ())
        return [Recording(p, c, p.stem, reader=reader, source="sj-events") for p, c in items]

    return SourceLayout("spikingjelly-events", f"ROOT/events_np/{classes}/*.npz (SpikingJelly's "
                        "converted events)", _named("events_np"), index)


def spikingjelly_frames(split: bool) -> SourceLayout:
    """SpikingJelly's frame folder for the run's ``T`` and integration, with train/test folders
    if ``split`` (module docstring)."""
    classes = _class_path(split)

    def find(layout: EventLayout, root: Path, options: BuildOptions) -> Path | None:
        return _named(frames_folder_name(options.T, options.integration))(layout, root, options)

    def index(layout: EventLayout, base: Path, split: str, options: BuildOptions):
        items = _class_folders(layout, _split_folder(layout, base, split), ".npz",
                               ignore=("train", "test") if split == "all" else ())
        return [Recording(p, c, p.stem, frames_T=options.T, source="sj-frames")
                for p, c in items]

    return SourceLayout(
        "spikingjelly-frames", f"ROOT/frames_number_<T>_split_by_<number|time>/{classes}/*.npz "
        "(SpikingJelly's frames; the same T and integration only)", find, index)


def original_cifar10dvs() -> SourceLayout:
    """CIFAR10-DVS's original release: jAER AEDAT 2.0 ``<class>/*.aedat`` (module docstring)."""
    def find(layout: EventLayout, root: Path, options: BuildOptions) -> Path | None:
        for base in (root / "extract", root):
            for cls in layout.classes:
                if _is_dir(base / cls) and any(p.suffix == ".aedat" for p in _listdir(base / cls)):
                    return base
        return None

    def index(layout: EventLayout, base: Path, split: str, options: BuildOptions):
        items = _class_folders(layout, base, ".aedat", ignore=("train", "test"))
        return [Recording(p, c, p.stem, reader=read_aedat2_cifar10dvs, source="original")
                for p, c in items]

    return SourceLayout("original", "ROOT/<class>/cifar10_<class>_<i>.aedat (the original jAER "
                        "AEDAT 2.0 release, unzipped; or SpikingJelly's ROOT/extract/<class>/)",
                        find, index)


_TRIAL = re.compile(r"^user(\d+)_\w+$")


def _gesture_rows(csv: Path) -> np.ndarray:
    """``[rows, 3]`` of (gesture id 1-11, start us, end us) from a trial's labels file."""
    try:
        with warnings.catch_warnings():  # a header-only file: "input contained no data"
            warnings.simplefilter("ignore", UserWarning)
            rows = np.loadtxt(csv, dtype=np.int64, delimiter=",", skiprows=1, ndmin=2)
        if rows.size == 0:
            return np.empty((0, 3), np.int64)
    except PermissionError as e:
        raise UnreadableEventFileError(csv) from e
    except ValueError as e:
        raise ValueError(f"dvs128-gesture: cannot read the labels file {csv} ({e}); expected a "
                         "header line, then rows 'class,startTime_usec,endTime_usec'") from e
    if rows.shape[1] != 3 or len(rows) and (rows[:, 0].min() < 1 or rows[:, 0].max() > 11):
        raise ValueError(f"dvs128-gesture: {csv} must hold rows 'class,startTime_usec,"
                         f"endTime_usec' with class 1-11; found {rows.shape[1]} columns, "
                         f"classes {sorted(set(rows[:, 0].tolist()))}")
    return rows


def _gesture_trials(layout: EventLayout, base: Path, split: str) -> list[str]:
    """The trial names (``user01_fluorescent``) of ``split``: the release's trials file, or
    the users of the split (``layout.subjects``) when that file is missing."""
    listed = base / f"trials_to_{split}.txt"
    if listed.is_file():
        try:
            text = listed.read_text()
        except PermissionError as e:
            raise UnreadableEventFileError(listed) from e
        names = [n.strip() for n in text.splitlines() if n.strip()]
        return [Path(n).stem for n in names]
    users = layout.subjects[split]
    trials = [p.stem for p in _listdir(base) if p.suffix == ".aedat"]
    return [t for t in trials if (m := _TRIAL.match(t)) and int(m.group(1)) in users]


def original_dvs128_gesture() -> SourceLayout:
    """DVS128 Gesture's original release: AEDAT 3.1 trials + labels files (module docstring)."""
    def find(layout: EventLayout, root: Path, options: BuildOptions) -> Path | None:
        for base in (root / "extract" / "DvsGesture", root / "DvsGesture", root):
            if _is_dir(base) and any(p.name.endswith("_labels.csv") for p in _listdir(base)):
                return base
        return None

    def index(layout: EventLayout, base: Path, split: str, options: BuildOptions):
        recordings = []
        for trial in _gesture_trials(layout, base, split):
            aedat, csv = base / f"{trial}.aedat", base / f"{trial}_labels.csv"
            for path in (aedat, csv):
                if not path.is_file():
                    raise FileNotFoundError(f"dvs128-gesture: the {split} trial {trial} has no "
                                            f"{path.name} in {base}")
            per_label = [0] * 11
            for row, (gesture, start, end) in enumerate(_gesture_rows(csv)):
                label = int(gesture) - 1
                recordings.append(Recording(aedat, label, f"{trial}_{per_label[label]}",
                                            reader=read_aedat3_dvs128, source="original",
                                            t_range=(int(start), int(end)), part=row))
                per_label[label] += 1
        if not recordings:
            raise FileNotFoundError(f"dvs128-gesture: no {split} trials in {base}")
        recordings.sort(key=lambda r: (r.label, r.name))
        return recordings

    return SourceLayout("original", "ROOT/DvsGesture/user<NN>_<lighting>.aedat + "
                        "user<NN>_<lighting>_labels.csv + trials_to_{train,test}.txt (the original "
                        "AEDAT 3.1 release, untarred; or SpikingJelly's ROOT/extract/DvsGesture/)",
                        find, index)


def _tonic_base(layout: EventLayout, root: Path) -> Path | None:
    """Where tonic's layout would be under ``root`` (``layouts.resolve_base``), or None."""
    try:
        return layouts.resolve_base(layout, root)
    except FileNotFoundError:
        return None


def _tonic(layout: EventLayout) -> SourceLayout:
    def find(layout: EventLayout, root: Path, options: BuildOptions) -> Path | None:
        """``ROOT/<tonic folder>`` or ``ROOT`` with tonic's folders, holding at least one file
        of tonic's extension: a folder's name alone is not enough (SpikingJelly users name
        their roots ``CIFAR10DVS`` too, and an unzipped original release has class folders)."""
        base = _tonic_base(layout, root)
        return base if base is not None and _has_file(base, layout.extension) else None

    def index(layout: EventLayout, base: Path, split: str, options: BuildOptions):
        files, labels = layouts.index_files(layout, base, "train" if split == "all" else split)
        return [Recording(p, c, p.stem) for p, c in zip(files, labels, strict=True)]

    return SourceLayout("tonic", layout.layout, find, index)


def find_source(layout: EventLayout, sources: tuple[SourceLayout, ...], root: str | Path | None,
                options: BuildOptions) -> tuple[SourceLayout, Path]:
    """The first layout (tonic's, then ``sources`` in order) that ``root`` holds, and its base.

    Raises:
        ValueError: no root. FileNotFoundError: none of them there (the message lists every
        accepted layout, and SpikingJelly frame folders of another T or integration).
        UnreadableEventFileError: a folder on the way may not be listed.
    """
    if root is None:
        raise ValueError(f"{layout.name} needs root=DIR, the folder that holds it. "
                         + layout.help("DIR"))
    root = Path(root).expanduser()
    if not _is_dir(root):
        raise FileNotFoundError(f"{layout.name}: the root {root} does not exist. "
                                + layout.help(root))
    listing = _listdir(root)  # raises UnreadableEventFileError naming root, if it may not be
    tonic = _tonic(layout)
    for source in (tonic, *sources):
        base = source.find(layout, root, options)
        if base is not None:
            return source, base
    base = _tonic_base(layout, root)
    if base is not None:  # tonic's folders without files: its index says what is missing
        return tonic, base
    other_frames = sorted(p.name for p in listing if p.name.startswith("frames_number_"))
    hint = ""
    if other_frames and any(s.key == "spikingjelly-frames" for s in sources):
        hint = (f" It holds SpikingJelly frames {', '.join(other_frames)}, but none for T = "
                f"{options.T} with integration {options.integration!r} "
                f"({frames_folder_name(options.T, options.integration)}): set T and integration "
                "to match one (split_by_number is 'count'), or keep the events_np folder.")
    accepted = "; ".join(s.pattern for s in (_tonic(layout), *sources))
    found = ", ".join(p.name for p in listing[:8]) or "nothing"
    raise FileNotFoundError(f"{layout.name}: {root} holds none of the accepted layouts (it "
                            f"holds: {found}).{hint} Accepted: {accepted}. " + layout.help(root))


def index_recordings(layout: EventLayout, source: SourceLayout, base: Path, split: str,
                     options: BuildOptions) -> list[Recording]:
    """The recordings of ``split`` in the layout ``find_source`` found (``source``, ``base``).

    CIFAR10-DVS (no split in any release) gets the papers' per-class 9:1 head split here.
    """
    from .splits import split_indices

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if layout.split_folders is None:
        recordings = source.index(layout, base, "all", options)
        keep = split_indices([r.label for r in recordings], split, train_fraction=0.9)
        return [recordings[i] for i in keep]
    return source.index(layout, base, split, options)
