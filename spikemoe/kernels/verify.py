"""The kernels against SpikingJelly's torch reference (``spikingjelly._ops.lif.reference``).

``compare(kernel, T, N, cfg, dtype, kernels)`` draws random inputs, runs the fused kernel
and the reference (LIF by ``reference.multi_step`` with ``surrogate.Sigmoid(alpha)``; the
gates as that LIF times R or Z2 in plain torch), back-propagates the same random output
gradients through both and returns the largest differences. The reference always runs in
float32 on the float32 copy of the inputs (exact for half/bfloat16 storage); the kernel's
gradients in half storage are compared after rounding the reference to that dtype.
``check_cpu_build`` runs it over every shape and option the issue lists.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from .functions import LifConfig, emsa_gate, emsp_gate, lif_multistep

__all__ = ["CHECK_SHAPES", "Comparison", "all_configs", "check_cpu_build", "compare",
           "reference_lif"]

# (T, N): N = 1, N not a multiple of the block (256), T = 1, T = 64.
CHECK_SHAPES = ((1, 1), (64, 1), (1, 300), (64, 300), (5, 257))
GATE_WIDTH = 4  # D of the EMSA gate in the checks (N must be a multiple of it)


def all_configs(v_threshold: float = 1.0) -> list[LifConfig]:
    """Every option combination: decay_input x (hard reset 0, hard reset -0.25, soft) x
    detach_reset, with tau and alpha varied so that no constant hides a bug."""
    out = []
    for i, (decay, reset, detach) in enumerate(
            itertools.product((True, False), (0.0, -0.25, None), (True, False))):
        out.append(LifConfig(tau=(2.0, 3.0)[i % 2], v_threshold=v_threshold, v_reset=reset,
                             decay_input=decay, detach_reset=detach, alpha=(4.0, 2.5)[i // 6]))
    return out


def reference_lif(x: torch.Tensor, v0: torch.Tensor, cfg: LifConfig):
    """SpikingJelly 2.0's reference multi-step LIF: ``(S [T, ...], V [...])``, differentiable."""
    from spikingjelly._ops.lif.reference import multi_step
    from spikingjelly.activation_based import surrogate

    s, v, _ = multi_step(x, v0, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_reset,
                         surrogate.Sigmoid(alpha=cfg.alpha), cfg.detach_reset, False)
    return s, v


@dataclass
class Comparison:
    """Largest absolute differences, kernel vs reference."""

    max_err_fwd: float  # outputs (spikes / gated outputs) and the final membrane
    max_err_grad: float  # every input gradient
    spikes_equal: bool
    tolerance_grad: float  # what the dtype allows (1e-6 in float32)


def _inputs(kernel: str, T: int, N: int, gen: torch.Generator):
    x = torch.randn(T, N, generator=gen) * 1.5 + 0.4  # currents that fire about 1 in 3
    v0 = torch.rand(N, generator=gen) * 0.8
    if kernel == "lif":
        other = None
    elif kernel == "emsa_gate":
        other = (torch.rand(T, N // GATE_WIDTH, generator=gen) < 0.6).float()  # router spikes
    else:
        other = (torch.rand(T, N, generator=gen) < 0.6).float()  # Z2 spikes
    return x, v0, other


def compare(kernel: str, T: int, N: int, cfg: LifConfig, dtype: torch.dtype = torch.float32,
            kernels=None, seed: int = 0, train: bool = True) -> Comparison:
    """Run ``kernel`` ("lif", "emsa_gate", "emsp_gate") and the reference on the same random
    ``[T, N]`` inputs (``N`` a multiple of ``GATE_WIDTH`` for the EMSA gate); see the module
    docstring. ``train=False`` compares the forward under ``torch.no_grad`` only."""
    gen = torch.Generator().manual_seed(seed)
    x, v0, other = _inputs(kernel, T, N, gen)
    device = kernels.device if kernels is not None and hasattr(kernels, "device") else "cpu"
    gy = torch.randn(T, N, generator=gen)
    gv = torch.randn(N, generator=gen)
    x, gy = x.to(dtype).float(), gy.to(dtype).float()  # what the kernel sees, exactly

    # Reference, float32.
    xr, vr = x.clone().requires_grad_(train), v0.clone().requires_grad_(train)
    orr = None if other is None else other.clone().requires_grad_(train)
    with torch.set_grad_enabled(train):
        s_ref, v_ref = reference_lif(xr, vr, cfg)
        if kernel == "lif":
            y_ref = s_ref
        elif kernel == "emsa_gate":
            y_ref = (s_ref.view(T, -1, GATE_WIDTH) * orr.unsqueeze(-1)).view(T, N)
        else:
            y_ref = s_ref * orr
    # Kernel, in dtype, on the kernels' device.
    xk = x.to(device=device, dtype=dtype).requires_grad_(train)
    vk = v0.to(device).requires_grad_(train)
    ok = None if other is None else other.to(device=device, dtype=dtype).requires_grad_(train)
    with torch.set_grad_enabled(train):
        if kernel == "lif":
            y, v = lif_multistep(xk, vk, cfg, kernels=kernels)
            s = y
        elif kernel == "emsa_gate":
            y3, s, v = emsa_gate(xk.view(T, -1, GATE_WIDTH), ok, vk, cfg, return_spikes=True,
                                 kernels=kernels)
            y, s, v = y3.view(T, N), s.view(T, N), v.view(N)  # [T, M, D] -> [T, N]
        else:
            y, s, v = emsp_gate(xk, ok, vk, cfg, return_spikes=True, kernels=kernels)

    err_fwd = max((y.float().cpu() - y_ref.detach()).abs().max().item(),
                  (v.cpu() - v_ref.detach()).abs().max().item())
    spikes_equal = bool(torch.equal((y.float().cpu() != 0), (y_ref.detach() != 0))
                        and torch.equal(s.float().cpu(), s_ref.detach()))
    tol = 1e-6 if dtype == torch.float32 else torch.finfo(dtype).eps
    if not train:
        return Comparison(err_fwd, 0.0, spikes_equal, tol)

    ((y_ref * gy).sum() + (v_ref * gv).sum()).backward()
    gyk, gvk = gy.to(device=device, dtype=dtype), gv.to(device)
    torch.autograd.backward((y, v), (gyk, gvk))
    pairs = [(xk.grad, xr.grad), (vk.grad, vr.grad)]
    if ok is not None:
        pairs.append((ok.grad, orr.grad))
    err_grad = 0.0
    for mine, ref in pairs:
        ref = ref.to(dtype).float() if dtype != torch.float32 else ref
        scale = 1.0 if dtype == torch.float32 else max(1.0, ref.abs().max().item())
        err_grad = max(err_grad, (mine.float().cpu() - ref).abs().max().item() / scale)
    return Comparison(err_fwd, err_grad, spikes_equal, tol)


def check_cpu_build(kernels=None, dtypes=(torch.float32,)) -> dict[str, dict[str, float | bool]]:
    """Every kernel of the CPU build over ``CHECK_SHAPES`` x ``all_configs()`` x dtypes:
    ``{kernel: {"max_err_fwd", "max_err_grad", "spikes_equal", "ok"}}``."""
    from .cpu_build import load_cpu_kernels

    kernels = kernels or load_cpu_kernels()
    out = {}
    for kernel in ("lif", "emsa_gate", "emsp_gate"):
        fwd = grad = 0.0
        equal, ok = True, True
        for dtype in dtypes:
            for (T, N), cfg in itertools.product(CHECK_SHAPES, all_configs(
                    0.5 if kernel == "emsa_gate" else 1.0)):
                if kernel == "emsa_gate":
                    N = max(GATE_WIDTH, N - N % GATE_WIDTH + GATE_WIDTH * (N % 2))
                c = compare(kernel, T, N, cfg, dtype, kernels)
                fwd, grad = max(fwd, c.max_err_fwd), max(grad, c.max_err_grad)
                equal = equal and c.spikes_equal
                ok = ok and c.spikes_equal and c.max_err_fwd <= c.tolerance_grad \
                    and c.max_err_grad <= c.tolerance_grad
        out[kernel] = {"max_err_fwd": fwd, "max_err_grad": grad, "spikes_equal": equal, "ok": ok}
    return out
