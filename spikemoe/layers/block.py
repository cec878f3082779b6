"""One transformer block: two residual branches on the token stream.

    X' = X + Attn(X)
    Y  = X' + MLP(X')

In Spikformer X is a sum of spike tensors (integers); in the Spike-driven Transformer
it is a membrane value and each branch starts with its own LIF (membrane shortcut). The
branches decide that; the block only adds. ``X, Y: [T, B, N, C]``.

Both branches follow the block contract of ``spikemoe.contract``: ``(out, metrics)``, an
auxiliary loss (if any) in ``metrics[AUX_LOSS]``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..contract import AUX_LOSS, split_aux


class SpikingBlock(nn.Module):
    """Residual attention then residual MLP; both branches return ``(out, metrics)``.

    Forward: ``x [T, B, N, C]``, ``grid (H, W)`` -> ``(y [T, B, N, C], metrics)`` with the
    branches' metrics under ``attn.`` and ``mlp.``, and the sum of their auxiliary losses
    under ``AUX_LOSS`` (absent when neither branch has one).
    """

    def __init__(self, attn: nn.Module, mlp: nn.Module) -> None:
        super().__init__()
        self.attn = attn
        self.mlp = mlp

    def forward(self, x: torch.Tensor, grid: tuple[int, int]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        a, attn_metrics = self.attn(x, grid)
        x = x + a
        m, mlp_metrics = self.mlp(x, grid)
        metrics: dict[str, torch.Tensor] = {}
        auxes = []
        for branch, branch_metrics in (("attn", attn_metrics), ("mlp", mlp_metrics)):
            aux, branch_metrics = split_aux(branch_metrics)
            if aux is not None:
                auxes.append(aux)
            metrics.update({f"{branch}.{k}": v for k, v in branch_metrics.items()})
        if auxes:
            metrics[AUX_LOSS] = sum(auxes[1:], auxes[0])
        return x + m, metrics
