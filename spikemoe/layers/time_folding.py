"""How event frames enter an ANN: sum over time, or fold time into channels.

An ANN has no time axis. Event frames ``I [T, B, C, H, W]`` (spike counts per time bin) are
turned into one image per sample before the first layer:

    sum :  X[b, c]         = sum_t I[t, b, c]          [T, B, C, H, W] -> [B, C, H, W]
    fold:  X[b, t * C + c] = I[t, b, c]                [T, B, C, H, W] -> [B, T*C, H, W]

``sum`` keeps the total event count per pixel and polarity (the first layer sees C channels
and costs the same for any T); ``fold`` keeps the order of events (the first layer sees T*C
channels: its MACs grow with T, and T must be the model's). A static image ``[B, C, H, W]``
passes through ``sum`` unchanged; under ``fold`` it is repeated T times first (the spiking
models' contract for static images: the T-step repetition of the image), which for T = 1
is again the image unchanged.

Written by hand: a sum and a reshape; no library names these two conventions.
"""
from __future__ import annotations

import torch
from torch import nn

TIME_MODES = ("sum", "fold")


def stem_channels(mode: str, in_channels: int, T: int) -> int:
    """Channels the first layer reads: C for ``sum``, T*C for ``fold``."""
    if mode not in TIME_MODES:
        raise ValueError(f"time_mode must be one of {TIME_MODES}, got {mode!r}")
    return in_channels * (T if mode == "fold" else 1)


class TimeFolding(nn.Module):
    """``[T, B, C, H, W]`` or ``[B, C, H, W]`` -> ``[B, C', H, W]`` (module docstring).

    Args:
        mode: ``"sum"`` or ``"fold"``.
        T: the model's time steps (``fold`` requires event frames with exactly T steps).
    """

    def __init__(self, mode: str, T: int) -> None:
        super().__init__()
        if mode not in TIME_MODES:
            raise ValueError(f"time_mode must be one of {TIME_MODES}, got {mode!r}")
        if int(T) < 1:
            raise ValueError(f"T (time steps) must be >= 1, got {T}")
        self.mode, self.T = mode, int(T)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, T={self.T}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # a static image [B, C, H, W]
            if self.mode == "sum" or self.T == 1:
                return x
            return x.repeat(1, self.T, 1, 1)  # [B, C, H, W] -> [B, T*C, H, W] (t-major)
        if x.ndim != 5:
            raise ValueError(f"TimeFolding expects [T, B, C, H, W] or [B, C, H, W], got a tensor "
                             f"of shape {tuple(x.shape)}")
        if self.mode == "sum":
            return x.sum(dim=0)  # [T, B, C, H, W] -> [B, C, H, W]
        t, b, c, h, w = x.shape
        if t != self.T:
            raise ValueError(
                f"time_mode='fold' stacks the model's T={self.T} frames into {self.T * c} channels, "
                f"but the input has T={t} (shape {tuple(x.shape)}). Feed {self.T} frames (data.T="
                f"{self.T}), build the model with T={t}, or use time_mode='sum'.")
        return x.permute(1, 0, 2, 3, 4).reshape(b, t * c, h, w)  # [T, B, C, H, W] -> [B, T*C, H, W]
