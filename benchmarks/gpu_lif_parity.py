"""GPU check: SpikingJelly's CUDA LIF kernel (``backend="auto"``: Triton unless a native
build exists) against its pure-torch reference (``backend="torch"``), forward and
backward, train and eval mode, plus a whole SEMM model; prints speed side by side.

    python benchmarks/gpu_lif_parity.py        # exits 1 on any mismatch, 0 when all agree

Needs an NVIDIA GPU; on a machine without one it says so and exits 0 without checking.
"""
from __future__ import annotations

import sys
import time

import torch

import spikemoe
from spikemoe.neurons import make_lif


def _lif_case(shape, v_threshold, train, dtype=torch.float32):
    torch.manual_seed(0)
    x = (torch.randn(shape, device="cuda", dtype=dtype) * 1.5)
    results = {}
    for backend in ("torch", "auto"):
        lif = make_lif(v_threshold=v_threshold, backend=backend).cuda().train(train)
        xi = x.clone().requires_grad_(True)
        s = lif(xi)
        w = torch.linspace(-1, 1, s.numel(), device="cuda").reshape(s.shape)
        (s * w).sum().backward()
        results[backend] = (s.detach(), xi.grad, lif.v)
    ok = all(torch.allclose(a, b, atol=1e-5, rtol=1e-5)
             for a, b in zip(results["auto"], results["torch"]))
    return ok, results["auto"][0].mean().item()


def _time(fn, reps=20):
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing checked (run this on a GPU machine)")
        return 0
    from spikingjelly._ops.lif import _selection

    print(f"device {torch.cuda.get_device_name()}, SpikingJelly LIF on CUDA: "
          f"{_selection.diagnostics(torch.device('cuda'))}")
    failures = 0
    for shape in ((4, 1024), (4, 32, 64, 384), (16, 8, 2, 128, 128)):
        for thr in (1.0, 0.5):
            for train in (True, False):
                ok, rate = _lif_case(shape, thr, train)
                failures += not ok
                print(f"LIF {shape!s:22s} V_th={thr} {'train' if train else 'eval '}: "
                      f"{'OK ' if ok else 'MISMATCH'} (firing rate {rate:.3f})")

    x = torch.randn(4, 64, 64, 2048, device="cuda")
    for backend in ("torch", "auto"):
        lif = make_lif(backend=backend).cuda()
        xi = x.clone().requires_grad_(True)

        def step(lif=lif, xi=xi):
            lif.reset()
            lif(xi).sum().backward()

        print(f"LIF fwd+bwd [4, 64, 64, 2048] backend={backend:5s}: {_time(step) * 1e3:.2f} ms")

    for name in ("test_spikformer_semm", "test_spike_driven_semm", "spikformer_semm_4_384_cifar"):
        torch.manual_seed(0)
        x = torch.rand(8, 3 if "cifar" in name else 2, *(32, 32) if "cifar" in name else (16, 16),
                       device="cuda")
        outs = {}
        for backend in ("torch", "auto"):
            torch.manual_seed(1)
            model = spikemoe.create_model(name, backend=backend).cuda().eval()
            outs[backend] = model(x).logits
        ok = torch.allclose(outs["auto"], outs["torch"], atol=1e-4, rtol=1e-4)
        failures += not ok
        print(f"model {name:28s} logits auto vs torch: {'OK' if ok else 'MISMATCH'}")
    print("all agree" if not failures else f"{failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
