"""Exponential moving average of the weights: ``torch.optim.swa_utils.AveragedModel``.

    theta_ema <- decay * theta_ema + (1 - decay) * theta       after every optimiser step

Buffers (BatchNorm statistics) are averaged too (``use_buffers=True``), so the EMA model is
evaluated as is. Nothing is written by hand here but the choice of options.
"""
from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["build_ema"]


def build_ema(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An EMA copy of ``model`` (unwrapped, not the DDP wrapper), or None when ``decay`` is None."""
    if decay is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
