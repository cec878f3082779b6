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

from ..kernels.check import run_check
from ..neurons import backend_status

__all__ = ["add_backends_parser", "cmd_backends"]


def cmd_backends(args: argparse.Namespace) -> int:
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
