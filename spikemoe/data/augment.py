"""Train-time augmentation of event frames: horizontal flip plus a TrivialAugment-style policy.

The Spikformer CIFAR10-DVS recipe (Zhou et al. ICLR 2023; its ``SNNAugmentWide``): flip with
probability 0.5, then ONE op drawn uniformly, with a magnitude drawn uniformly from 31 bins and
a random sign (TrivialAugment, Mueller & Hutter 2021):

    Identity
    ShearX      shear angle atan(m), m in [-0.3, 0.3]
    TranslateX  m in [-5, 5] pixels at 128 x 128 (scaled with the frame width: m * W / 128)
    TranslateY  m in [-5, 5] pixels at 128 x 128 (scaled with the frame height)
    Rotate      m in [-30, 30] degrees
    Cutout      one zeroed rectangle: area 5-33% of the frame, aspect ratio 0.2-5

Colour ops of torchvision's ``TrivialAugmentWide`` are left out: frames hold event counts per
polarity, not colours. The ops are torchvision transforms v2 (``functional.affine``,
``functional.rotate``, ``RandomErasing``, ``RandomHorizontalFlip``) applied to the whole
``[T, 2, H, W]`` stack at once, so every time step and both polarities get the SAME geometry
(a per-frame draw would make the scene jump between time steps). Nearest-neighbour
interpolation keeps counts integral; uncovered pixels are 0 (no events).

Randomness comes from torch's global generator, which ``DataLoader`` seeds per worker.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

__all__ = ["EventFrameAugment"]

_NEAREST = v2.InterpolationMode.NEAREST


class EventFrameAugment(nn.Module):
    """Flip + one TrivialAugment-style geometric op on ``[T, 2, H, W]`` event frames.

    Args:
        flip: apply ``RandomHorizontalFlip(0.5)`` first (off for digits: a mirrored 2 is no 2).
        num_magnitude_bins: magnitudes per op (31, as SNNAugmentWide).
        ops: the op names to draw from (default: all six of the module docstring).
    """

    OPS = ("Identity", "ShearX", "TranslateX", "TranslateY", "Rotate", "Cutout")

    def __init__(self, flip: bool = True, num_magnitude_bins: int = 31,
                 ops: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self.ops = tuple(ops) if ops is not None else self.OPS
        unknown = sorted(set(self.ops) - set(self.OPS))
        if unknown:
            raise ValueError(f"unknown augmentation ops {unknown}; choose from {self.OPS}")
        self.flip = v2.RandomHorizontalFlip(0.5) if flip else None
        self.num_magnitude_bins = num_magnitude_bins
        self.cutout = v2.RandomErasing(p=1.0, scale=(0.05, 0.33), ratio=(0.2, 5.0), value=0.0)

    def _magnitude(self, low: float, high: float) -> float:
        """A magnitude from ``linspace(low, high, bins)`` with a random sign (SNNAugmentWide)."""
        bins = torch.linspace(low, high, self.num_magnitude_bins)
        m = float(bins[torch.randint(len(bins), (1,))])
        return -m if torch.randint(2, (1,)).item() else m

    def apply(self, frames: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
        """Apply one named op with a given magnitude (deterministic; for tests and plots)."""
        h, w = frames.shape[-2:]
        affine = {"angle": 0.0, "translate": [0, 0], "scale": 1.0, "shear": [0.0, 0.0],
                  "interpolation": _NEAREST, "fill": 0.0}
        if op == "Identity":
            return frames
        if op == "ShearX":
            shear = math.degrees(math.atan(magnitude))
            return TF.affine(frames, **{**affine, "shear": [shear, 0.0]})
        if op == "TranslateX":
            return TF.affine(frames, **{**affine, "translate": [round(magnitude * w / 128), 0]})
        if op == "TranslateY":
            return TF.affine(frames, **{**affine, "translate": [0, round(magnitude * h / 128)]})
        if op == "Rotate":
            return TF.rotate(frames, magnitude, interpolation=_NEAREST, fill=0.0)
        if op == "Cutout":
            return self.cutout(frames)
        raise ValueError(f"unknown augmentation op {op!r}; choose from {self.OPS}")

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``[T, 2, H, W]`` -> ``[T, 2, H, W]``, one geometry for the whole stack."""
        if frames.dim() != 4:
            raise ValueError("EventFrameAugment expects frames [T, 2, H, W], got shape "
                             f"{list(frames.shape)}")
        if self.flip is not None:
            frames = self.flip(frames)
        op = self.ops[int(torch.randint(len(self.ops), (1,)))]
        ranges = {"ShearX": (0.0, 0.3), "TranslateX": (0.0, 5.0), "TranslateY": (0.0, 5.0),
                  "Rotate": (0.0, 30.0)}
        magnitude = self._magnitude(*ranges[op]) if op in ranges else 0.0
        return self.apply(frames, op, magnitude)

    def extra_repr(self) -> str:
        return (f"flip={self.flip is not None}, ops={self.ops}, "
                f"num_magnitude_bins={self.num_magnitude_bins}")
