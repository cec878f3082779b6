"""Token-wise Linear + BatchNorm on time-major token tensors.

    Y = BN(X W^T + b)        X: [T, B, N, C_in] -> Y: [T, B, N, C_out]

BatchNorm normalises each output channel over all T*B*N positions, which is what the
papers' ``Conv1d(k=1) + BatchNorm1d`` on ``[T*B, C, N]`` computes; the channel-last
layout avoids two transposes per layer. The Linear keeps its bias, as in the official
Spikformer CIFAR code, so parameter counts match the published ones.

The Linear's input is spikes (or, on Spikformer's residual stream, small spike counts): it is
saved for the backward as bytes (``layers.saved.compact_saved``), with the same gradients.
"""
from __future__ import annotations

import torch
from torch import nn

from .saved import compact_saved


class TokenLinearBN(nn.Module):
    """``Linear`` then ``BatchNorm1d`` over the channel axis of ``[T, B, N, C]`` tokens."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.bn = nn.BatchNorm1d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        with compact_saved(self.linear.weight, self.linear.bias):
            y = self.linear(x.reshape(-1, x.shape[-1]))  # [T, B, N, C_in] -> [T*B*N, C_out]
        return self.bn(y).reshape(*lead, -1)  # [T*B*N, C_out] -> [T, B, N, C_out]
