"""Compile every kernel source with nvcc for real GPU architectures, warnings as errors.

nvcc 13 spells warnings-as-errors ``-Werror all-warnings`` (``--Werror <kind>``, kinds listed
by ``nvcc --help``); ptxas's own is ``-Xptxas --warning-as-error``. Each ``.cu`` is compiled
to a cubin per architecture, which runs the whole device pipeline (front end, PTX, ptxas),
so inline PTX and register limits are checked too. No GPU is needed.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .build_util import find_compiler, first_error
from .specs import SOURCES, source_dir

__all__ = ["ARCHS", "NVCC_FLAGS", "NvccResult", "compile_all", "compile_source", "nvcc_version"]

ARCHS = ("sm_80", "sm_90")
NVCC_FLAGS = ("--cubin", "-std=c++17", "-Werror", "all-warnings", "-Xptxas", "--warning-as-error")


@dataclass
class NvccResult:
    """One kernel source for one architecture: compiled, or the compiler's first error."""

    kernel: str
    arch: str
    ok: bool
    error: str | None = None


def nvcc_version(nvcc: str | None = None) -> str | None:
    """``release X.Y`` of nvcc, or None when there is no nvcc."""
    nvcc = nvcc or find_compiler("nvcc")
    if nvcc is None:
        return None
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "release" in line:
            return line.split("release", 1)[1].split(",")[0].strip()
    return out.strip().splitlines()[-1] if out.strip() else "unknown"


def compile_source(kernel: str, arch: str, out_dir: str | os.PathLike,
                   nvcc: str | None = None) -> NvccResult:
    """Compile the source named ``kernel`` (``lif``, ``emsa_gate``, ``emsp_gate``) for ``arch``."""
    nvcc = nvcc or find_compiler("nvcc")
    if nvcc is None:
        return NvccResult(kernel, arch, False, "nvcc not found (install the CUDA toolkit or set "
                                               "CUDA_HOME)")
    src = {s.name: s for s in SOURCES}[kernel]
    out = Path(out_dir) / f"{kernel}.{arch}.cubin"
    cmd = [nvcc, *NVCC_FLAGS, f"-arch={arch}", f"-I{source_dir()}",
           str(source_dir() / src.file), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return NvccResult(kernel, arch, False, first_error(proc.stderr + proc.stdout))
    return NvccResult(kernel, arch, True)


def compile_all(out_dir: str | os.PathLike | None = None,
                archs: tuple[str, ...] = ARCHS) -> list[NvccResult]:
    """Every source for every arch (into a temporary folder unless ``out_dir`` is given)."""
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="spikemoe-nvcc-") as tmp:
            return compile_all(tmp, archs)
    return [compile_source(s.name, arch, out_dir) for s in SOURCES for arch in archs]
