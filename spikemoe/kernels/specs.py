"""What the kernel sources export: names, argument lists, dtypes, and the launch grid.

One table (``KERNELS``) describes every ``extern "C"`` kernel of the ``.cu`` files in this
folder; the CPU build (ctypes) and the CuPy runtime both marshal arguments from it, so a
signature is written once in C and once here, and ``tests/test_kernels_*.py`` checks the two
agree by calling every kernel.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["DEFAULT_BLOCK", "DTYPE_SUFFIX", "KERNELS", "KernelSource", "MAX_BLOCK", "SOURCES",
           "launch_config", "lif_flags", "source_dir"]

DEFAULT_BLOCK = 256
MAX_BLOCK = 1024  # SPIKEMOE_MAX_BLOCK in lif_core.cuh (the kernels' __launch_bounds__)

# Flags word of every kernel (lif_core.cuh).
DECAY_INPUT, SOFT_RESET, DETACH_RESET = 1, 2, 4

DTYPE_SUFFIX = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}

_LIF_PARAMS = ("f32 tau", "f32 v_th", "f32 v_reset", "f32 alpha", "i32 flags")

# kernel base name -> argument list ("p" pointer, "p?" pointer that may be null, "i64", "i32", "f32").
KERNELS: dict[str, tuple[str, ...]] = {
    "lif_fwd": ("p x", "p v0", "p spike", "p? h", "p v_last", "i64 N", "i32 T", *_LIF_PARAMS),
    "lif_bwd": ("p gs", "p? gv_last", "p h", "p gx", "p gv0", "i64 N", "i32 T", *_LIF_PARAMS),
    "emsa_gate_fwd": ("p o", "p r", "p v0", "p y", "p? spike", "p? h", "p v_last", "i64 N", "i32 T", "i64 D",
                      *_LIF_PARAMS),
    "emsa_gate_bwd": ("p gy", "p r", "p? gv_last", "p h", "p go", "p gr", "p gv0", "i64 N",
                      "i32 T", "i64 D", *_LIF_PARAMS),
    "emsp_gate_fwd": ("p g", "p z", "p v0", "p y", "p? spike", "p? h", "p v_last", "i64 N",
                      "i32 T", *_LIF_PARAMS),
    "emsp_gate_bwd": ("p gy", "p z", "p? gv_last", "p h", "p gg", "p gz", "p gv0", "i64 N",
                      "i32 T", *_LIF_PARAMS),
}


@dataclass(frozen=True)
class KernelSource:
    """One ``.cu`` file: the name the reports use and the kernels it defines."""

    name: str
    file: str
    kernels: tuple[str, ...]


SOURCES = (
    KernelSource("lif", "lif.cu", ("lif_fwd", "lif_bwd")),
    KernelSource("emsa_gate", "emsa_gate.cu", ("emsa_gate_fwd", "emsa_gate_bwd")),
    KernelSource("emsp_gate", "emsp_gate.cu", ("emsp_gate_fwd", "emsp_gate_bwd")),
)
HEADERS = ("lif_core.cuh", "cpu_shim.h")


def source_dir() -> Path:
    """The folder holding the ``.cu``/``.cuh``/``.h`` sources (installed as package data)."""
    return Path(__file__).resolve().parent


def lif_flags(decay_input: bool, soft_reset: bool, detach_reset: bool) -> int:
    """The kernels' ``flags`` word."""
    return ((DECAY_INPUT if decay_input else 0) | (SOFT_RESET if soft_reset else 0)
            | (DETACH_RESET if detach_reset else 0))


def launch_config(n: int, block: int = DEFAULT_BLOCK) -> tuple[int, int]:
    """Grid and block for ``n`` neurons, one thread each: ``(ceil(n / block), block)``.

    The kernels compute ``n = blockIdx.x * blockDim.x + threadIdx.x`` and return when
    ``n >= N``, so this covers every element exactly once. ``n == 0`` gives a grid of 0:
    callers skip the launch (CUDA rejects an empty grid).

    Raises:
        ValueError: ``n`` negative, ``block`` not in 1..1024, or a grid over CUDA's 2^31 - 1.
    """
    if n < 0:
        raise ValueError(f"the element count must be >= 0, got {n}")
    if not 1 <= block <= MAX_BLOCK:
        raise ValueError(f"block must be in 1..{MAX_BLOCK} threads (the kernels' launch bounds), "
                         f"got {block}")
    grid = -(-n // block)  # ceil(n / block)
    if grid > 2**31 - 1:
        raise ValueError(f"{n} elements need a grid of {grid} blocks of {block}, over CUDA's "
                         "2^31 - 1: use a larger block or split the tensor")
    return grid, block
