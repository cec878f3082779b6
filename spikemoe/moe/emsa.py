"""EMSA: Experts Mixture Spiking Attention (SEMM, Zhou et al., NeurIPS 2024).

Head-wise spiking experts: expert i is attention head i, with its own query
``Q_i = LIF(BN(X W_Q,i))`` and, by default, one key and one value projection shared by
all experts (multi-query style). A spiking router chooses, per token and time step,
which experts' outputs pass:

    R   = LIF(BN(X W_r))                           [T, B, N, E]
    O_i = LIF_0.5(Q_i K^T V * s)                   [T, B, N, d]   (Spikformer experts)
        = Q_i (.) LIF_0.5(SUM_n K (.) V)                          (Spike-driven experts)
    Y   = sum_i R_i (.) P_i(O_i)                   P_i places O_i in channels [i d, (i+1) d)
    out = LIF(BN(Y W_O))   (Spikformer)   or   BN(Y W_O)   (Spike-driven, LIF at branch entry)

Because each expert owns its channel slot, the sum is a concatenation and Y stays binary
{0, 1}: the output projection is a pure accumulate even in the Spike-driven twin.

Defaults and the paper: the paper's code is not public. Its text describes head-wise
experts with per-expert queries; the third-party STEP re-implementation uses E = 4,
d = C / E, shared K and a shared full-width V. We keep E = 4 and d = C / E and share K
and V at head width (``per_expert=("q",)``); pass ``per_expert=("q", "k", "v")`` for
experts that are exactly SSA heads, or another ``num_experts`` / ``expert_dim``.

Switches where STEP departs from today's choices (the SEMM paper states none of them):
``expert_vth`` (V_th of the expert output neuron O_i; STEP's experts fire at 1.0 in both
``cls/models/static/spikf_semm_cifar.py`` and ``spikf_semm_imagenet.py``, whose 0.5
``attn_lif`` is commented out), ``expert_scale`` (multiply by s; STEP's ImageNet file never
applies its 0.125), ``kv_bn`` (BatchNorm on the shared K and V; STEP's ImageNet file
leaves ``k_bn`` / ``v_bn`` out of its forward) and ``expert_dim`` (STEP fixes 96 in both
files). Per-recipe defaults are set in ``models/sizes.py``.

Digits-dvs demo (``spikemoe train``, configs/demo.yaml, CPU, 20 epochs), expert V_th:
0.5 -> best 97.46% / final 96.90% test top-1; 1.0 -> best 97.75% /
final 96.90% (one seed each: no measured difference). The DVS recipes keep 0.5 (no STEP
file exists for them).

Parameters: Q C*E*d + K C*d + V C*d + W_O E*d*C + router C*E, i.e. 2.5 C^2 + 4 C at the
defaults, against 4 C^2 for SSA: the experts share K and V, which is the saving SEMM
trades for its router.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..layers.attention import HeadwiseSpikingAttention
from ..layers.saved import compact_saved
from ..neurons import make_lif
from .router import SpikingRouter

_PROJECTIONS = ("q", "k", "v")


class EMSA(HeadwiseSpikingAttention):
    """Head-wise spiking experts in attention, gated by a spiking router.

    Args:
        dim: token width C.
        num_experts: E (4, as in STEP; the paper ablates 2..12).
        expert_dim: d, the width of each expert: an int (STEP fixes 96), or None / ``"C/E"``
            for ``dim // num_experts`` (default).
        per_expert: projections with weights per expert; others are shared (default
            ``("q",)``: per-expert queries, shared K and V).
        kernel: "ssa" (Spikformer experts) or "sdsa" (Spike-driven experts).
        scale: SSA scale s.
        expert_vth: V_th of the expert output neuron (0.5, as Spikformer's attention
            neuron; STEP's experts use 1.0).
        expert_scale: apply ``scale`` to ``Q_i K^T V`` (True; STEP's ImageNet file: False).
        kv_bn: BatchNorm on the shared K and V projections (True; STEP's ImageNet file:
            False, which removes their BN parameters; Q keeps its BN).
        membrane_shortcut: Spike-driven residual style (see ``layers.attention``).
        backend: LIF backend. With ``"cupy"`` and SSA experts the expert neuron and the
            router mask run as one fused kernel, ``Y = R (.) LIF_0.5(O)`` (same values and
            gradients; the product is never stored for the backward). SDSA experts apply
            their LIF before the product with Q, so they keep the unfused path.

    Forward: ``x [T, B, N, C]`` -> ``(out [T, B, N, C], router statistics)``.
    """

    def __init__(self, dim: int, num_experts: int = 4, expert_dim: int | None = None,
                 per_expert: Iterable[str] = ("q",), kernel: str = "ssa", scale: float = 0.125,
                 membrane_shortcut: bool = False, backend: str = "auto", *,
                 expert_vth: float = 0.5, expert_scale: bool = True,
                 kv_bn: bool = True) -> None:
        if isinstance(per_expert, str):
            per_expert = (per_expert,)  # "q" means ("q",), not ("q",) spelt letter by letter
        per_expert = tuple(per_expert)
        if not set(per_expert) <= set(_PROJECTIONS):
            raise ValueError(
                f"per_expert may only name {_PROJECTIONS} (the projections with weights per "
                f"expert), got {per_expert}. The default ('q',) gives per-expert queries and "
                "shared K and V."
            )
        if num_experts > 1 and not per_expert:
            raise ValueError(
                f"per_expert must name at least one of {_PROJECTIONS} with {num_experts} "
                "experts: with Q, K and V all shared every expert computes the same output. "
                "Use the default ('q',)."
            )
        if expert_dim == "C/E":
            expert_dim = None
        if expert_dim is None:
            if dim % num_experts:
                raise ValueError(
                    f"dim {dim} is not divisible by num_experts {num_experts}: pass expert_dim"
                )
            expert_dim = dim // num_experts
        super().__init__(
            dim, num_experts, head_dim=expert_dim, per_head=per_expert, kernel=kernel,
            scale=scale if expert_scale else 1.0, membrane_shortcut=membrane_shortcut,
            router=SpikingRouter(dim, num_experts, backend=backend), backend=backend,
        )
        self.num_experts = num_experts
        self.expert_vth, self.expert_scale, self.kv_bn = float(expert_vth), bool(expert_scale), bool(kv_bn)
        if self.expert_vth != 0.5:
            self.attn_lif = make_lif(v_threshold=self.expert_vth, backend=backend)
        if not self.kv_bn:
            self.qkv = LinearPartialBN(dim, sum(self.widths), bn_width=self.widths[0])
        self.fused_gate = backend == "cupy" and kernel == "ssa"

    def _fire_and_route(self, o: torch.Tensor, s: torch.Tensor
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``Y_h = R_h (.) LIF_0.5(o_h)``: with ``fused_gate`` one kernel
        (``FusedLIF.emsa_gate``), else the two steps of ``HeadwiseSpikingAttention``.

        Args:
            o: the experts' ``Q_h K^T V * s``, ``[T, B, N, E, d]``.
            s: the branch's input spikes ``[T, B, N, C]`` (the router's input).
        Returns:
            ``(Y [T, B, N, E, d], router statistics)``.
        """
        if not self.fused_gate:
            return super()._fire_and_route(o, s)
        r, metrics = self.router(s)  # [T, B, N, E]
        return self.attn_lif.emsa_gate(o, r), metrics


class LinearPartialBN(nn.Module):
    """``Linear`` on ``[T, B, N, C_in]`` tokens, BatchNorm on its first ``bn_width`` output
    channels only (EMSA's Q; K and V pass unnormalised when ``kv_bn=False``)."""

    def __init__(self, in_features: int, out_features: int, bn_width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.bn = nn.BatchNorm1d(bn_width)
        self.bn_width = bn_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        with compact_saved(self.linear.weight, self.linear.bias):
            y = self.linear(x.reshape(-1, x.shape[-1]))  # [T*B*N, C_out]
        y = torch.cat((self.bn(y[:, :self.bn_width]), y[:, self.bn_width:]), dim=1)
        return y.reshape(*lead, -1)  # [T*B*N, C_out] -> [T, B, N, C_out]
