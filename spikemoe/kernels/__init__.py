"""spikemoe's own CUDA C kernels: fused multi-step LIF, EMSA's expert gate, EMSP's channel gate.

Sources (``*.cu``, ``lif_core.cuh``; shipped as package data) are plain CUDA C++ with no
CUDA header, so one text serves three compilers:
    CuPy/NVRTC  ``cupy_runtime``: the ``cupy`` LIF backend on CUDA tensors
                (``nvrtc_check`` compiles that same text without a GPU);
    nvcc        ``nvcc_check``: compiled for sm_80 and sm_90 with warnings as errors;
    g++         ``cpu_build``: through ``cpu_shim.h``, to check the arithmetic on the CPU.
``specs`` lists every kernel's arguments and computes the launch grid; ``functions`` holds
the autograd Functions that run either build; ``verify`` compares a build with
SpikingJelly's torch reference; ``commands`` is ``spikemoe backends``. Compiled files go to
``$SPIKEMOE_KERNEL_CACHE`` or ``~/.cache/spikemoe/kernels``. Nothing else compiles code.

Layout ``[T, N]`` (time-major, flattened), one thread per neuron looping over T; float32,
float16 or bfloat16 storage with float32 state and accumulation. Saved for the backward:
the charged membrane H in float32, 4 bytes per element, as SpikingJelly's Triton kernel;
the fused SEMM gates additionally keep only their other operand (R or Z2, which exists
anyway), where the unfused ``LIF`` then ``*`` also keeps the spike tensor (2-4 more bytes
per element).
"""
from .errors import BackendUnavailableError, KernelBuildError
from .specs import KERNELS, SOURCES, launch_config, source_dir

__all__ = ["KERNELS", "SOURCES", "BackendUnavailableError", "KernelBuildError", "launch_config",
           "source_dir"]
