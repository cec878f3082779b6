"""Profiling overhead: ``spikemoe.analysis.profile_model`` against a plain evaluation of the
same model on the same samples. Goal (issues 5 and 15): <= 1.3x.

    plain      for each batch of 32: model(x)                      no_grad, eval mode
    profile    profile_model(model, samples, batch_size=32)        the same batches under
               our LayerOpCounter (count_operations: op_dispatch's mode, operand_stats' reads)
               and the FiringRateMonitor; the spread over the first 16 samples: the first
               run alone, the other 15 read from the first batch (per_sample)
    counting   the same with spread_samples=1: the batched counting, the monitor and the
               one sample run alone

Model: the demo's (spikformer_semm_2_256_dvs at width 96, one block, T = 4, 32 x 32;
``--model`` / ``--width`` / ``--depth`` change it; the paper-size DVS model is ``--width 256
--depth 2``) on digits-dvs test samples (real data). Rounds alternate the loops; the first is
a warm-up and is dropped; the figure is the median of the per-round ratios. ``--clock cpu``
times this process's CPU instead of the wall clock (time other processes take is left out).

Issue 15, one thread, on a shared 2-core CPU whose speed drifts by +-40% (so each figure is
a range over repeated runs, wall clock): before -> after
    demo (256 samples)          profile 2.71x -> 1.19-1.47x    counting 1.99x -> 1.10-1.37x
    paper-size (64 samples)     profile 2.80x -> 1.30-1.43x    counting 1.61x -> 1.26-1.37x
What is left, per batch of 32 of the demo (plain ~30 ms CPU): the dispatch mode ~3 ms (a
Python call per aten op outside the neurons), the counted ops' value reads ~4.5 ms, the
monitor ~2.5 ms, the one sample run alone and the first batch's per-sample reads ~1.5 ms.

    python benchmarks/bench_profile.py [--samples 256] [--rounds 5] 2>/dev/null
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import spikemoe
from spikemoe.analysis import profile_model
from spikemoe.data import collate_time_major, create_dataset


def _time(fn, clock) -> float:
    t0 = clock()
    fn()
    return clock() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="spikformer_semm_2_256_dvs")
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--size", type=int, default=32, help="frame size (digits-dvs is 32)")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: time.perf_counter; cpu: time.process_time (this process only)")
    args = ap.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = spikemoe.create_model(args.model, embed_dim=args.width, depth=args.depth,
                                  img_size=[args.size, args.size], T=4).eval()
    dataset = create_dataset("digits-dvs", "test", T=4, size=args.size, augment=False)
    samples = [dataset[i] for i in range(args.samples)]

    batches = [collate_time_major(samples[i:i + 32])[0] for i in range(0, len(samples), 32)]

    @torch.no_grad()
    def plain():
        for x in batches:  # [T, B, 2, H, W]
            model(x)

    def profiled():
        profile_model(model, samples, batch_size=32, spread_samples=16)

    def counting():
        profile_model(model, samples, batch_size=32, spread_samples=1)

    t = {"plain": [], "profile": [], "counting": []}
    for r in range(args.rounds + 1):
        times = {k: _time(fn, clock)
                 for k, fn in (("plain", plain), ("profile", profiled), ("counting", counting))}
        if r:  # round 0 is a warm-up
            for k, v in times.items():
                t[k].append(v)
    n = args.samples
    print(f"model {args.model} width {args.width} depth {args.depth}, T = 4, "
          f"{args.size} x {args.size}, "
          f"{n} digits-dvs test samples, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds (median), {args.clock} clock")
    def ratio(k):
        return statistics.median(a / b for a, b in zip(t[k], t["plain"]))

    for k in t:
        print(f"{k:9s} {1e3 * statistics.median(t[k]) / n:8.2f} ms/sample")
    print(f"profile / plain:  {ratio('profile'):6.2f}x  (goal <= 1.3x)")
    print(f"counting / plain: {ratio('counting'):6.2f}x  (batched counting + monitor, 1 sample alone)")

if __name__ == "__main__":
    main()
