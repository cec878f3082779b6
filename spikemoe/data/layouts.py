"""Event datasets on disk: where the files are, which class each file is, and what is wrong.

An ``EventLayout`` describes one tonic 1.7 layout (the folder ``tonic.datasets.X(save_to=ROOT)``
creates), so a copy tonic downloaded works as is; ``ROOT`` may also point at the dataset
folder itself. Each event dataset's layout is part of its spec (``event_specs.py``).

Files are listed sorted by (class, file name) as plain strings: the order the CIFAR10-DVS
split is defined in (``splits.py``). ``index_files`` raises on anything it cannot place: a
missing root, no files where the layout says, a class folder (or labelled file) with an unknown
name, a file outside a session folder where the layout has them, or a folder under it that this
process may not list (``Path.rglob`` would skip it silently, and a run would train on fewer
files). ``layout_problems`` returns every problem instead of raising, for ``spikemoe data
verify``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .events import UnreadableEventFileError

__all__ = ["EventLayout", "download_event_dataset", "index_files", "layout_problems",
           "resolve_base"]


@dataclass(frozen=True)
class EventLayout:
    """How one tonic event dataset is laid out on disk.

    Attributes:
        name: the dataset's registry name (for messages).
        folder: tonic's folder under ``save_to``, which is also its ``tonic.datasets`` class.
        classes: class names, in label order: folder names, or file stems if
            ``label_from_stem``.
        sensor_hw: ``(H, W)`` of the sensor. extension: the event files' suffix.
        split_folders: split -> subfolder; None where the release has no split (CIFAR10-DVS).
        expected_per_class: split ('all' if no split) -> files per class in the release.
        layout: the layout in one line, for messages. prepare: its ``datasets/`` script.
        label_from_stem: the class is the file's stem (DVS Gesture: ``<label>.npy``).
        session_pattern: a regex every file's folder must match, its group 1 the subject
            number (DVS Gesture: ``user<NN>_<lighting>``); None: no session folders.
        session_example: the session folder name in words, for messages.
        subjects: split -> the subject numbers that belong to it (with ``session_pattern``).
    """

    name: str
    folder: str
    classes: tuple[str, ...]
    sensor_hw: tuple[int, int]
    extension: str
    split_folders: dict[str, str] | None
    expected_per_class: dict[str, tuple[int, ...]]
    layout: str
    prepare: str
    label_from_stem: bool = False
    session_pattern: str | None = None
    session_example: str = ""
    subjects: dict[str, range] = field(default_factory=dict)

    def help(self, root: Path | str) -> str:
        return (f"Expected layout: {self.layout}. Check a copy with `spikemoe data verify "
                f"{self.name} --root {root}`; fetch and pre-build it with `python "
                f"datasets/{self.prepare} --root {root} --download` (see datasets/{self.name}.md).")

    def session_of(self, path: Path) -> re.Match | None:
        """The match of ``session_pattern`` on the folder holding ``path`` (None: no match)."""
        return re.match(self.session_pattern, path.parent.name) if self.session_pattern else None


def resolve_base(layout: EventLayout, root: str | Path | None) -> Path:
    """``ROOT/<folder>`` if it exists, else ``ROOT`` itself if it looks like that folder.

    Raises:
        ValueError: no root given. FileNotFoundError: no such root, or nothing of the layout in
        it. UnreadableEventFileError: the root (or its dataset folder) may not be listed.
    """
    try:
        return _resolve_base(layout, root)
    except PermissionError as e:
        if isinstance(e, UnreadableEventFileError):
            raise
        raise UnreadableEventFileError(e.filename or root) from e


def _resolve_base(layout: EventLayout, root: str | Path | None) -> Path:
    if root is None:
        raise ValueError(f"{layout.name} needs root=DIR, the folder you downloaded it to. "
                         + layout.help("DIR"))
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{layout.name}: the root {root} does not exist. "
                                + layout.help(root))
    if (root / layout.folder).is_dir():
        return root / layout.folder
    subfolders = layout.split_folders.values() if layout.split_folders else layout.classes
    if root.name == layout.folder or any((root / s).is_dir() for s in subfolders):
        return root
    found = sorted(p.name for p in root.iterdir())[:8]
    raise FileNotFoundError(
        f"{layout.name}: found neither {root / layout.folder} nor the folders it holds in {root} "
        f"(it holds: {', '.join(found) or 'nothing'}). " + layout.help(root))


def _class_of(layout: EventLayout, path: Path) -> str:
    """The class name of one file: its folder, or its file stem (``label_from_stem``)."""
    return path.stem if layout.label_from_stem else path.parent.name


def _files_under(folder: Path, extension: str) -> tuple[list[Path], list[Path]]:
    """Files named ``*<extension>`` under ``folder``, and the folders that could not be listed.

    ``os.walk`` with an error handler rather than ``Path.rglob``, which skips a folder it may
    not list without a word.
    """
    files, denied = [], []

    def on_error(err: OSError) -> None:
        if not isinstance(err, PermissionError):
            raise err
        denied.append(Path(err.filename))

    for dirpath, _, names in os.walk(folder, onerror=on_error):
        files += [Path(dirpath) / n for n in names if n.endswith(extension)]
    return files, sorted(denied)


def _scan(layout: EventLayout, folder: Path
          ) -> tuple[list[tuple[Path, int]], list[str], list[Path]]:
    """All files under ``folder`` with their labels, a problem line per unplaceable name, and
    the folders this process may not list."""
    items, problems = [], []
    bad_names: dict[str, Path] = {}
    paths, denied = _files_under(folder, layout.extension)
    for path in paths:
        if ".tmp-" in path.name:
            continue
        cls = _class_of(layout, path)
        if cls in layout.classes:
            items.append((path, layout.classes.index(cls)))
        else:
            bad_names.setdefault(cls, path)
        if layout.session_pattern and not layout.session_of(path):
            bad_names.setdefault(f"folder {path.parent.name}", path)
    for key, path in sorted(bad_names.items()):
        if key.startswith("folder "):  # not a session folder
            what, name = "folder name", key.removeprefix("folder ")
            expected = layout.session_example
        elif layout.label_from_stem:  # the file name is the label
            what, name = "file name", key
            expected = ", ".join(f"{c}{layout.extension}" for c in layout.classes)
        else:
            what, name, expected = "class folder", key, ", ".join(layout.classes)
        problems.append(f"unknown {what} {name!r} at {path}; expected one of: {expected}")
    for path in denied:
        problems.append(f"unreadable folder {path}: permission denied, its files cannot be "
                        f"listed (fix with chmod/ownership: `chmod -R a+rX {path}`)")
    items.sort(key=lambda it: (it[1], it[0].name, str(it[0])))
    return items, problems, denied


def _split_folder(layout: EventLayout, base: Path, split: str) -> Path:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if layout.split_folders is None:
        return base
    folder = base / layout.split_folders[split]
    try:
        found = folder.is_dir()
    except PermissionError as e:  # base may not be searched: is_dir raises EACCES
        raise UnreadableEventFileError(base) from e
    if not found:
        raise FileNotFoundError(f"{layout.name}: no {split} folder {folder}. "
                                + layout.help(base.parent))
    return folder


def index_files(layout: EventLayout, root: str | Path | None, split: str
                ) -> tuple[list[Path], list[int]]:
    """Sorted files and labels of one split (for CIFAR10-DVS: all files; ``splits.py`` splits).

    Raises:
        FileNotFoundError: missing root, split folder, or no files.
        UnreadableEventFileError: a folder under it that this process may not list.
        ValueError: a class folder or file with an unknown name (the message lists the classes).
    """
    name = layout.name
    base = resolve_base(layout, root)
    folder = _split_folder(layout, base, split)
    items, problems, denied = _scan(layout, folder)
    if denied:
        raise UnreadableEventFileError(denied[0])
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"{name}: {problems[0]}{more}. Rename or remove it. " + layout.help(root))
    if not items:
        raise FileNotFoundError(f"{name}: no {layout.extension} files under {folder}. "
                                + layout.help(root))
    return [p for p, _ in items], [c for _, c in items]


def layout_problems(layout: EventLayout, root: str | Path
                    ) -> tuple[list[str], dict[str, list[Path]]]:
    """Every structural problem of a copy, and its files per split, without raising.

    Returns:
        ``(problems, files)``: one readable line per problem (missing folder, unknown name,
        missing files per class, gesture users in the wrong split); ``files[split]`` lists the
        placeable files ('all' for CIFAR10-DVS).
    """
    try:
        base = resolve_base(layout, root)
    except (FileNotFoundError, ValueError) as e:
        return [str(e)], {}
    problems, files = [], {}
    splits = layout.split_folders or {"all": ""}
    for split, sub in splits.items():
        folder = base / sub if sub else base
        try:
            found = folder.is_dir()
        except PermissionError:  # base may not be searched
            problems.append(str(UnreadableEventFileError(base)))
            break
        if not found:
            problems.append(f"missing the {split} folder {folder}")
            continue
        items, bad, _ = _scan(layout, folder)
        problems += bad
        files[split] = [p for p, _ in items]
        counts = [0] * len(layout.classes)
        for _, c in items:
            counts[c] += 1
        expected = layout.expected_per_class.get(split, ())
        for cls, have, want in zip(layout.classes, counts, expected, strict=False):
            if have < want:
                problems.append(f"{split}: class {cls} has {have} {layout.extension} files, "
                                f"expected {want} ({want - have} missing)")
        if split in layout.subjects:
            users = layout.subjects[split]
            for p, _ in items:
                m = layout.session_of(p)
                if m and int(m.group(1)) not in users:
                    problems.append(f"{split}: {p.parent.name} belongs to the other split "
                                    f"(users {users.start}-{users.stop - 1} here)")
                    break
        if not items:
            problems.append(f"{split}: no {layout.extension} files under {folder}")
    return problems, files


def download_event_dataset(layout: EventLayout, root: str | Path) -> None:
    """Let tonic download and extract the dataset into ``root`` (it skips what it finds present).

    The tonic class is ``tonic.datasets.<layout.folder>``; a release with a split is fetched
    with ``train=True`` and ``train=False``.
    """
    import tonic.datasets as td

    root = str(Path(root).expanduser())
    Path(root).mkdir(parents=True, exist_ok=True)
    cls = getattr(td, layout.folder)
    if layout.split_folders is None:
        cls(save_to=root)
    else:
        cls(save_to=root, train=True)
        cls(save_to=root, train=False)
