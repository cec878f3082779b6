"""Writing a profile to a folder: ``profile.json`` (every figure), ``profile.md`` (the tables)
and the PNG plots, each written atomically (``spikemoe.files``)."""
from __future__ import annotations

import json
from pathlib import Path

from ..files import write_text_atomic
from .plots import plot_profile
from .report import profile_markdown
from .results import ProfileResult

__all__ = ["profile_to_dir"]


def profile_to_dir(result: ProfileResult, out: str | Path, convention: str = "events") -> list[Path]:
    """Write ``profile.json`` (``result.to_json()``), ``profile.md`` (in ``convention``) and the
    PNG plots into ``out`` (created if missing); returns the written paths.

    Each file is written to a temporary name and renamed, so an interrupted profile never
    leaves a half-written ``profile.json`` next to good plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("profile.json", json.dumps(result.to_json(), indent=1) + "\n"),
                       ("profile.md", profile_markdown(result, convention))):
        write_text_atomic(out / name, text)
        written.append(out / name)
    return written + plot_profile(result, out)
