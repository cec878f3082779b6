"""Training-step time of spikemoe's spiking transformers against SpikingJelly 2.0's own
models, and of each SEMM twin against its baseline, measured side by side in one run.

One step = forward + cross-entropy + backward + AdamW step, B=8, T=4, CIFAR size
(3x32x32), CPU. Runs are interleaved (A, B, A, B, ...) so that machine noise hits both
sides alike; the ratio is the median of the per-round ratios.

    python benchmarks/bench_spiking_core.py [--rounds 6] [--batch 8] [--T 4]

Targets (issue 2): spikformer_4_384_cifar / SpikingJelly Spikformer <= 1.0 (goal 0.7);
each SEMM twin / its baseline <= 1.10.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.model.spike_driven_transformer import SpikeDrivenTransformer
from spikingjelly.activation_based.model.spikformer import spikformer_cifar10

import spikemoe


class _LogitsOfSpikingJelly(torch.nn.Module):
    """SpikingJelly's models: reset state, average over T where they do not."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        functional.reset_net(self.net)
        out = self.net(x)
        return out.mean(0) if out.ndim == 3 else out


def _logits(model, x):
    out = model(x)
    return out.logits if isinstance(out, spikemoe.ModelOutput) else out


def _stepper(model, batch, T):
    x = torch.rand(batch, 3, 32, 32)
    y = torch.arange(batch) % 10
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(_logits(model, x), y)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    return step


def compare(label_a, model_a, label_b, model_b, rounds, batch, T):
    steps = {label_a: _stepper(model_a, batch, T), label_b: _stepper(model_b, batch, T)}
    for step in steps.values():  # warm-up: allocator, thread pools
        step(), step()
    times = {label_a: [], label_b: []}
    for _ in range(rounds):
        for label, step in steps.items():
            times[label].append(step())
    ratios = [a / b for a, b in zip(times[label_a], times[label_b])]
    med_a, med_b = statistics.median(times[label_a]), statistics.median(times[label_b])
    print(f"{label_a:42s} {med_a * 1000:8.1f} ms/step")
    print(f"{label_b:42s} {med_b * 1000:8.1f} ms/step")
    print(f"  ratio {label_a} / {label_b}: {statistics.median(ratios):.3f} "
          f"(per-round min {min(ratios):.3f}, max {max(ratios):.3f})\n")
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--T", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B={args.batch}, "
          f"T={args.T}, 3x32x32, {args.rounds} interleaved rounds\n")
    kw = dict(rounds=args.rounds, batch=args.batch, T=args.T)

    ours = spikemoe.create_model("spikformer_4_384_cifar", T=args.T)
    sj = _LogitsOfSpikingJelly(spikformer_cifar10(T=args.T, num_classes=10))
    print(f"params: spikemoe {sum(p.numel() for p in ours.parameters()):,d}, "
          f"SpikingJelly {sum(p.numel() for p in sj.parameters()):,d}")
    results = {"spikformer vs SpikingJelly": compare(
        "spikemoe spikformer_4_384_cifar", ours, "SpikingJelly spikformer_cifar10", sj, **kw)}

    ours_sd = spikemoe.create_model("spike_driven_4_384_cifar", T=args.T)
    sj_sd = _LogitsOfSpikingJelly(SpikeDrivenTransformer(
        T=args.T, in_channels=3, num_classes=10, embed_dims=384, num_heads=8, depths=4,
        pooling_stat="0011"))
    results["spike_driven vs SpikingJelly"] = compare(
        "spikemoe spike_driven_4_384_cifar", ours_sd, "SpikingJelly SpikeDrivenTransformer", sj_sd,
        **kw)

    for family in ("spikformer", "spike_driven"):
        base = spikemoe.create_model(f"{family}_4_384_cifar", T=args.T)
        twin = spikemoe.create_model(f"{family}_semm_4_384_cifar", T=args.T)
        results[f"{family}_semm vs {family}"] = compare(
            f"{family}_semm_4_384_cifar", twin, f"{family}_4_384_cifar", base, **kw)

    print("summary (median per-round ratio; targets: vs SpikingJelly <= 1.0, SEMM twin <= 1.10)")
    for name, ratio in results.items():
        print(f"  {name:36s} {ratio:.3f}")


if __name__ == "__main__":
    main()
