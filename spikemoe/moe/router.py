"""SEMM's spiking router and the statistics of its spikes.

    R = LIF(BN(X W_r + b))        X: [T, B, N, C] -> R in {0, 1}^{T x B x N x E}

One spike (or none) per token, per expert, per time step: no softmax, no TopK. A token
may go to several experts at once, or to none (its branch output is then zero and the
residual carries it). The statistics are returned, never stored on the module.

The statistics of router spikes R (SEMM, Zhou et al., NeurIPS 2024: the router average
spiking rate, ASR), from counts over the tokens seen at each time step t:

    expert_rate_per_step[t, e] = sum_tokens R[t, token, e] / tokens[t]
    expert_rate[e]             = sum_t sum_tokens R[t, token, e] / sum_t tokens[t]
    routed_to_none             = #{(t, token): R[t, token, :] = 0} / sum_t tokens[t]

``router_counts`` computes the counts of one tensor; ``RouterCounts.statistics`` the rates.
A model's forward (``router_statistics``) and the measurement over a whole evaluation set
(``spikemoe.analysis.FiringRateMonitor``, which adds the counts of every batch) both use them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..contract import mark_router_neuron
from ..layers.linear_bn import TokenLinearBN
from ..neurons import make_lif

__all__ = ["RouterCounts", "SpikingRouter", "router_counts", "router_statistics"]


@dataclass
class RouterCounts:
    """Spike counts of a router per time step (sums of binary spikes: whole numbers).

    Attributes:
        per_expert: ``[T, E]`` spikes of each expert's router neuron.
        tokens: ``[T]`` tokens seen (every axis but time and experts indexes tokens).
        none: ``[T]`` tokens that reach no expert.
    """

    per_expert: torch.Tensor
    tokens: torch.Tensor
    none: torch.Tensor

    def statistics(self) -> dict[str, torch.Tensor]:
        """The rates (module docstring): ``expert_rate [E]``, ``expert_rate_per_step [T, E]``,
        ``routed_to_none []``; a time step with no token counts as one token with no spike."""
        tokens = self.tokens.clamp_min(1)
        return {
            "expert_rate": self.per_expert.sum(0) / tokens.sum(),
            "expert_rate_per_step": self.per_expert / tokens[:, None],
            "routed_to_none": self.none.sum() / tokens.sum(),
        }


@torch.no_grad()
def router_counts(r: torch.Tensor, expert_axis: int = -1,
                  dtype: torch.dtype = torch.float32) -> RouterCounts:
    """Count router spikes ``r [T, ..., E, ...]`` whose ``expert_axis`` indexes experts.

    Args:
        r: binary spikes, time first; every other axis indexes tokens (e.g. ``[T, B, N, E]``
            for SEMM's router, ``[T, B, E, H, W]`` for EMSP's gate with ``expert_axis=2``).
        expert_axis: the axis of ``r`` that indexes experts.
        dtype: of the counts (float32 in a forward; float64 for sums over a whole data set,
            exact up to 2^53 spikes).
    Returns:
        ``RouterCounts`` with ``per_expert [T, E]``, ``tokens [T]``, ``none [T]`` on ``r``'s
        device.
    """
    r = r.detach().movedim(expert_axis, -1)  # [T, ..., E]
    if r.dim() == 2:  # [T, E]: one token per step
        r = r.unsqueeze(1)
    token_dims = tuple(range(1, r.dim() - 1))
    steps = r.shape[0]
    per_expert = r.sum(token_dims, dtype=dtype)  # [T, ..., E] -> [T, E]
    none = (r.amax(-1) == 0).sum(token_dims, dtype=dtype)  # [T, ...] -> [T]
    tokens = torch.full((steps,), float(r[0, ..., 0].numel()), dtype=dtype, device=r.device)
    return RouterCounts(per_expert, tokens, none)


def router_statistics(r: torch.Tensor) -> dict[str, torch.Tensor]:
    """Statistics of router spikes ``r [T, B, N, E]`` (detached; module docstring).

    Returns:
        ``expert_rate [E]``: average spiking rate of each expert's router neuron (the
        paper's router ASR), over T, B and N.
        ``expert_rate_per_step [T, E]``: the same per time step.
        ``routed_to_none []``: fraction of (t, b, n) whose token reaches no expert.
    """
    return router_counts(r, -1, torch.float32).statistics()


class SpikingRouter(nn.Module):
    """``LIF(BN(Linear(C -> E)))``; forward returns ``(R [T, B, N, E], router_statistics(R))``."""

    def __init__(self, dim: int, num_experts: int, backend: str = "auto") -> None:
        super().__init__()
        self.num_experts = num_experts
        self.gate = TokenLinearBN(dim, num_experts)
        self.lif = mark_router_neuron(make_lif(backend=backend), expert_axis=-1)

    def forward(self, x: torch.Tensor):
        r = self.lif(self.gate(x))  # [T, B, N, C] -> [T, B, N, E]
        return r, router_statistics(r)
