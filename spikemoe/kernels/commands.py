"""``spikemoe backends [--check] [--json]``: which LIF backends run here, and the kernels' check.

Without ``--check``: every LIF backend of ``spikemoe.neurons`` and, for one that cannot run
here, why (one line). With ``--check``: every kernel source compiled for sm_80 and sm_90,
warnings as errors, with nvcc and (where libnvrtc is found) with NVRTC exactly as the cupy
backend compiles it (``sm_XX`` is true when every compiler present succeeded), and the CPU
build compared with SpikingJelly's reference over every shape and option of
``verify.CHECK_SHAPES`` x ``verify.all_configs()`` (float32).

``--json`` prints exactly::

    {"backends": {NAME: {"available": bool, "reason": str | null}},
     "kernels": {NAME: {"sm_80": bool, "sm_90": bool, "max_err_fwd": float | null,
                        "max_err_grad": float | null}}}

(``kernels`` is empty without ``--check``; an error is null where the CPU build could not
run). Exit status 1 when ``--check`` finds a kernel that does not compile or is off the
reference (float32 bound 1e-6, spikes identical).
"""
from __future__ import annotations

import argparse
import json

from .errors import BackendUnavailableError
from .specs import SOURCES

__all__ = ["add_backends_parser", "cmd_backends", "run_check"]

TOLERANCE = 1e-6


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


def cmd_backends(args: argparse.Namespace) -> int:
    from ..neurons import backend_status

    out = {"backends": backend_status(), "kernels": {}}
    notes: list[str] = []
    if args.check:
        out["kernels"], notes = run_check()
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"{'backend':8s} {'runs here':9s}  notes")
        for name, b in out["backends"].items():
            print(f"{name:8s} {'yes' if b['available'] else 'no':9s}  {b['reason'] or ''}")
        if args.check:
            print(f"\n{'kernel':10s} {'sm_80':5s} {'sm_90':5s} {'max_err_fwd':>12s} "
                  f"{'max_err_grad':>12s}   (CPU build vs SpikingJelly reference, float32)")
            for name, k in out["kernels"].items():
                errs = " ".join("           -" if k[e] is None else f"{k[e]:12.3g}"
                                for e in ("max_err_fwd", "max_err_grad"))
                print(f"{name:10s} {str(k['sm_80']).lower():5s} {str(k['sm_90']).lower():5s} "
                      f"{errs}")
        for n in notes:
            print(f"FAILED {n}")
    return 1 if notes else 0


def add_backends_parser(sub) -> None:
    """Register ``backends`` on the CLI's sub-parsers."""
    p = sub.add_parser("backends", help="LIF backends that run here; --check compiles and "
                                        "verifies spikemoe's own kernels")
    p.add_argument("--check", action="store_true",
                   help="compile the kernels with nvcc (sm_80, sm_90) and compare their CPU "
                        "build with SpikingJelly's reference")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_backends)
