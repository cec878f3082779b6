"""``spikemoe data verify NAME --root DIR``: check a dataset copy, say exactly what is wrong.

The checks are each dataset's spec's ``verify`` (event layouts and, with ``deep``, every file
decoded: ``event_specs``; CIFAR checksums and ImageNet counts: ``image_datasets``; the embedded
ones: ``digits_dvs``, ``text_corpus``). Here: the report, and for datasets that live in a
folder, the checks that the folder was named and exists. Nothing is modified.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .spec import dataset_spec

__all__ = ["VerifyReport", "verify_dataset"]


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


def verify_dataset(name: str, root: str | Path | None, deep: bool = False) -> VerifyReport:
    """Check the copy of ``name`` under ``root`` (module docstring); unknown names raise.

    Args:
        name: one of ``list_datasets()``.
        root: the dataset's folder (None: none given; embedded datasets need none).
        deep: also decode every file, where the dataset's verify can (event datasets).
    Returns:
        A ``VerifyReport``: ``ok`` when no problem was found.
    """
    spec = dataset_spec(name)
    info = spec.info
    report = VerifyReport(name, None if root is None else str(root))
    if info.needs_root:
        layout = spec.expected_layout()
        if root is None:
            report.problems.append(f"{name} needs --root DIR; expected layout: {layout} "
                                   f"({info.card})")
            return report
        root = Path(root).expanduser()
        if not root.is_dir():
            report.problems.append(f"root {root} does not exist; expected layout: {layout} "
                                   f"({info.card})")
            return report
    problems, notes = spec.verify(spec, root, deep)
    report.problems += problems
    report.notes += notes
    return report
