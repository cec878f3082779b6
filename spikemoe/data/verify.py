"""``spikemoe data verify NAME --root DIR``: check a dataset copy, say exactly what is wrong.

Structural checks for every dataset (folders, class names, files per class against the
published counts, CIFAR checksums); ``deep=True`` also decodes every event file and lists the
corrupt, the unreadable (permissions) and the empty ones, and every file whose sensor is not
the dataset's (an AEDAT 4.0 file declares its own size: a 320 x 240 recording in a 128 x 128
dataset decodes fine, but ``prepare`` and training would reject it). Nothing is modified.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .events import CorruptEventFileError, UnreadableEventFileError, read_events
from .layouts import EVENT_LAYOUTS, layout_problems
from .registry import dataset_info

__all__ = ["VerifyReport", "verify_dataset"]

IMAGENET_COUNTS = {"train": 1_281_167, "val": 50_000}


@dataclass
class VerifyReport:
    """``problems`` empty means the copy is complete; ``notes`` are facts found along the way."""

    name: str
    root: str | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        status = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        lines = [f"{self.name} at {self.root}: {status}"]
        lines += [f"  - {n}" for n in self.notes] + [f"  ! {p}" for p in self.problems]
        return "\n".join(lines)


def _verify_events(report: VerifyReport, root: Path, deep: bool) -> None:
    problems, files = layout_problems(report.name, root)
    report.problems += problems
    for split, paths in files.items():
        report.notes.append(f"{split}: {len(paths)} {EVENT_LAYOUTS[report.name].extension} files")
    if not deep:
        return
    layout = EVENT_LAYOUTS[report.name]
    sensor_h, sensor_w = layout.sensor_hw
    paths = [p for ps in files.values() for p in ps]
    empty = unreadable = wrong_sensor = 0
    for path in tqdm(paths, desc=f"decoding {report.name}", unit="file"):
        try:
            events, (h, w) = read_events(path)
        except UnreadableEventFileError:
            unreadable += 1
            report.problems.append(f"unreadable: {path}: permission denied (not corrupt; fix "
                                   f"with chmod/ownership, e.g. `chmod a+r {path}`)")
            continue
        except CorruptEventFileError as e:
            report.problems.append(f"corrupt: {path}: {e.reason}")
            continue
        # The reader checked x, y against the size the file declares: if that is the
        # dataset's, the coordinates fit the dataset's sensor too.
        if (h, w) != (sensor_h, sensor_w):
            wrong_sensor += 1
            x_max = int(events["x"].max()) if len(events) else None
            y_max = int(events["y"].max()) if len(events) else None
            report.problems.append(
                f"wrong sensor: {path} is a {w} x {h} recording (W x H; x up to {x_max}, y up "
                f"to {y_max}), {report.name} is {sensor_w} x {sensor_h}: not a file of this "
                "dataset's release; replace it with the original")
            continue
        if len(events) == 0:
            empty += 1
            report.notes.append(f"empty recording (0 events, all-zero frames): {path}")
    report.notes.append(f"decoded {len(paths)} files, {empty} empty, {unreadable} unreadable, "
                        f"{wrong_sensor} of another sensor size than {sensor_w} x {sensor_h}")


def _verify_cifar(report: VerifyReport, root: Path) -> None:
    from torchvision import datasets as tvd
    from torchvision.datasets.utils import check_integrity

    cls = tvd.CIFAR10 if report.name == "cifar10" else tvd.CIFAR100
    folder = root / cls.base_folder
    if not folder.is_dir():
        report.problems.append(f"missing folder {folder} (download with `python "
                               f"datasets/prepare_cifar.py --name {report.name} --root {root} "
                               "--download`)")
        return
    for fname, md5 in [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]:
        path = folder / fname
        if not path.is_file():
            report.problems.append(f"missing file {path}")
        elif not check_integrity(str(path), md5):
            report.problems.append(f"checksum mismatch: {path} (md5 should be {md5}); "
                                   "re-download it")
    n_files = len(cls.train_list) + len(cls.test_list) + 1
    report.notes.append(f"checked {n_files} files against torchvision's MD5s")


def _verify_imagenet(report: VerifyReport, root: Path) -> None:
    from .image_datasets import imagenet_classes

    try:
        classes = imagenet_classes(root)
    except (FileNotFoundError, ValueError) as e:
        report.problems.append(str(e))
        return
    if len(classes) != 1000:
        report.problems.append(f"train/ has {len(classes)} class folders, expected 1000")
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            report.problems.append(f"missing folder {folder}")
            continue
        have = {p.name for p in folder.iterdir() if p.is_dir()}
        if split == "val" and have != set(classes):
            extra, missing = sorted(have - set(classes)), sorted(set(classes) - have)
            report.problems.append(f"val/ class folders differ from train/: {len(missing)} missing "
                                   f"{missing[:3]}, {len(extra)} unknown {extra[:3]}")
        n = sum(1 for c in have for f in (folder / c).iterdir() if f.is_file())
        report.notes.append(f"{split}: {len(have)} classes, {n} images")
        if n != IMAGENET_COUNTS[split]:
            report.problems.append(f"{split}: {n} images, the ILSVRC-2012 release has "
                                   f"{IMAGENET_COUNTS[split]}")


def verify_dataset(name: str, root: str | Path | None, deep: bool = False) -> VerifyReport:
    """Check the copy of ``name`` under ``root``; see the module docstring."""
    info = dataset_info(name)
    report = VerifyReport(name, None if root is None else str(root))
    if name == "digits-dvs":
        from sklearn.datasets import load_digits

        n = len(load_digits().target)
        report.notes.append(f"embedded: {n} digits from scikit-learn, no files needed")
        if n != 1797:
            report.problems.append(f"load_digits() returned {n} digits, expected 1797")
        return report
    if info.kind == "text":  # stdlib-bytes: this Python's own sources (or --root), no files to get
        from .text_corpus import split_of, stdlib_files

        try:
            base, files = stdlib_files(root)
        except FileNotFoundError as e:
            report.problems.append(str(e))
            return report
        held = sum(split_of(p.relative_to(base).as_posix()) == "test" for p in files)
        report.notes.append(f"{base}: {len(files)} .py files, {held} held out for test")
        return report
    layout = EVENT_LAYOUTS[name].layout if name in EVENT_LAYOUTS else f"see {info.card}"
    if root is None:
        report.problems.append(f"{name} needs --root DIR; expected layout: {layout} ({info.card})")
        return report
    root = Path(root).expanduser()
    if not root.is_dir():
        report.problems.append(f"root {root} does not exist; expected layout: {layout} "
                               f"({info.card})")
        return report
    if info.kind == "events":
        _verify_events(report, root, deep)
    elif name == "imagenet":
        _verify_imagenet(report, root)
    else:
        _verify_cifar(report, root)
    return report
