"""The multi-step LIF as one autograd Function that keeps only the charged membrane H.

SpikingJelly 2.0 runs ``LIFNode`` on CPU tensors as its torch reference under autograd:
a graph of a dozen small ops per time step that keeps, per element, H - V_th (surrogate),
1 - S and H (hard reset): 12 bytes. On CUDA its registered operator keeps H, the input X and
V (8 bytes). The backward needs only H (4 bytes an element):

    forward, per t:  H[t] = V + (X[t] - (V - V_reset)) / tau        (decay_input; else
                            V - (V - V_reset) / tau + X[t])
                     S[t] = H[t] >= V_th
                     V    = S V_reset + (1 - S) H[t]   (hard)  |  H[t] - S V_th   (soft)
    backward, t = T-1 .. 0, with sg = alpha s (1 - s), s = sigmoid(alpha (H[t] - V_th)):
                     dH   = dS[t] sg + dV (1 - S[t])   (hard; soft: + dV; dV = 0 at t = T-1)
                     dX[t] = dH / tau  (decay_input; else dH),   dV <- dH - dH / tau

with ``detach_reset=True`` (the reset does not pass a gradient through S). On CPU both
loops are written here with SpikingJelly's own arithmetic, op for op and in autograd's
order, into preallocated outputs (no per-step lists, no stacking), in slices of neurons so
that per-step temporaries stay small; values and gradients are bit for bit those of
SpikingJelly's graph (``tests/test_memory.py``). On CUDA the Function calls SpikingJelly's
registered operator (``torch.ops.sj_lif``: its native or Triton kernel) without a graph and
its backward operator from H.

Scope (else the caller keeps SpikingJelly's path): ``detach_reset=True``, the sigmoid
surrogate, float32 on CPU (float32/float16/bfloat16 on CUDA), no stored V sequence.
"""
from __future__ import annotations

import torch

__all__ = ["CPU_SLICE", "CompactLIF"]

CPU_SLICE = 1 << 18  # neurons per slice on CPU: per-step temporaries of 1 MiB each


def _forward_cpu(x, v, tau, decay_input, th, reset, s_out, h_out, v_out) -> None:
    """One slice: ``x [T, n]``, ``v [n]`` -> spikes ``s_out``, ``h_out [T, n]``, ``v_out [n]``."""
    r = 0.0 if reset is None else reset
    tmp = torch.empty_like(v)
    spike = torch.empty_like(v)
    for t in range(x.shape[0]):
        h = h_out[t]
        if decay_input:  # h = v + (x - (v - r)) / tau
            torch.sub(v, r, out=tmp)
            torch.sub(x[t], tmp, out=tmp).div_(tau)
            torch.add(v, tmp, out=h)
        else:  # h = v - (v - r) / tau + x
            torch.sub(v, r, out=tmp).div_(tau)
            torch.sub(v, tmp, out=tmp)
            torch.add(tmp, x[t], out=h)
        torch.sub(h, th, out=tmp)
        spike.copy_(tmp >= 0)  # S = (h - V_th >= 0) as float, as SpikingJelly's surrogate
        s_out[t].copy_(spike)
        if reset is None:  # v = h - S * V_th
            torch.sub(h, spike * th, out=v)
        else:  # v = S * V_reset + (1 - S) * h
            torch.neg(spike, out=tmp).add_(1.0).mul_(h)  # (1 - S) h; -a + 1 == 1 - a exactly
            torch.add(spike.mul_(reset), tmp, out=v)


def _backward_cpu(gs, gv, h, tau, decay_input, th, reset, alpha, gx_out, gv_out) -> None:
    """One slice: ``gs [T, n]``, ``gv [n]`` (or None), ``h [T, n]`` -> ``gx_out``, ``gv_out``."""
    carry = None if gv is None else gv.clone()
    sg = torch.empty_like(h[0])
    one_minus = torch.empty_like(h[0])
    for t in range(h.shape[0] - 1, -1, -1):
        torch.sub(h[t], th, out=sg)
        s = torch.sigmoid(sg.mul_(alpha))  # s = sigmoid(alpha * (h - V_th))
        torch.neg(s, out=one_minus).add_(1.0).mul_(s).mul_(alpha)  # sg = (1 - s) * s * alpha
        gh = gs[t] * one_minus  # dS * sg
        if carry is not None:
            if reset is None:
                gh.add_(carry)  # soft reset, detached: dH += dV
            else:
                spike = (h[t] >= th).to(h.dtype)  # 1 - S from H, as the forward's S
                gh.add_(carry.mul_(spike.neg_().add_(1.0)))  # dH += dV * (1 - S)
        if decay_input:
            torch.div(gh, tau, out=gx_out[t])  # dX = dH / tau
            carry = gh.sub_(gx_out[t])  # dV = dH + (-(dH / tau))
        else:
            gx_out[t].copy_(gh)
            carry = gh.sub_(gh / tau)
    if carry is None:
        gv_out.zero_()
    else:
        gv_out.copy_(carry)


class CompactLIF(torch.autograd.Function):
    """``(X [T, ...], V0 [...], params) -> (S [T, ...], V[T-1] [...])``, saving H only.

    ``params`` is SpikingJelly's operator tuple ``(tau, decay_input, v_threshold, v_reset,
    detach_reset=True, alpha, store_v_seq=False, surrogate_id=0)``.
    """

    @staticmethod
    def forward(ctx, x, v, params):
        T, shape = x.shape[0], x.shape
        tau, decay_input, th, reset = params[:4]
        ctx.params, ctx.dtype, ctx.shape = params, x.dtype, shape
        ctx.set_materialize_grads(False)
        if x.device.type != "cpu":
            from spikingjelly._ops.lif import _forward

            spikes, v_last, h = _forward(x, v, *params)
            ctx.save_for_backward(h.reshape(T, -1))
            return spikes, v_last
        x2 = x.reshape(T, -1)  # [T, ...] -> [T, N] (a copy only if x is not contiguous)
        v2 = v.reshape(-1).clone()  # [N], updated in place step by step
        spikes = torch.empty_like(x2)
        h = torch.empty_like(x2)
        n = v2.numel()
        for a in range(0, n, CPU_SLICE):
            b = min(a + CPU_SLICE, n)
            _forward_cpu(x2[:, a:b], v2[a:b], tau, decay_input, th, reset, spikes[:, a:b],
                         h[:, a:b], v2[a:b])
        ctx.save_for_backward(h)  # [T, N] float32: all the backward needs
        return spikes.view(shape), v2.view(shape[1:])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gs, gv):
        (h,) = ctx.saved_tensors  # [T, N]
        T, n = h.shape
        shape, params = ctx.shape, ctx.params
        gs2 = (torch.zeros_like(h, dtype=ctx.dtype) if gs is None
               else gs.reshape(T, n).contiguous())  # [T, ...] -> [T, N]
        if h.device.type != "cpu":
            gv2 = torch.zeros_like(h[0]) if gv is None else gv.reshape(n).contiguous()
            gx, gv0 = torch.ops.sj_lif.backward.default(gs2, gv2, h, *params)
        else:
            tau, decay_input, th, reset, _, alpha = params[:6]
            gv2 = None if gv is None else gv.reshape(n)
            gx, gv0 = torch.empty_like(gs2), torch.empty_like(h[0])
            for a in range(0, n, CPU_SLICE):
                b = min(a + CPU_SLICE, n)
                _backward_cpu(gs2[:, a:b], None if gv2 is None else gv2[a:b], h[:, a:b], tau,
                              decay_input, th, reset, alpha, gx[:, a:b], gv0[a:b])
        gx = gx.view(shape)
        if gs is not None and not gs.is_contiguous():
            # Autograd's elementwise backward gives X's gradient the layout of the incoming
            # one; the next backward (BatchNorm's reductions) depends on that bitwise.
            gx = torch.empty_like(gs).copy_(gx)
        return gx, gv0.view(shape[1:]), None
