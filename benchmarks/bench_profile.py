"""Profiling overhead: ``spikemoe.analysis.profile_model`` against a plain evaluation of the
same model on the same samples. Goal (issue 5): <= 1.3x.

    plain      for each batch of 32: model(x)                      no_grad, eval mode
    profile    profile_model(model, samples, batch_size=32)        the same batches under
               SpikingJelly's DispatchCounterMode with our LayerOpCounter and the
               FiringRateMonitor, plus the spread pass: the first 16 samples each alone
    counting   the same without the spread pass (spread_samples=1): the batched counting alone

Model: the demo's (spikformer_semm_2_256_dvs at width 96, one block, T = 4, 32 x 32;
``--model`` / ``--width`` / ``--depth`` change it) on digits-dvs test samples (real data).
Rounds alternate the loops; the first is a warm-up and is dropped; the figure is the median
of the per-round ratios.

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


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="spikformer_semm_2_256_dvs")
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--size", type=int, default=32, help="frame size (digits-dvs is 32)")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
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
        times = {"plain": _time(plain), "profile": _time(profiled), "counting": _time(counting)}
        if r:  # round 0 is a warm-up
            for k, v in times.items():
                t[k].append(v)
    n = args.samples
    print(f"model {args.model} width {args.width} depth {args.depth}, T = 4, "
          f"{args.size} x {args.size}, "
          f"{n} digits-dvs test samples, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds (median)")
    def ratio(k):
        return statistics.median(a / b for a, b in zip(t[k], t["plain"]))

    for k in t:
        print(f"{k:9s} {1e3 * statistics.median(t[k]) / n:8.2f} ms/sample")
    print(f"profile / plain:  {ratio('profile'):6.2f}x  (goal <= 1.3x)")
    print(f"counting / plain: {ratio('counting'):6.2f}x  (batched counting + monitor alone)")

if __name__ == "__main__":
    main()
