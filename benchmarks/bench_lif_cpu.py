"""LIF forward+backward on the CPU: spikemoe's kernel CPU build vs SpikingJelly's CPU kernel,
each as a multiple of a memcpy of the same tensor (issue 10, item 3: offer a CPU backend
from the kernels' source only if it is at least 2x faster than SpikingJelly's).

    python benchmarks/bench_lif_cpu.py [--shape 16 16 64 256] [--reps 10] [--threads N]

Runs are interleaved (memcpy, ours, SpikingJelly, memcpy, ...). Printed: median and best
wall time, and median CPU time of this process (all threads; less sensitive than wall time
to other processes on a shared machine). The CPU build is compiled into the user cache
(``$SPIKEMOE_KERNEL_CACHE``) at first use.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from spikingjelly.activation_based import functional, neuron, surrogate

from spikemoe.kernels.cpu_build import load_cpu_kernels
from spikemoe.kernels.functions import LifConfig, lif_multistep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs="+", default=[16, 16, 64, 256])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kernels = load_cpu_kernels()
    torch.manual_seed(0)
    x = torch.randn(args.shape) * 1.5
    g = torch.randn_like(x)
    dst = torch.empty_like(x)
    sj = neuron.LIFNode(tau=2.0, v_threshold=1.0, v_reset=0.0, detach_reset=True,
                        surrogate_function=surrogate.Sigmoid(alpha=4.0), step_mode="m")
    cfg = LifConfig(detach_reset=True)

    def memcpy():
        dst.copy_(x)

    def ours():
        xi = x.clone().requires_grad_(True)
        s, _ = lif_multistep(xi, None, cfg, kernels=kernels)
        s.backward(g)

    def spikingjelly():
        functional.reset_net(sj)
        xi = x.clone().requires_grad_(True)
        sj(xi).backward(g)

    fns = {"memcpy": memcpy, "ours": ours, "spikingjelly": spikingjelly}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm up
    for _ in range(args.reps):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    stats = {k: (statistics.median(wall[k]), min(wall[k]), statistics.median(cpu[k])) for k in fns}
    print(f"LIF fwd+bwd on {args.shape} float32, {torch.get_num_threads()} threads, "
          f"{args.reps} rounds (ms; x = multiple of memcpy):")
    print(f"  {'':13s} {'median wall':>17s} {'best wall':>17s} {'median CPU':>17s}")
    m = stats["memcpy"]
    for name in ("memcpy", "ours", "spikingjelly"):
        s = stats[name]
        print(f"  {name:13s}" + "".join(f" {v * 1e3:9.1f} ({v / b:5.1f}x)" for v, b in zip(s, m)))
    o, j = stats["ours"], stats["spikingjelly"]
    print(f"  ours vs SpikingJelly: {j[0] / o[0]:.2f}x faster (median wall), "
          f"{j[1] / o[1]:.2f}x (best wall), {j[2] / o[2]:.2f}x (CPU time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
