"""Autograd Functions over the fused kernels, for either build (CuPy on CUDA, g++ on CPU).

    lif_multistep(x [T, ...], v0 [...])          -> S [T, ...], V[T-1] [...]
    emsa_gate(o [T, ..., D], r [T, ...], v0)     -> Y = R (.) LIF(O) [T, ..., D], S or None, V[T-1]
    emsp_gate(g [T, ...], z [T, ...], v0)        -> Y = LIF(G) (.) Z [T, ...], G or None, V[T-1]

LIF semantics are SpikingJelly 2.0's ``LIFNode`` (equations in ``lif_core.cuh``). Inputs are
float32, float16 or bfloat16; state, the saved H and all accumulation are float32. The
forward saves H (4 bytes per element, the same as SpikingJelly's Triton kernel, which also
saves H in float32) and only when a gradient is needed; gates keep their other operand
(R or Z), which exists anyway, and never the spikes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .specs import DTYPE_SUFFIX, lif_flags

__all__ = ["LifConfig", "emsa_gate", "emsp_gate", "kernels_for", "lif_multistep"]


@dataclass(frozen=True)
class LifConfig:
    """The options of SpikingJelly's ``LIFNode`` the kernels implement.

    ``v_reset=None`` is a soft reset (subtract ``v_threshold``); ``alpha`` is the sigmoid
    surrogate's steepness.
    """

    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: float | None = 0.0
    decay_input: bool = True
    detach_reset: bool = False
    alpha: float = 4.0

    def scalars(self) -> tuple[float, float, float, float, int]:
        """``(tau, v_th, v_reset, alpha, flags)`` as the kernels take them."""
        return (float(self.tau), float(self.v_threshold),
                0.0 if self.v_reset is None else float(self.v_reset), float(self.alpha),
                lif_flags(self.decay_input, self.v_reset is None, self.detach_reset))

    @property
    def v_init(self) -> float:
        return 0.0 if self.v_reset is None else float(self.v_reset)


def kernels_for(device: torch.device):
    """The loaded kernels for ``device``: CuPy's on CUDA, the CPU build on the CPU."""
    if device.type == "cuda":
        from .cupy_runtime import load_cupy_kernels

        return load_cupy_kernels(device)
    if device.type == "cpu":
        from .cpu_build import load_cpu_kernels

        return load_cpu_kernels()
    raise ValueError(f"the fused kernels run on CUDA or CPU tensors, got a tensor on {device}")


def _check_dtype(x: torch.Tensor, what: str) -> None:
    if x.dtype not in DTYPE_SUFFIX:
        raise TypeError(f"{what} must be float32, float16 or bfloat16, got {x.dtype}")


def _v0(v0: torch.Tensor | None, like: torch.Tensor, cfg: LifConfig) -> torch.Tensor:
    n = like[0].numel()
    if v0 is None:
        return torch.full((n,), cfg.v_init, dtype=torch.float32, device=like.device)
    if v0.numel() != n:
        raise ValueError(f"the initial membrane v0 has {v0.numel()} elements, but one time step "
                         f"of the input has {n} (shape {tuple(like.shape[1:])})")
    return v0.reshape(n).to(torch.float32).contiguous()


def _grad_needed(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class _LIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, v0, cfg, kernels, save):
        T, N = x.shape  # [T, N]
        spike = torch.empty_like(x)
        v_last = torch.empty_like(v0)
        h = torch.empty((T, N), dtype=torch.float32, device=x.device) if save else None
        kernels.launch("lif_fwd", x.dtype, N, (x, v0, spike, h, v_last, N, T, *cfg.scalars()))
        ctx.save_for_backward(h)
        ctx.cfg, ctx.kernels, ctx.dtype = cfg, kernels, x.dtype
        ctx.set_materialize_grads(False)
        return spike, v_last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gs, gv_last):
        (h,) = ctx.saved_tensors
        T, N = h.shape
        gs = (torch.zeros_like(h, dtype=ctx.dtype) if gs is None
              else gs.to(ctx.dtype).contiguous())
        gv = None if gv_last is None else gv_last.float().contiguous()
        gx = torch.empty_like(gs)
        gv0 = torch.empty((N,), dtype=torch.float32, device=h.device)
        ctx.kernels.launch("lif_bwd", ctx.dtype, N, (gs, gv, h, gx, gv0, N, T, *ctx.cfg.scalars()))
        return gx, gv0, None, None, None


def lif_multistep(x: torch.Tensor, v0: torch.Tensor | None = None, cfg: LifConfig = LifConfig(),
                  kernels=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-step LIF over ``x [T, ...]``; returns ``(S [T, ...] in x's dtype, V [...] float32)``.

    Args:
        x: input current, time-major.
        v0: membrane at t = -1 (``[...]`` or flat); default ``cfg.v_init`` everywhere.
        cfg: neuron options.
        kernels: a loaded build (``kernels_for(device)`` if None).
    """
    _check_dtype(x, "the LIF input")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"the LIF input must be [T, ...] with T >= 1, got shape {tuple(x.shape)}")
    v0 = _v0(v0, x, cfg)
    kernels = kernels or kernels_for(x.device)
    x2 = x.reshape(x.shape[0], -1).contiguous()  # [T, ...] -> [T, N]
    spike, v = _LIF.apply(x2, v0, cfg, kernels, _grad_needed(x2, v0))
    return spike.view(x.shape), v.view(x.shape[1:])


class _EMSAGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, o, r, v0, cfg, kernels, save, want_spike):
        T, N = o.shape  # [T, M*D]
        D = N // r.shape[1]
        y = torch.empty_like(o)
        spike = torch.empty_like(o) if want_spike else o.new_empty(0)
        v_last = torch.empty_like(v0)
        h = torch.empty((T, N), dtype=torch.float32, device=o.device) if save else None
        kernels.launch("emsa_gate_fwd", o.dtype, N,
                       (o, r, v0, y, spike if want_spike else None, h, v_last, N, T, D,
                        *cfg.scalars()))
        ctx.save_for_backward(h, r)
        ctx.cfg, ctx.kernels, ctx.D = cfg, kernels, D
        ctx.mark_non_differentiable(spike)
        ctx.set_materialize_grads(False)
        return y, spike, v_last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, _gspike, gv_last):
        h, r = ctx.saved_tensors
        T, N = h.shape
        gy = torch.zeros_like(h, dtype=r.dtype) if gy is None else gy.to(r.dtype).contiguous()
        gv = None if gv_last is None else gv_last.float().contiguous()
        go = torch.empty_like(gy)
        gr = torch.zeros(r.shape, dtype=torch.float32, device=r.device)  # atomics accumulate here
        gv0 = torch.empty((N,), dtype=torch.float32, device=h.device)
        ctx.kernels.launch("emsa_gate_bwd", r.dtype, N,
                           (gy, r, gv, h, go, gr, gv0, N, T, ctx.D, *ctx.cfg.scalars()))
        return go, gr.to(r.dtype), gv0, None, None, None, None


def emsa_gate(o: torch.Tensor, r: torch.Tensor, v0: torch.Tensor | None = None,
              cfg: LifConfig = LifConfig(v_threshold=0.5), return_spikes: bool = False,
              kernels=None):
    """EMSA's fused expert gate ``Y = R (.) LIF(O)``.

    Args:
        o: expert outputs before their LIF, ``[T, ..., D]`` (e.g. ``[T, B, N, E, d]``).
        r: router spikes ``[T, ...]`` (e.g. ``[T, B, N, E]``), broadcast over D.
        v0: the expert LIF's membrane at t = -1 (default ``cfg.v_init``).
        cfg: the expert neuron (V_th 0.5 in SEMM).
        return_spikes: also return the expert neuron's spikes S (measurement only; not
            differentiable).

    Returns:
        ``(Y [T, ..., D] in o's dtype, S or None, V [..., D] float32)``.
    """
    _check_dtype(o, "EMSA's expert outputs O")
    if tuple(r.shape) != tuple(o.shape[:-1]):
        raise ValueError(f"EMSA gate: the router spikes R must have O's shape without its last "
                         f"(expert width) axis: O {tuple(o.shape)} needs R "
                         f"{tuple(o.shape[:-1])}, got {tuple(r.shape)}")
    v0 = _v0(v0, o, cfg)
    kernels = kernels or kernels_for(o.device)
    o2 = o.reshape(o.shape[0], -1).contiguous()  # [T, ..., D] -> [T, M*D]
    r2 = r.to(o.dtype).reshape(r.shape[0], -1).contiguous()  # [T, ...] -> [T, M]
    y, spike, v = _EMSAGate.apply(o2, r2, v0, cfg, kernels, _grad_needed(o2, r2, v0),
                                  return_spikes)
    return y.view(o.shape), (spike.view(o.shape) if return_spikes else None), v.view(o.shape[1:])


class _EMSPGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, z, v0, cfg, kernels, save, want_spike):
        T, N = g.shape
        y = torch.empty_like(g)
        spike = torch.empty_like(g) if want_spike else g.new_empty(0)
        v_last = torch.empty_like(v0)
        h = torch.empty((T, N), dtype=torch.float32, device=g.device) if save else None
        kernels.launch("emsp_gate_fwd", g.dtype, N,
                       (g, z, v0, y, spike if want_spike else None, h, v_last, N, T,
                        *cfg.scalars()))
        ctx.save_for_backward(h, z)
        ctx.cfg, ctx.kernels = cfg, kernels
        ctx.mark_non_differentiable(spike)
        ctx.set_materialize_grads(False)
        return y, spike, v_last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, _gspike, gv_last):
        h, z = ctx.saved_tensors
        T, N = h.shape
        gy = torch.zeros_like(z) if gy is None else gy.to(z.dtype).contiguous()
        gv = None if gv_last is None else gv_last.float().contiguous()
        gg = torch.empty_like(gy)
        gz = torch.empty_like(gy)
        gv0 = torch.empty((N,), dtype=torch.float32, device=h.device)
        ctx.kernels.launch("emsp_gate_bwd", z.dtype, N,
                           (gy, z, gv, h, gg, gz, gv0, N, T, *ctx.cfg.scalars()))
        return gg, gz, gv0, None, None, None, None


def emsp_gate(g: torch.Tensor, z: torch.Tensor, v0: torch.Tensor | None = None,
              cfg: LifConfig = LifConfig(), return_spikes: bool = False, kernels=None):
    """EMSP's fused channel gate ``Y = LIF(G_pre) (.) Z2``.

    Args:
        g: the gate's pre-activation ``[T, ...]`` (e.g. ``[T, B, N, h/2]``).
        z: the gated half Z2, same shape.
        v0: the gate LIF's membrane at t = -1.
        cfg: the gate neuron.
        return_spikes: also return the gate spikes G (for router statistics; not differentiable).

    Returns:
        ``(Y [T, ...], G [T, ...] or None, V [...] float32)``.
    """
    _check_dtype(g, "EMSP's gate input")
    if g.shape != z.shape:
        raise ValueError(f"EMSP gate: G_pre {tuple(g.shape)} and Z2 {tuple(z.shape)} must have "
                         "the same shape (transpose the gate to the token layout first)")
    v0 = _v0(v0, g, cfg)
    kernels = kernels or kernels_for(g.device)
    g2 = g.reshape(g.shape[0], -1).contiguous()  # [T, ...] -> [T, N]
    z2 = z.to(g.dtype).reshape(z.shape[0], -1).contiguous()
    y, spike, v = _EMSPGate.apply(g2, z2, v0, cfg, kernels, _grad_needed(g2, z2, v0), return_spikes)
    return y.view(g.shape), (spike.view(g.shape) if return_spikes else None), v.view(g.shape[1:])
