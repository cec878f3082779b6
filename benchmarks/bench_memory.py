"""Peak memory of one training step: spikemoe's spiking transformers against SpikingJelly 2.0's
own Spikformer at the same size, and (``--memopt``) each SpikingJelly memopt level on ours.

One step = forward + cross-entropy + backward + AdamW step, ImageNet size by default
(B=2, T=4, 3x224x224, ``spikformer_8_384`` against SpikingJelly's ``Spikformer(embed_dims=384,
num_heads=12, depths=8, patch_size=16)``), fp32 on CPU. Each measurement runs in a fresh
Python process so that peaks never mix. The figure is the growth of the process's peak
resident set (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` just before the step)
over its resident set before the step (freed heap memory handed back first, ``malloc_trim``):
what the step itself needs on top of the model.

Also printed per run: the bytes autograd holds for the backward at the end of the forward
(every tensor saved by a graph node, counted once per storage) and, with ``--breakdown``,
those bytes by node type and dtype: where the memory goes.

    python benchmarks/bench_memory.py                       # ours vs SpikingJelly
    python benchmarks/bench_memory.py --breakdown           # + saved tensors by node type
    python benchmarks/bench_memory.py --memopt 0 1 2        # memopt levels on ours
    python benchmarks/bench_memory.py --models spikformer_8_384 spikformer_semm_8_384

Target (issue 10): ours <= 0.8x SpikingJelly's peak without memopt. Peaks are deterministic
to within a few MiB; step times on a shared machine are not (the load is printed).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict

SJ = "sj:spikformer"


def _status_mib() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return out


def _trim() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), so that what model
    building or memopt's probing forward freed does not count as already resident."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _saved_bytes(loss, by_kind: bool):
    """Bytes of every tensor the autograd graph of ``loss`` saved, each storage once.

    Returns ``(total, {"NodeName dtype": bytes})`` (the dict only if ``by_kind``)."""
    import torch

    seen, total, kinds = set(), 0, defaultdict(int)
    stack, visited = [loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        tensors = []
        for attr in dir(node):
            if attr.startswith("_saved_"):
                try:
                    value = getattr(node, attr)
                except RuntimeError:  # freed, or not a tensor
                    continue
                values = value if isinstance(value, (tuple, list)) else (value,)
                tensors += [t for t in values if isinstance(t, torch.Tensor)]
        try:
            tensors += [t for t in getattr(node, "saved_tensors", ()) or ()
                        if isinstance(t, torch.Tensor)]
        except RuntimeError:
            pass
        for t in tensors:
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in seen or storage.nbytes() == 0:
                continue
            seen.add(key)
            total += storage.nbytes()
            if by_kind:
                kinds[f"{type(node).__name__} {str(t.dtype).replace('torch.', '')}"] += storage.nbytes()
        stack.extend(fn for fn, _ in node.next_functions)
    return total, dict(kinds)


def _build(name: str, T: int, size: int, memopt: int | None, batch: int):
    import torch

    if name == SJ:
        from spikingjelly.activation_based import functional
        from spikingjelly.activation_based.model.spikformer import Spikformer

        net = Spikformer(T=T, in_channels=3, img_size_h=size, img_size_w=size, patch_size=16,
                         num_classes=1000, embed_dims=384, num_heads=12, mlp_ratio=4.0, depths=8)

        class Logits(torch.nn.Module):  # reset state, average the [T, B, K] logits over T
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, x):
                functional.reset_net(self.net)
                return self.net(x).mean(0)

        return Logits()
    import spikemoe

    model = spikemoe.create_model(name, T=T, img_size=[size, size])
    if memopt:
        from spikemoe.engine.memopt import apply_memopt

        apply_memopt(model, memopt, torch.zeros(batch, 3, size, size))
    return model


def child(args) -> None:
    """One model, one process: print a JSON line with its figures."""
    import torch

    torch.manual_seed(0)
    model = _build(args.child, args.T, args.size, args.level, args.batch)
    model.train()
    x = torch.rand(args.batch, 3, args.size, args.size)
    y = torch.arange(args.batch) % 1000
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def logits_of(out):
        return out.logits if hasattr(out, "logits") else out

    _trim()
    before = _status_mib()["VmRSS"]
    _reset_peak()
    t0 = time.perf_counter()
    out = model(x)
    loss = torch.nn.functional.cross_entropy(logits_of(out), y)
    # reading a checkpointed node's saved tensors would recompute its segment: not with memopt
    saved, kinds = _saved_bytes(loss, args.breakdown) if not args.level else (float("nan"), {})
    fwd_peak = _status_mib()["VmHWM"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    first = time.perf_counter() - t0
    peak = _status_mib()["VmHWM"]
    del out, loss
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(logits_of(model(x)), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({
        "model": args.child, "memopt": args.level, "rss_before_mib": before,
        "peak_growth_mib": peak - before, "forward_peak_growth_mib": fwd_peak - before,
        "saved_mib": saved / 2**20, "first_step_s": first,
        "step_s": statistics.median(times) if times else None,
        "params": sum(p.numel() for p in model.parameters()),
        "saved_by_kind_mib": {k: v / 2**20 for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
    }))


def time_levels(args) -> None:
    """All levels in one process, steps interleaved (level a, level b, ...) so that machine
    noise hits each alike: print a JSON line ``{level: median step seconds}``."""
    import torch

    x = torch.rand(args.batch, 3, args.size, args.size)
    y = torch.arange(args.batch) % 1000
    steps = {}
    for level in args.time_levels:
        torch.manual_seed(0)
        model = _build(args.child, args.T, args.size, level, args.batch)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step(model=model, opt=opt) -> float:
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x).logits, y).backward()
            opt.step()
            return time.perf_counter() - t0

        steps[level] = step
    for step in steps.values():  # warm-up
        step()
    times = {level: [] for level in steps}
    for _ in range(args.rounds):
        for level, step in steps.items():
            times[level].append(step())
    print(json.dumps({str(k): statistics.median(v) for k, v in times.items()}))


def run_child(name: str, args, level: int | None = None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--batch", str(args.batch),
           "--T", str(args.T), "--size", str(args.size), "--steps", str(args.steps)]
    if level is not None:
        cmd += ["--level", str(level)]
    if args.breakdown:
        cmd.append("--breakdown")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        lines = proc.stderr.strip().splitlines()
        why = lines[-1] if lines else f"exit status {proc.returncode} (killed: out of memory?)"
        return {"model": name, "memopt": level, "error": why}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _print_breakdown(result: dict) -> None:
    for kind, mib in list(result["saved_by_kind_mib"].items())[:14]:
        print(f"      {kind:48s} {mib:8.1f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["spikformer_8_384"])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=0, help="timed steps after the measured one")
    ap.add_argument("--memopt", type=int, nargs="*", default=None,
                    help="memopt levels to measure on the first model (no SpikingJelly run)")
    ap.add_argument("--breakdown", action="store_true", help="saved tensors by node type")
    ap.add_argument("--json", default=None, help="also write all results to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--level", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--time-levels", type=int, nargs="*", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=4,
                    help="interleaved timed steps per memopt level (--memopt)")
    args = ap.parse_args()
    if args.child and args.time_levels:
        return time_levels(args)
    if args.child:
        return child(args)

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}; one AdamW step, B={args.batch}, T={args.T}, "
          f"3x{args.size}x{args.size}, fp32 CPU, each run in a fresh process\n")
    results = []
    if args.memopt is not None:
        name = args.models[0]
        for level in args.memopt:
            results.append(run_child(name, args, level))
        ok = [r["memopt"] for r in results if "error" not in r]
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--batch",
               str(args.batch), "--T", str(args.T), "--size", str(args.size), "--rounds",
               str(args.rounds), "--time-levels", *map(str, ok)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        timed = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {}
        base = timed.get(str(ok[0])) if ok else None
        print(f"{'memopt':>6s} {'peak growth':>12s} {'step (median)':>14s} {'vs first':>9s}   "
              f"({name}; {args.rounds} interleaved rounds)")
        for r in results:
            level = r["memopt"]
            if "error" in r:
                print(f"{level!s:>6s}   refused: {r['error']}")
                continue
            t = timed.get(str(level))
            r["step_s"] = t
            ts = f"{t:10.2f} s" if t else "         n/a"
            print(f"{level!s:>6s} {r['peak_growth_mib']:8.0f} MiB {ts:>14s} "
                  f"{(t / base if t and base else float('nan')):9.2f}")
            if args.breakdown and r["saved_by_kind_mib"]:
                _print_breakdown(r)
    else:
        ref = run_child(SJ, args)
        results.append(ref)
        print(f"{'model':28s} {'peak growth':>12s} {'fwd peak':>10s} {'saved':>10s} {'ratio':>7s}")
        for r in [ref] + [run_child(m, args) for m in args.models]:
            if r is not ref:
                results.append(r)
            if "error" in r:
                print(f"{r['model']:28s} failed: {r['error']}")
                continue
            ratio = r["peak_growth_mib"] / ref["peak_growth_mib"] if "error" not in ref else float("nan")
            print(f"{r['model']:28s} {r['peak_growth_mib']:8.0f} MiB {r['forward_peak_growth_mib']:6.0f} MiB "
                  f"{r['saved_mib']:6.0f} MiB {ratio:7.3f}")
            if args.breakdown:
                _print_breakdown(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
