"""Compile every kernel source with NVRTC, exactly as the cupy backend will (same text, same
options), without a GPU: NVRTC is a library (torch's CUDA wheels ship ``libnvrtc``).

A compile that succeeds but logs a warning counts as failed (warnings as errors, as nvcc).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
from dataclasses import dataclass

from .specs import SOURCES

__all__ = ["NvrtcResult", "compile_all", "find_nvrtc"]


@dataclass
class NvrtcResult:
    kernel: str
    arch: str
    ok: bool
    error: str | None = None


def find_nvrtc() -> str | None:
    """Path of libnvrtc: ``$SPIKEMOE_NVRTC``, the system's, or the one in torch's CUDA wheels."""
    if os.environ.get("SPIKEMOE_NVRTC"):
        return os.environ["SPIKEMOE_NVRTC"]
    found = ctypes.util.find_library("nvrtc")
    if found:
        return found
    for root in sys.path:
        hits = sorted(glob.glob(os.path.join(root, "nvidia", "cu*", "lib", "libnvrtc.so.*"))
                      + glob.glob(os.path.join(root, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so.*")))
        hits = [h for h in hits if "builtins" not in h and ".alt." not in h]
        if hits:
            return hits[-1]
    return None


def _compile(lib, kernel: str, code: str, arch: str, options: tuple[str, ...]) -> NvrtcResult:
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), code.encode(), f"{kernel}.cu".encode(),
                                0, None, None)
    if rc != 0:
        return NvrtcResult(kernel, arch, False, f"nvrtcCreateProgram failed ({rc})")
    try:
        opts = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in options)]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value or 1)
        lib.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        lines = [ln.strip() for ln in log.splitlines() if "error" in ln or "warning" in ln]
        if rc != 0 or lines:
            return NvrtcResult(kernel, arch, False, (lines or [log.strip() or f"rc {rc}"])[0])
        return NvrtcResult(kernel, arch, True)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def compile_all(archs: tuple[str, ...] = ("sm_80", "sm_90")) -> list[NvrtcResult] | None:
    """Every source for every arch, or None when no libnvrtc can be found or loaded."""
    from .cupy_runtime import NVRTC_OPTIONS, nvrtc_source

    path = find_nvrtc()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    return [_compile(lib, s.name, nvrtc_source(s.file), arch, NVRTC_OPTIONS)
            for s in SOURCES for arch in archs]
