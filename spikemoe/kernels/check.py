"""Compile and verify every kernel (``spikemoe backends --check``): nvcc and NVRTC for sm_80 and
sm_90, warnings as errors, and the CPU build against SpikingJelly's reference over every shape
and option of ``verify.CHECK_SHAPES`` x ``verify.all_configs()`` (float32)."""
from __future__ import annotations

from .errors import BackendUnavailableError
from .specs import SOURCES

__all__ = ["TOLERANCE", "run_check"]

TOLERANCE = 1e-6  # float32 bound on the CPU build vs SpikingJelly's reference (spikes identical)


def run_check() -> tuple[dict, list[str]]:
    """Compile and verify every kernel: ``(kernels JSON, notes)``; notes say what failed."""
    from .build_util import find_compiler
    from .nvcc_check import ARCHS, compile_all
    from .nvrtc_check import compile_all as nvrtc_compile_all

    notes: list[str] = []
    kernels: dict[str, dict] = {s.name: {"sm_80": False, "sm_90": False, "max_err_fwd": None,
                                         "max_err_grad": None} for s in SOURCES}
    results = []  # (compiler, result) of every compiler present
    if find_compiler("nvcc") is not None:
        results += [("nvcc", r) for r in compile_all(archs=ARCHS)]
    # the cupy backend's own compiler, where libnvrtc is found (None: not present)
    results += [("NVRTC", r) for r in nvrtc_compile_all(archs=ARCHS) or ()]
    if not results:
        notes.append("neither nvcc nor NVRTC is present: the CUDA sources were not compiled "
                     "(install the CUDA toolkit, or `pip install -e '.[cuda]'` for NVRTC)")
    seen: dict[tuple[str, str], bool] = {}
    for compiler, r in results:  # sm_XX: every compiler present succeeded
        seen[r.kernel, r.arch] = seen.get((r.kernel, r.arch), True) and r.ok
        if not r.ok:
            notes.append(f"{r.kernel} {r.arch}: {compiler}: {r.error}")
    for (kernel, arch), ok in seen.items():
        kernels[kernel][arch] = ok
    try:
        from .verify import check_cpu_build

        for name, res in check_cpu_build().items():
            kernels[name]["max_err_fwd"] = res["max_err_fwd"]
            kernels[name]["max_err_grad"] = res["max_err_grad"]
            if not res["spikes_equal"]:
                notes.append(f"{name}: CPU build's spikes differ from SpikingJelly's reference")
            elif not res["ok"]:
                notes.append(f"{name}: CPU build off SpikingJelly's reference by more than "
                             f"{TOLERANCE:g}")
    except BackendUnavailableError as e:  # no C++ compiler, or the CPU build failed
        notes.append(f"CPU build: {e}")
    return kernels, notes
