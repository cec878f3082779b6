"""SEMM's spiking router and the statistics of its spikes.

    R = LIF(BN(X W_r + b))        X: [T, B, N, C] -> R in {0, 1}^{T x B x N x E}

One spike (or none) per token, per expert, per time step: no softmax, no TopK. A token
may go to several experts at once, or to none (its branch output is then zero and the
residual carries it). The statistics are returned, never stored on the module.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers.linear_bn import TokenLinearBN
from ..neurons import make_lif


def router_statistics(r: torch.Tensor) -> dict[str, torch.Tensor]:
    """Statistics of router spikes ``r [T, B, N, E]`` (detached).

    Returns:
        ``expert_rate [E]``: average spiking rate of each expert's router neuron (the
        paper's router ASR), over T, B and N.
        ``expert_rate_per_step [T, E]``: the same per time step.
        ``routed_to_none []``: fraction of (t, b, n) whose token reaches no expert.
    """
    with torch.no_grad():
        r = r.detach().float()
        per_step = r.mean(dim=(1, 2))  # [T, B, N, E] -> [T, E]
        return {
            "expert_rate": per_step.mean(0),
            "expert_rate_per_step": per_step,
            "routed_to_none": (r.amax(dim=-1) == 0).float().mean(),
        }


def mark_router_neuron(neuron: nn.Module, expert_axis: int) -> nn.Module:
    """Tag a router's LIF so that measurement finds it: its output's ``expert_axis`` indexes
    experts (every other axis but time indexes tokens). Returns the neuron."""
    neuron.expert_axis = expert_axis
    return neuron


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
