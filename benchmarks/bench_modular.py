"""Modular layer (``spikemoe.moe.ModularLayer``'s index-based dispatch): K of M modules chosen
per row against all M modules run densely on every row, on CPU, forward only (no_grad).

    R = 1024 rows, M = 8 modules, each an MLP D -> 4D -> D (D = 256, GELU); choices uniform at
    random (seed 0), K = 1 and K = 2 (a module drawn twice runs once, as the reference).

Counted MACs: ``spikemoe.analysis.count_operations`` (dense multiply-adds of every matmul that
ran). Time: median of ``--repeats`` calls after one warm-up. Expected: counted MACs of K of M
are |set(a_r)| / M of dense (K = 1: 1/8; K = 2: (1 - 1/8) * 2 / 8 = 0.234), and the time
follows them up to the gather / scatter overhead.

    python benchmarks/bench_modular.py [--repeats 5] 2>/dev/null
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from spikemoe.analysis.op_counts import count_operations
from spikemoe.moe.modular_layer import dispatch_chosen


class _Run(nn.Module):
    def __init__(self, experts: nn.ModuleList, choice: torch.Tensor) -> None:
        super().__init__()
        self.experts, self.choice = experts, choice

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return dispatch_chosen(self.experts, rows, self.choice)


def _median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--modules", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    r, d, m = args.rows, args.dim, args.modules
    experts = nn.ModuleList(nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
                            for _ in range(m))
    rows = torch.randn(r, d)
    everything = torch.arange(m).expand(r, m)  # [R, M]: every module on every row
    print(f"R={r} rows, M={m} MLP modules {d}->{4 * d}->{d}")
    print(f"{'run':>12} {'MACs':>14} {'of dense':>9} {'ms':>9} {'of dense':>9}")
    with torch.no_grad():
        dense = _Run(experts, everything)
        dense_macs = sum(x.dense_macs for x in count_operations(dense, rows)[0].layer_records())
        dense_ms = 1e3 * _median_time(lambda: dense(rows), args.repeats)
        print(f"{'all M':>12} {dense_macs:>14,} {1:>9.3f} {dense_ms:>9.1f} {1:>9.3f}")
        for k in (1, 2):
            choice = torch.randint(0, m, (r, k))  # [R, K]
            run = _Run(experts, choice)
            macs = sum(x.dense_macs for x in count_operations(run, rows)[0].layer_records())
            ms = 1e3 * _median_time(lambda run=run: run(rows), args.repeats)
            print(f"{f'K={k} of {m}':>12} {macs:>14,} {macs / dense_macs:>9.3f} {ms:>9.1f} "
                  f"{ms / dense_ms:>9.3f}")


if __name__ == "__main__":
    main()
