"""V-MoE dispatch + combine: sorted bins (``spikemoe.moe.dispatch_combine``) against the dense
one-hot ``[S, E, C]`` einsum of GShard / DeepSpeed (``einsum_dispatch_combine``), on CPU.

    S = 4096 tokens in one group, E = 8 experts, k = 2, C = 1.05 -> capacity
    ceil(4096 * 2 * 1.05 / 8) = 1076 slots per expert; routing from random gates (seed 0),
    the same for both; experts: ViT-S MLPs (D = 384, H = 1536) or identities (``--identity``:
    data movement alone). Forward only, under ``torch.no_grad`` (inference).

Both must give the same output (asserted). Time: median of ``--repeats`` calls after one
warm-up (the assert's calls), rounds alternating the methods (the CPU may be shared).
Peak memory: Linux's peak resident set size of this process (``VmHWM`` in
``/proc/self/status``), reset right before one call of each method (``echo 5 >
/proc/self/clear_refs``), minus the resident size just before it: what the call itself
allocates at its peak, torch's CPU allocator included (tracemalloc would not see it). glibc
is told to serve every block over 64 KiB by mmap and to trim its heap on free (``mallopt``),
so freed memory leaves the resident set and a later call cannot hide in it. The sizes of
the index / one-hot tensors each method builds are printed too (from their shapes).

    python benchmarks/bench_vmoe_dispatch.py [--identity] [--repeats 5] 2>/dev/null
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import time

import torch
from torch import nn

from spikemoe.moe import (
    MLP,
    assign_slots,
    capacity_per_group,
    dispatch_combine,
    einsum_dispatch_combine,
    sort_into_bins,
)

S, E, K, C = 4096, 8, 2, 1.05


def _setup(d: int, h: int, identity: bool):
    torch.manual_seed(0)
    x = torch.randn(S, d)
    gates = torch.randn(1, S, E).softmax(-1)
    capacity = capacity_per_group(S, K, E, C)
    expert, combine, slot, kept = (t[0] for t in assign_slots(gates, K, capacity, False))
    experts = nn.ModuleList(nn.Identity() if identity else MLP(d, h) for _ in range(E))
    return x, expert, combine, slot, kept, capacity, experts


def _method(name: str, x, expert, combine, slot, kept, capacity, experts):
    if name == "sorted":
        return lambda: dispatch_combine(x, sort_into_bins(expert, combine, kept, E), experts)
    return lambda: einsum_dispatch_combine(x, expert, combine, slot, kept, capacity, experts)


def _plain_malloc() -> None:
    """glibc: mmap every block over 64 KiB and trim on free (no dynamic threshold), so that
    the resident set follows the live allocations."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 0)  # M_TRIM_THRESHOLD


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_bytes(fn) -> int | None:
    """Peak resident memory that one call of ``fn`` adds (None where Linux cannot reset it)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident size
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) * 1024


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--hidden", type=int, default=1536)
    ap.add_argument("--identity", action="store_true", help="identity experts: dispatch alone")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    _plain_malloc()

    setup = _setup(args.dim, args.hidden, args.identity)
    x, expert, combine, slot, kept, capacity, experts = setup
    out = {n: _method(n, *setup)() for n in ("sorted", "einsum")}
    torch.testing.assert_close(out["sorted"], out["einsum"], rtol=1e-4, atol=1e-5)
    fns = {name: _method(name, *setup) for name in ("sorted", "einsum")}
    runs = {name: [] for name in fns}
    for _ in range(args.repeats):  # rounds alternate the methods (the CPU is shared)
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - t0)
    times = {name: statistics.median(r) for name, r in runs.items()}
    peaks = {name: peak_bytes(_method(name, *setup)) for name in ("sorted", "einsum")}
    A = int(kept.sum())
    f32, i64 = 4, 8
    sizes = {  # bytes of what each method builds besides the experts' own activations
        "sorted": A * (i64 + f32) + A * args.dim * f32 * 2,  # token, weight; gathered x, output
        "einsum": 2 * S * E * capacity * f32 + 2 * E * capacity * args.dim * f32,  # D, D*w; X_e, Y_e
    }
    experts_kind = "identity" if args.identity else f"MLP {args.dim}-{args.hidden}-{args.dim}"
    print(f"S={S} E={E} k={K} C={C} -> capacity {capacity}; kept assignments {A} of {S * K} "
          f"({100 * (1 - A / (S * K)):.1f}% dropped); experts: {experts_kind}; "
          f"{torch.get_num_threads()} threads; outputs equal (assert_close)")
    print(f"{'method':8s} {'time (ms)':>10s} {'peak RSS (MiB)':>15s} {'built tensors (MiB)':>20s}")
    for name in ("sorted", "einsum"):
        peak = "n/a" if peaks[name] is None else f"{peaks[name] / 2**20:.1f}"
        print(f"{name:8s} {1e3 * times[name]:10.1f} {peak:>15s} {sizes[name] / 2**20:20.1f}")
    ratio = ("n/a" if None in peaks.values() else
             f"{peaks['einsum'] / max(peaks['sorted'], 1):.2f}x")
    print(f"einsum / sorted: time {times['einsum'] / times['sorted']:.2f}x, peak memory {ratio}, "
          f"built tensors {sizes['einsum'] / sizes['sorted']:.2f}x")


if __name__ == "__main__":
    main()
