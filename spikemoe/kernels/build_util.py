"""Shared by the CPU build and the nvcc check: cache folder, compiler lookup, error parsing."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from .specs import HEADERS, SOURCES, source_dir

__all__ = ["CACHE_ENV", "cache_dir", "find_compiler", "first_error", "kernel_of_error",
           "sources_digest"]

CACHE_ENV = "SPIKEMOE_KERNEL_CACHE"


def cache_dir() -> Path:
    """Where compiled kernels go: ``$SPIKEMOE_KERNEL_CACHE``, else ``~/.cache/spikemoe/kernels``
    (``$XDG_CACHE_HOME`` respected). Never inside the repository."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spikemoe" / "kernels"


def find_compiler(name: str) -> str | None:
    """Absolute path of ``name`` on PATH (``nvcc`` also under ``$CUDA_HOME/bin``), or None."""
    found = shutil.which(name)
    if found is None and name == "nvcc":
        for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
            if home and (Path(home) / "bin" / "nvcc").is_file():
                return str(Path(home) / "bin" / "nvcc")
    return found


def sources_digest(*extra: str) -> str:
    """A short hash of every kernel source plus ``extra`` (flags, compiler version)."""
    h = hashlib.sha256()
    root = source_dir()
    for name in (*HEADERS, *(s.file for s in SOURCES)):
        h.update(name.encode())
        h.update((root / name).read_bytes())
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()[:16]


_ERROR = re.compile(r"(error|Error|ERROR)")


def first_error(output: str) -> str:
    """The compiler's first error line (or its first line, if none says 'error')."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in lines:
        if _ERROR.search(ln):
            return ln
    return lines[0] if lines else "(no compiler output)"


def kernel_of_error(line: str) -> str:
    """The kernel source an error line points at (``lif``, ``emsa_gate``...), else 'kernels'."""
    for s in SOURCES:
        if s.file in line:
            return s.name
    for h in HEADERS:
        if h in line:
            return f"shared header {h}"
    return "kernels"
