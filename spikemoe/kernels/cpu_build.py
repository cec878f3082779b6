"""The kernel sources compiled for the CPU with g++, loaded with ctypes.

The same ``.cu`` files that CuPy compiles for the GPU are included after ``cpu_shim.h``
into one translation unit; every kernel ``k`` gets an exported launcher ``k_cpu_launch``
that loops over the launch grid (blocks in parallel under OpenMP). This is how the kernels'
arithmetic is checked without a GPU, against SpikingJelly's reference.

Build flags keep IEEE float32 semantics (``-ffp-contract=off``, no fast-math) so results
match torch's CPU reference bit for bit where the operation order is the same. The library
is built once per source hash into ``build_util.cache_dir()`` (or ``build_dir``) and cached
in the process.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from .build_util import find_compiler, first_error, kernel_of_error, sources_digest
from .errors import BackendUnavailableError, KernelBuildError
from .specs import DTYPE_SUFFIX, KERNELS, SOURCES, launch_config, source_dir

__all__ = ["CPU_FLAGS", "CpuKernels", "build_cpu_library", "load_cpu_kernels"]

CPU_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math",
             "-fopenmp", "-Wall", "-Wextra", "-Werror")

_LOCK = threading.Lock()
_LOADED: dict[str, CpuKernels] = {}


def _entry_source() -> str:
    lines = ['#include "cpu_shim.h"']
    lines += [f'#include "{s.file}"' for s in SOURCES]
    for base in KERNELS:
        for suffix in DTYPE_SUFFIX.values():
            lines.append(f"SPIKEMOE_CPU_EXPORT({base}_{suffix})")
    return "\n".join(lines) + "\n"


def _compiler() -> str:
    cxx = os.environ.get("CXX") or find_compiler("g++") or find_compiler("c++")
    if cxx is None:
        raise BackendUnavailableError(
            "the CPU build of spikemoe's kernels needs a C++ compiler (g++), and none is on PATH. "
            "Install one (Debian/Ubuntu: apt-get install g++) or set CXX to its path."
        )
    return cxx


def _library_name(cxx: str) -> str:
    return f"spikemoe_kernels_cpu_{sources_digest(cxx, *CPU_FLAGS)}.so"


def build_cpu_library(build_dir: str | os.PathLike | None = None) -> Path:
    """Compile every kernel source for the CPU into ``build_dir`` (default: the user cache);
    return the shared library's path (reused when it exists for the same sources and flags).

    Raises:
        BackendUnavailableError: no C++ compiler.
        KernelBuildError: the compile failed (names the kernel and the first error).
    """
    from .build_util import cache_dir

    cxx = _compiler()
    out_dir = Path(build_dir) if build_dir is not None else cache_dir()
    lib = out_dir / _library_name(cxx)
    if lib.is_file():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        entry = Path(tmp) / "spikemoe_kernels_cpu.cpp"
        entry.write_text(_entry_source())
        tmp_lib = Path(tmp) / lib.name
        cmd = [cxx, *CPU_FLAGS, f"-I{source_dir()}", str(entry), "-o", str(tmp_lib)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            line = first_error(proc.stderr + proc.stdout)
            raise KernelBuildError(
                f"kernel {kernel_of_error(line)!r} failed to compile for the CPU with {cxx}: "
                f"{line}. Run `spikemoe backends --check` for every kernel's status."
            )
        os.replace(tmp_lib, lib)  # atomic: a concurrent builder never sees half a library
    return lib


class CpuKernels:
    """The CPU build, loaded: ``launch(name, dtype, n, args)`` runs kernel ``name`` for dtype
    over ``n`` threads with ``args`` in the order of ``specs.KERNELS[name]``."""

    device_type = "cpu"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lib = ctypes.CDLL(str(path))
        self._fns: dict[str, ctypes._CFuncPtr] = {}

    def _function(self, name: str, base: str):
        fn = self._fns.get(name)
        if fn is None:
            address = ctypes.c_void_p.in_dll(self._lib, f"{name}_cpu_launch").value
            types = [ctypes.c_uint, ctypes.c_uint]
            for spec in KERNELS[base]:
                kind = spec.split()[0]
                types.append({"i64": ctypes.c_longlong, "i32": ctypes.c_int,
                              "f32": ctypes.c_float}.get(kind, ctypes.c_void_p))
            fn = ctypes.CFUNCTYPE(None, *types)(address)
            self._fns[name] = fn
        return fn

    def launch(self, base: str, dtype: torch.dtype, n: int, args: Sequence, block: int = 256) -> None:
        grid, block = launch_config(n, block)
        if grid == 0:
            return
        fn = self._function(f"{base}_{DTYPE_SUFFIX[dtype]}", base)
        fn(grid, block, *marshal(base, args, pointer=lambda t: ctypes.c_void_p(t.data_ptr())))


def marshal(base: str, args: Sequence, pointer) -> list:
    """Check ``args`` against ``KERNELS[base]`` and convert: tensors with ``pointer``, None
    for a nullable pointer to 0/None, numbers as given."""
    specs = KERNELS[base]
    if len(args) != len(specs):
        raise TypeError(f"{base} takes {len(specs)} arguments ({', '.join(specs)}), got {len(args)}")
    out = []
    for spec, a in zip(specs, args):
        kind, name = spec.split()
        if kind.startswith("p"):
            if a is None:
                if kind != "p?":
                    raise TypeError(f"{base}: argument {name} must be a tensor, got None")
                out.append(None)
            else:
                if not a.is_contiguous():
                    raise ValueError(f"{base}: argument {name} must be contiguous")
                out.append(pointer(a))
        else:
            out.append(a)
    return out


def load_cpu_kernels(build_dir: str | os.PathLike | None = None) -> CpuKernels:
    """Build (once per source hash and process: a library already loaded is reused whatever
    its folder) and load the CPU kernels."""
    with _LOCK:
        key = _library_name(_compiler())
        if key not in _LOADED:
            _LOADED[key] = CpuKernels(build_cpu_library(build_dir))
        return _LOADED[key]
