"""The one prepared GPU check of spikemoe's fused kernels (issue 10): parity, speed, memory.

On a machine with an NVIDIA GPU (sized for one H200 to finish well under 5 minutes; not yet
run: no GPU was available when it was written), from the repository root:

    pip install -e '.[cuda]'
    python benchmarks/gpu_check.py --out gpu_check.json

It writes one JSON file (and prints a summary):
    parity        cupy vs SpikingJelly's torch reference (every kernel, every LIF option,
                  N = 1 / odd / T = 1 / 64; float32 and bfloat16; train and eval), and
                  LIF modules cupy vs Triton vs torch on the GPU (spikes, membrane, gradients)
    lif_timing    LIF forward+backward time and peak memory on [4, 64, 196, 512] and
                  [16, 32, 4096, 256], cupy vs Triton, each also as a multiple of a device
                  memcpy of the same tensor
    train_step    training-step time and peak memory, AMP (bfloat16), backend cupy vs triton:
                  spikformer_semm_8_384 (B=32, T=4, 224x224) and
                  spikformer_semm_2_256_dvs (B=16, T=16, 128x128 event frames)
Each section records its own error instead of stopping the run. Exit status 1 when a
parity check fails (or a section errors), else 0. ``--help`` works without a GPU.
"""
from __future__ import annotations

import os

# SpikingJelly reads its CUDA kernel choice when it is first imported: make "triton" the
# comparison explicit (make_lif(backend="triton") checks it).
os.environ.setdefault("SJ_LIF_CUDA_IMPLEMENTATION", "triton")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import torch  # noqa: E402

LIF_SHAPES = ((4, 64, 196, 512), (16, 32, 4096, 256))
MODELS = (("spikformer_semm_8_384", 32, 4, "image"), ("spikformer_semm_2_256_dvs", 16, 16, "events"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="GPU check of spikemoe's fused CuPy kernels: parity with SpikingJelly's "
                    "reference and Triton kernel, LIF and training-step speed and memory.")
    p.add_argument("--out", default="gpu_check.json", help="JSON file to write")
    p.add_argument("--iters", type=int, default=20, help="timed repetitions per LIF case")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per model")
    p.add_argument("--warmup", type=int, default=3, help="untimed repetitions first")
    p.add_argument("--skip", nargs="*", default=[], choices=["parity", "lif_timing", "train_step"],
                   help="sections to leave out")
    return p.parse_args(argv)


def _timed(fn, iters: int, warmup: int) -> dict:
    """Median milliseconds of ``fn`` (CUDA events) and its peak extra memory (MiB)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return {"ms": statistics.median(times), "ms_min": min(times),
            "peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20}


def parity() -> dict:
    from spikingjelly.activation_based import functional

    from spikemoe.kernels.cupy_runtime import load_cupy_kernels
    from spikemoe.kernels.verify import CHECK_SHAPES, GATE_WIDTH, all_configs, compare
    from spikemoe.neurons import make_lif

    kernels = load_cupy_kernels("cuda")
    out: dict = {"vs_reference": {}, "lif_modules": {}}
    ok = True
    for kernel in ("lif", "emsa_gate", "emsp_gate"):
        for dtype in (torch.float32, torch.bfloat16):
            for train in (True, False):
                fwd = grad = 0.0
                equal = True
                for (T, N) in CHECK_SHAPES:
                    for cfg in all_configs(0.5 if kernel == "emsa_gate" else 1.0):
                        n = N * GATE_WIDTH if kernel == "emsa_gate" else N
                        c = compare(kernel, T, n, cfg, dtype, kernels, train=train)
                        fwd, grad = max(fwd, c.max_err_fwd), max(grad, c.max_err_grad)
                        equal = equal and c.spikes_equal
                tol = 1e-5 if dtype == torch.float32 else torch.finfo(dtype).eps
                good = equal and fwd <= tol and grad <= tol
                ok = ok and good
                out["vs_reference"][f"{kernel}/{str(dtype)[6:]}/{'train' if train else 'eval'}"] = {
                    "max_err_fwd": fwd, "max_err_grad": grad, "spikes_equal": equal, "ok": good}
    # Whole LIF modules on the GPU: cupy vs Triton vs torch reference.
    for dtype in (torch.float32, torch.bfloat16):
        for train in (True, False):
            torch.manual_seed(0)
            x = (torch.randn(8, 64, 1000, device="cuda") * 1.5 + 0.3).to(dtype)
            g = torch.randn_like(x)
            res = {}
            for backend in ("cupy", "triton", "torch"):
                lif = make_lif(backend=backend).cuda().train(train)
                functional.reset_net(lif)
                xi = x.clone().requires_grad_(train)
                with torch.set_grad_enabled(train):
                    s = lif(xi)
                    if train:
                        s.backward(g)
                res[backend] = (s.float(), lif.v.float(), xi.grad.float() if train else None)
            row = {}
            for a, b in (("cupy", "torch"), ("triton", "torch"), ("cupy", "triton")):
                row[f"{a}_vs_{b}"] = {
                    "spike_mismatches": int((res[a][0] != res[b][0]).sum()),
                    "max_err_v": (res[a][1] - res[b][1]).abs().max().item(),
                    "max_err_grad": None if not train else (res[a][2] - res[b][2]).abs().max().item(),
                }
            # Triton and cupy both keep a float32 membrane: identical spikes in every dtype.
            # SpikingJelly's torch path keeps the state in the input dtype (bfloat16 here), so
            # it is held to the same spikes in float32 only.
            good = row["cupy_vs_triton"]["spike_mismatches"] == 0 and (
                dtype != torch.float32 or row["cupy_vs_torch"]["spike_mismatches"] == 0)
            ok = ok and good
            row["ok"] = good
            out["lif_modules"][f"{str(dtype)[6:]}/{'train' if train else 'eval'}"] = row
    out["ok"] = ok
    return out


def _lif_case(shape: tuple[int, ...], dtype: torch.dtype, iters: int, warmup: int) -> dict:
    from spikingjelly.activation_based import functional

    from spikemoe.neurons import make_lif

    x = (torch.randn(shape, device="cuda") * 1.5).to(dtype).requires_grad_(True)
    g = torch.randn_like(x)
    dst = torch.empty_like(x)
    row = {"shape": list(shape), "dtype": str(dtype)[6:],
           "memcpy": _timed(lambda: dst.copy_(x.detach()), iters, warmup)}
    for backend in ("cupy", "triton"):
        lif = make_lif(backend=backend).cuda()

        def step(lif=lif):
            functional.reset_net(lif)
            x.grad = None
            lif(x).backward(g)

        row[backend] = _timed(step, iters, warmup)
        row[backend]["x_memcpy"] = row[backend]["ms"] / row["memcpy"]["ms"]
    row["cupy_speedup_vs_triton"] = row["triton"]["ms"] / row["cupy"]["ms"]
    return row


def lif_timing(iters: int, warmup: int) -> list[dict]:
    rows = []
    for shape in LIF_SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            row = _lif_case(shape, dtype, iters, warmup)
            torch.cuda.empty_cache()
            rows.append(row)
            print(f"LIF {shape} {row['dtype']}: cupy {row['cupy']['ms']:.3f} ms "
                  f"({row['cupy']['x_memcpy']:.1f}x memcpy, {row['cupy']['peak_mib']:.0f} MiB), "
                  f"triton {row['triton']['ms']:.3f} ms ({row['triton']['x_memcpy']:.1f}x, "
                  f"{row['triton']['peak_mib']:.0f} MiB)", flush=True)
    return rows


def train_step(steps: int, warmup: int) -> list[dict]:
    import spikemoe

    rows = []
    for name, B, T, kind in MODELS:
        row = {"model": name, "batch": B, "T": T, "amp": "bfloat16"}
        for backend in ("cupy", "triton"):
            torch.manual_seed(0)
            model = spikemoe.create_model(name, backend=backend, T=T).cuda().train()
            c, h, w = model.input_shape[1:]
            x = (torch.rand(B, c, h, w, device="cuda") if kind == "image"
                 else (torch.rand(T, B, c, h, w, device="cuda") < 0.1).float())
            y = torch.arange(B, device="cuda") % model.num_classes
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            losses = []

            def step(model=model, x=x, y=y, opt=opt, losses=losses):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = model(x)
                    loss = torch.nn.functional.cross_entropy(out.logits.float(), y) + out.aux_loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(loss.detach())

            row[backend] = _timed(step, steps, warmup)
            row[backend]["first_loss"] = losses[0].item()
            del model, opt, x
            torch.cuda.empty_cache()
        row["cupy_speedup_vs_triton"] = row["triton"]["ms"] / row["cupy"]["ms"]
        row["cupy_memory_vs_triton"] = row["cupy"]["peak_mib"] / row["triton"]["peak_mib"]
        rows.append(row)
        print(f"train {name} B={B} T={T}: cupy {row['cupy']['ms']:.1f} ms "
              f"{row['cupy']['peak_mib']:.0f} MiB, triton {row['triton']['ms']:.1f} ms "
              f"{row['triton']['peak_mib']:.0f} MiB", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible to torch; run it on a GPU machine after "
              "`pip install -e '.[cuda]'`.", file=sys.stderr)
        return 2
    from spikemoe.kernels.cupy_runtime import cupy_unavailable_reason

    reason = cupy_unavailable_reason()
    if reason is not None:
        print(f"gpu_check: the cupy backend cannot run: {reason}. Run `pip install -e '.[cuda]'`.",
              file=sys.stderr)
        return 2
    import importlib.metadata as md

    import cupy

    t0 = time.perf_counter()
    report: dict = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cupy": cupy.__version__,
        "spikingjelly": md.version("spikingjelly"), "python": platform.python_version(),
        "SJ_LIF_CUDA_IMPLEMENTATION": os.environ.get("SJ_LIF_CUDA_IMPLEMENTATION"),
    }
    failed = False
    sections = {"parity": parity, "lif_timing": lambda: lif_timing(args.iters, args.warmup),
                "train_step": lambda: train_step(args.steps, args.warmup)}
    for name, fn in sections.items():
        if name in args.skip:
            continue
        s0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # record and go on: one JSON with whatever could be measured
            report[name] = {"error": f"{type(e).__name__}: {e}",
                            "traceback": traceback.format_exc()[-3000:]}
            failed = True
        print(f"[{name}] {time.perf_counter() - s0:.1f} s", flush=True)
    if isinstance(report.get("parity"), dict) and report["parity"].get("ok") is False:
        failed = True
    report["elapsed_s"] = time.perf_counter() - t0
    report["ok"] = not failed
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out} ({'ok' if not failed else 'FAILED'}, {report['elapsed_s']:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
