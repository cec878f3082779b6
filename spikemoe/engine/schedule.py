"""Learning-rate schedule: linear warm-up, cosine decay, cool-down at the floor.

In epochs ``e`` (``e = step // steps_per_epoch`` with ``update='epoch'``, the papers' timm
runs; ``e = step / steps_per_epoch`` with ``update='step'``), for peak ``lr``:

    lr(e) = warmup_lr + (lr - warmup_lr) e / W          e < W                 (warm-up)
    lr(e) = min_lr + (lr - min_lr) (1 + cos(pi e / E)) / 2,   W <= e < E      (cosine)
    lr(e) = min_lr                                       E <= e < E + cooldown

As timm's ``CosineLRScheduler`` (``warmup_prefix=False``): the cosine runs over [0, E] and the
warm-up replaces its first W epochs. It is a ``torch.optim.lr_scheduler.LambdaLR`` stepped
once per optimiser step; the lambda is a small dataclass, so ``state_dict()`` holds plain
numbers and resumes exactly. (``SequentialLR`` cannot express a warm-up ending at the cosine's
value at W, and warns on every milestone.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

from .config import ScheduleConfig

__all__ = ["WarmupCosine", "build_scheduler"]


@dataclass
class WarmupCosine:
    """The factor ``lr(step) / lr`` of the module docstring (picklable, plain numbers)."""

    steps_per_epoch: int
    epochs: int
    warmup_epochs: int
    lr: float
    warmup_lr: float
    min_lr: float
    per_step: bool

    def __call__(self, step: int) -> float:
        e = step / self.steps_per_epoch if self.per_step else step // self.steps_per_epoch
        if e < self.warmup_epochs:
            value = self.warmup_lr + (self.lr - self.warmup_lr) * e / self.warmup_epochs
        elif e < self.epochs:
            value = self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * e / self.epochs))
        else:
            value = self.min_lr
        return value / self.lr


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, lr: float,
                    steps_per_epoch: int) -> LambdaLR:
    """A ``LambdaLR`` following ``WarmupCosine`` for ``cfg``; call ``step()`` after each
    optimiser step."""
    fn = WarmupCosine(steps_per_epoch, cfg.epochs, cfg.warmup_epochs, lr, cfg.warmup_lr,
                      cfg.min_lr, cfg.update == "step")
    return LambdaLR(optimizer, fn)
