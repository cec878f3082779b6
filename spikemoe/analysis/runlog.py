"""Reading a run's JSON files so that damage is named, not hidden or thrown as a bare parser error.

``metrics.jsonl`` holds one JSON object per line, appended as the run goes. A run killed
while writing leaves its LAST line cut short: that line is dropped with a note
(``JsonLines.torn_line``) and everything before it is used. Any other line that does not
parse is damage nobody can explain by a kill: ``RunFileError`` names the file, the line
and what the parser expected. ``read_json_file`` does the same for whole-file JSON
(``summary.json``, ``profile.json``).

(``json`` raises ``Expecting ',' delimiter: line 1 column 57`` with no file name; these
wrappers only add the where and the what-to-do. Written by hand: the standard library has
no tolerant JSON-lines reader.)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["JsonLines", "RunFileError", "read_json_file", "read_jsonl"]


class RunFileError(ValueError):
    """A run file that cannot be read; the message names the file and line and what to do."""


@dataclass
class JsonLines:
    """The records of a JSON-lines file.

    Attributes:
        path: the file read.
        records: the parsed objects, in file order (the torn last line left out).
        torn_line: the 1-based number of a last line that was cut short and dropped, or None.
    """

    path: Path
    records: list[dict] = field(default_factory=list)
    torn_line: int | None = None

    @property
    def note(self) -> str | None:
        """One sentence about the dropped last line, or None when the file was whole."""
        if self.torn_line is None:
            return None
        return (f"{self.path}: last line (line {self.torn_line}) is cut short, as a run killed "
                f"while writing leaves it; it was ignored and lines 1-{self.torn_line - 1} used.")


def read_jsonl(path: str | Path, kind: str | None = None) -> JsonLines:
    """Read a JSON-lines file (e.g. ``metrics.jsonl``), tolerating a torn last line.

    Args:
        path: the file.
        kind: keep only records whose ``"kind"`` is this (None: all).
    Returns:
        ``JsonLines`` (records and the number of a dropped torn last line, if any).
    Raises:
        RunFileError: a line other than the last does not parse, or a line is not an object.
    """
    path = Path(path)
    lines = path.read_text(errors="replace").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    out = JsonLines(path)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if i == last:  # a run killed mid-write: the one damage a reader can tolerate
                out.torn_line = i + 1
                break
            raise RunFileError(
                f"{path}, line {i + 1} of {len(lines)}: not valid JSON ({e.msg}: column "
                f"{e.colno}), and it is not the last line, so this is not a run killed while "
                "writing: the file was damaged or edited. Repair or delete that line (the "
                "records before and after it are intact).") from None
        if not isinstance(record, dict):
            raise RunFileError(f"{path}, line {i + 1}: expected a JSON object per line, found "
                               f"{type(record).__name__}; this is not a spikemoe metrics file.")
        if kind is None or record.get("kind") == kind:
            out.records.append(record)
    return out


def read_json_file(path: str | Path, what: str = "") -> dict:
    """``json.loads`` of a whole file, with an error that names the file.

    Args:
        path: the file.
        what: what wrote the file and how to get it again, for the message (e.g.
            ``"written by spikemoe profile; run it again to rewrite it"``).
    Raises:
        RunFileError: the file is not valid JSON or not a JSON object.
    """
    path = Path(path)
    text = path.read_text(errors="replace")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        cut = " (it ends mid-record: cut short)" if e.pos >= len(text.rstrip()) else ""
        raise RunFileError(f"{path} is not valid JSON ({e.msg}: line {e.lineno}, column "
                           f"{e.colno}){cut}. {what or 'Rewrite or delete the file.'}") from None
    if not isinstance(value, dict):
        raise RunFileError(f"{path}: expected a JSON object, found {type(value).__name__}. "
                           f"{what or 'Rewrite or delete the file.'}")
    return value
