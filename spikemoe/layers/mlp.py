"""Spiking MLP of Spikformer and Spike-driven Transformer (ratio 4 in the papers).

    Spikformer (membrane_shortcut=False):   out = LIF(BN(LIF(BN(X W_1)) W_2))
    Spike-driven (membrane_shortcut=True):  out = BN(LIF(BN(LIF(X) W_1)) W_2)

``X, out: [T, B, N, C]``, hidden width h. In the spike-driven form every matmul input is
a spike tensor, and the output is a membrane value added to the residual stream.
"""
from __future__ import annotations

import torch
from torch import nn

from ..neurons import make_lif
from .linear_bn import TokenLinearBN


class SpikingMLP(nn.Module):
    """Two token-wise Linear+BN layers with LIFs, in either residual style.

    Forward: ``x [T, B, N, C]``, ``grid`` unused; returns ``(out [T, B, N, C], {})``.
    """

    def __init__(self, dim: int, hidden: int, membrane_shortcut: bool = False,
                 backend: str = "auto") -> None:
        super().__init__()
        self.in_lif = make_lif(backend=backend) if membrane_shortcut else None
        self.fc1 = TokenLinearBN(dim, hidden)
        self.fc1_lif = make_lif(backend=backend)
        self.fc2 = TokenLinearBN(hidden, dim)
        self.fc2_lif = None if membrane_shortcut else make_lif(backend=backend)

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None):
        if self.in_lif is not None:
            x = self.in_lif(x)
        y = self.fc2(self.fc1_lif(self.fc1(x)))  # [T, B, N, C] -> [T, B, N, h] -> [T, B, N, C]
        if self.fc2_lif is not None:
            y = self.fc2_lif(y)
        return y, {}
