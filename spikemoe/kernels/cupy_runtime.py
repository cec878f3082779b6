"""The kernel sources on the GPU: compiled by CuPy (``cupy.RawModule``, NVRTC) at first use.

CuPy is imported lazily: without it, or without a usable GPU, ``load_cupy_kernels`` raises
``BackendUnavailableError`` with one paragraph saying what is missing and what to install
(``pip install -e '.[cuda]'``), never a CuPy traceback. Kernels run on the current torch
stream of the tensors' device, over torch's own memory (raw pointers, no copies).
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from .errors import BackendUnavailableError, KernelBuildError
from .specs import DEFAULT_BLOCK, DTYPE_SUFFIX, KERNELS, SOURCES, launch_config, source_dir

__all__ = ["NVRTC_OPTIONS", "CupyKernels", "cupy_unavailable_reason", "load_cupy_kernels",
           "nvrtc_source"]

INSTALL_HINT = "pip install -e '.[cuda]'  (CuPy for CUDA 13, matching torch's CUDA build)"
NVRTC_OPTIONS = ("-std=c++17",)

_LOCK = threading.Lock()
_LOADED: dict[int, CupyKernels] = {}


def cupy_unavailable_reason() -> str | None:
    """Why the cupy backend cannot run here (one line), or None if it can."""
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "CuPy is not installed (it comes with the cuda extra)"
    except Exception as e:  # a broken CuPy install: say so in one line
        return f"CuPy fails to import ({type(e).__name__}: {str(e).splitlines()[0]})"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch (torch.cuda.is_available() is False)"
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return (f"CuPy cannot reach the GPU ({type(e).__name__}: {str(e).splitlines()[0]}); "
                "check the NVIDIA driver and that the CuPy wheel matches its CUDA version")
    return None


def nvrtc_source(file: str) -> str:
    """The text NVRTC compiles for ``file``: the shared header pasted in, not #included
    (CuPy's kernel cache keys on the code text, so an edited header must change it)."""
    header = (source_dir() / "lif_core.cuh").read_text()
    return (source_dir() / file).read_text().replace('#include "lif_core.cuh"', header)


class CupyKernels:
    """Every kernel compiled for one CUDA device; ``launch`` as ``cpu_build.CpuKernels``."""

    device_type = "cuda"

    def __init__(self, device: torch.device) -> None:
        import cupy

        self.device = device
        self.index = device.index if device.index is not None else torch.cuda.current_device()
        self._cupy = cupy
        self._modules = {}
        self._fns = {}
        with cupy.cuda.Device(self.index):
            for s in SOURCES:
                code = nvrtc_source(s.file)
                try:
                    module = cupy.RawModule(code=code, options=NVRTC_OPTIONS)
                    module.compile()
                except Exception as e:  # NVRTC's CompileException: keep its first error line
                    lines = [ln for ln in str(e).splitlines() if "error" in ln.lower()]
                    raise KernelBuildError(
                        f"kernel {s.name!r} failed to compile with NVRTC (CuPy): "
                        f"{(lines or [str(e)])[0].strip()}. `spikemoe backends --check` compiles "
                        "every kernel with nvcc and reports each one."
                    ) from None
                for base in s.kernels:
                    for suffix in DTYPE_SUFFIX.values():
                        self._fns[f"{base}_{suffix}"] = module.get_function(f"{base}_{suffix}")

    def launch(self, base: str, dtype: torch.dtype, n: int, args: Sequence,
               block: int = DEFAULT_BLOCK) -> None:
        import numpy as np

        from .cpu_build import marshal

        grid, block = launch_config(n, block)
        if grid == 0:
            return
        conv = {"i64": np.int64, "i32": np.int32, "f32": np.float32}
        values = []
        for spec, a in zip(KERNELS[base], marshal(base, args, pointer=lambda t: t.data_ptr())):
            kind = spec.split()[0]
            values.append(np.uint64(a or 0) if kind.startswith("p") else conv[kind](a))
        stream = self._cupy.cuda.ExternalStream(torch.cuda.current_stream(self.index).cuda_stream)
        with self._cupy.cuda.Device(self.index):
            self._fns[f"{base}_{DTYPE_SUFFIX[dtype]}"]((grid,), (block,), tuple(values),
                                                      stream=stream)


def load_cupy_kernels(device: torch.device | str | int | None = None) -> CupyKernels:
    """The kernels compiled for ``device`` (default: the current CUDA device), once per process.

    Raises:
        BackendUnavailableError: no CuPy, or no GPU; the message says what to install.
        KernelBuildError: NVRTC rejected a source (names the kernel and the first error).
    """
    reason = cupy_unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(
            f"backend='cupy' (spikemoe's fused CUDA kernels) cannot run here: {reason}. "
            f"Install it with {INSTALL_HINT} on a machine with an NVIDIA GPU, or use "
            "backend='auto' (SpikingJelly's Triton kernel on CUDA, torch on CPU)."
        )
    device = torch.device("cuda", torch.cuda.current_device()) if device is None \
        else torch.device(device)
    if device.type != "cuda":
        raise BackendUnavailableError(
            f"backend='cupy' runs on CUDA tensors only, got {device}. Move the model and data "
            "to the GPU, or use backend='auto' on the CPU."
        )
    index = device.index if device.index is not None else torch.cuda.current_device()
    with _LOCK:
        if index not in _LOADED:
            _LOADED[index] = CupyKernels(torch.device("cuda", index))
        return _LOADED[index]
