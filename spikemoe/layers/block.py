"""One transformer block: two residual branches on the token stream.

    X' = X + Attn(X)
    Y  = X' + MLP(X')

In Spikformer X is a sum of spike tensors (integers); in the Spike-driven Transformer
it is a membrane value and each branch starts with its own LIF (membrane shortcut). The
branches decide that; the block only adds. ``X, Y: [T, B, N, C]``.
"""
from __future__ import annotations

import torch
from torch import nn


class SpikingBlock(nn.Module):
    """Residual attention then residual MLP; both branches return ``(out, metrics)``.

    Forward: ``x [T, B, N, C]``, ``grid (H, W)`` -> ``(y [T, B, N, C], metrics)`` with the
    branches' metrics under ``attn.`` and ``mlp.``.
    """

    def __init__(self, attn: nn.Module, mlp: nn.Module) -> None:
        super().__init__()
        self.attn = attn
        self.mlp = mlp

    def forward(self, x: torch.Tensor, grid: tuple[int, int]):
        a, attn_metrics = self.attn(x, grid)
        x = x + a
        m, mlp_metrics = self.mlp(x, grid)
        metrics = {f"attn.{k}": v for k, v in attn_metrics.items()}
        metrics.update({f"mlp.{k}": v for k, v in mlp_metrics.items()})
        return x + m, metrics
