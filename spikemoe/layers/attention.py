"""Head-wise spiking self-attention: Spikformer's SSA, Spike-driven Transformer's SDSA,
and (with a spiking router) SEMM's EMSA, all from one module.

Tokens are ``[T, B, N, C]``. The input projections give per-head binary Q, K, V:

    Q_h = LIF(BN(X W_Q,h)),  K_h = LIF(BN(X W_K,h)),  V_h = LIF(BN(X W_V,h))

A projection listed in ``per_head`` has its own weights per head (width H*d); one not
listed is a single d-wide projection shared by every head (multi-query style). Per head

    O_h = LIF_0.5(Q_h K_h^T V_h * s)               kernel="ssa"  (Spikformer)
    O_h = Q_h (.) LIF_0.5(SUM_n K_h (.) V_h)        kernel="sdsa" (Spike-driven Transformer)

With a router ``R in {0,1}^{T x B x N x H}`` (SEMM), head h is expert h and its output
is masked by the router's spike for that token: ``Y_h = R_h (.) O_h``; without one,
``Y_h = O_h``. The heads are concatenated, ``Y = [Y_1 .. Y_H]`` (binary), then projected.

Two residual styles (``membrane_shortcut``):
    False  Spikformer: the branch takes spikes and ends in a LIF,
           ``out = LIF(BN(Y W_O))``.
    True   Spike-driven Transformer: the branch takes membrane values, starts with a LIF
           and ends before one, ``out = BN(Y W_O)``, so every matmul input is binary.

Written here rather than reusing ``spikingjelly...SpikingSelfAttention`` because that
layer fixes Q, K and V to one fused per-head projection and has no place for a router
or shared K/V; its math is the same (tests check SSA against it).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..neurons import make_lif
from .kernels import sdsa_column_sum, ssa_scores_times_values
from .linear_bn import TokenLinearBN
from .saved import compact_saved

KERNELS = ("ssa", "sdsa")


class HeadwiseSpikingAttention(nn.Module):
    """Spiking attention over ``num_heads`` heads of width ``head_dim``.

    Args:
        dim: token width C.
        num_heads: heads H (the experts when a router is given).
        head_dim: d; default ``dim // num_heads``.
        per_head: which of "q", "k", "v" have their own weights per head; the others are
            one d-wide projection shared by all heads.
        kernel: "ssa" or "sdsa" (see the module docstring).
        scale: s of the SSA kernel (ignored by SDSA).
        membrane_shortcut: residual style (see the module docstring).
        router: optional module mapping the branch input ``[T, B, N, C]`` to
            ``(R [T, B, N, H] in {0, 1}, stats dict)``.
        backend: LIF backend, see ``spikemoe.neurons``.
        qkv_bias: a bias on the Q/K/V projections (Spikformer's CIFAR code has one;
            Spikingformer's ImageNet code, ``Conv1d(..., bias=False)``, has none).

    Forward:
        x: ``[T, B, N, C]``; grid: the token grid ``(H, W)`` (unused here).
        Returns ``(out [T, B, N, C], metrics)``; metrics are the router's statistics.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int | None = None,
        per_head: Iterable[str] = ("q", "k", "v"),
        kernel: str = "ssa",
        scale: float = 0.125,
        membrane_shortcut: bool = False,
        router: nn.Module | None = None,
        backend: str = "auto",
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        per_head = tuple(per_head)
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if not set(per_head) <= {"q", "k", "v"}:
            raise ValueError(f"per_head may only name 'q', 'k', 'v'; got {per_head}")
        if num_heads < 1 or (head_dim is not None and head_dim < 1):
            raise ValueError(f"num_heads and head_dim must be >= 1, got num_heads={num_heads}, "
                             f"head_dim={head_dim}")
        if num_heads > 1 and not per_head:
            raise ValueError(f"per_head must name at least one of 'q', 'k', 'v' when there are "
                             f"{num_heads} heads: with all three shared every head is the same")
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(
                    f"dim {dim} is not divisible by num_heads {num_heads}: pass head_dim explicitly"
                )
            head_dim = dim // num_heads
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim
        self.kernel, self.scale = kernel, float(scale)
        self.per_head = per_head
        self.widths = [(num_heads if name in per_head else 1) * head_dim for name in "qkv"]
        self.in_lif = make_lif(backend=backend) if membrane_shortcut else None
        self.qkv = TokenLinearBN(dim, sum(self.widths), bias=qkv_bias)  # Q, K, V fused: one matmul
        self.qkv_lif = make_lif(backend=backend)
        self.router = router
        self.attn_lif = make_lif(v_threshold=0.5, backend=backend)
        self.proj = TokenLinearBN(num_heads * head_dim, dim)
        self.proj_lif = None if membrane_shortcut else make_lif(backend=backend)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        T, B, N, w = t.shape
        # [T, B, N, h*d] -> [T*B, N, h, d] -> [T*B, h, N, d]
        return t.reshape(T * B, N, w // self.head_dim, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        T, B, N, _ = x.shape
        s = self.in_lif(x) if self.in_lif is not None else x  # spikes [T, B, N, C]
        qkv = self.qkv_lif(self.qkv(s))  # [T, B, N, wq + wk + wv]
        q, k, v = (self._split_heads(t) for t in qkv.split(self.widths, dim=-1))
        if self.kernel == "ssa":
            with compact_saved():  # Q, K, V and the counts K^T V are saved as bytes
                o = ssa_scores_times_values(q, k, v, self.scale)  # [T*B, H, N, d]
            o = o.transpose(1, 2).reshape(T, B, N, self.num_heads, self.head_dim)
            y, metrics = self._fire_and_route(o, s)  # [T, B, N, H, d] binary
        else:
            with compact_saved():
                kv = sdsa_column_sum(k, v)  # [T*B, hk, 1, d]
            kv = self.attn_lif(kv.reshape(T, B, -1, 1, self.head_dim)).flatten(0, 1)
            with compact_saved():
                o = (q * kv).transpose(1, 2).reshape(T, B, N, self.num_heads, self.head_dim)
            y, metrics = self._route(o, s)  # [T, B, N, H, d] binary
        y = self.proj(y.reshape(T, B, N, self.num_heads * self.head_dim))  # [T, B, N, C]
        if self.proj_lif is not None:
            y = self.proj_lif(y)
        return y, metrics

    def _fire_and_route(self, o: torch.Tensor, s: torch.Tensor
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """SSA's last steps: ``O_h = LIF_0.5(o_h)``, then the router mask (``_route``).

        Args:
            o: ``Q_h K_h^T V_h * s`` per head, ``[T, B, N, H, d]``.
            s: the branch's input spikes ``[T, B, N, C]`` (the router's input).
        """
        return self._route(self.attn_lif(o), s)

    def _route(self, o: torch.Tensor, s: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``Y_h = R_h (.) O_h`` with ``R = router(s)`` ``[T, B, N, H]``; ``Y = O`` and no
        metrics without a router. ``o: [T, B, N, H, d]``."""
        if self.router is None:
            return o, {}
        r, metrics = self.router(s)  # [T, B, N, H]
        with compact_saved():
            o = o * r.unsqueeze(-1)  # Y_h = R_h (.) O_h
        return o, metrics
