"""Batch mixing (MixUp / CutMix) with torchvision transforms v2, for frames and images.

torchvision's ``MixUp`` and ``CutMix`` pair each sample with its neighbour in the batch and
return soft targets ``[B, K]``. They expect the batch first; event batches are time-major, so
``[T, B, 2, H, W]`` is viewed as a ``Video`` ``[B, T, 2, H, W]``: one mixing weight and one
CutMix box per sample, the same for every time step and polarity. Written here: only that
layout change, the per-batch probability and the switch-off epoch (timm's ``Mixup`` has
them; torchvision's transforms do not). All draws use torch's global generator, whose state
every checkpoint stores.
"""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from .config import AugmentConfig

__all__ = ["BatchMixer", "build_mixer"]


class BatchMixer:
    """``mixer(x, y, epoch) -> (x, targets)``: targets are ``y`` (int64 ``[B]``) when the
    batch is not mixed, soft ``[B, K]`` when it is.

    Args:
        transform: a torchvision v2 batch transform taking ``(images, labels)``.
        prob: chance that a batch is mixed.
        off_epoch: from this 0-based epoch on, never mix (None: always may).
    """

    def __init__(self, transform, prob: float, off_epoch: int | None) -> None:
        self.transform, self.prob, self.off_epoch = transform, prob, off_epoch

    def active(self, epoch: int) -> bool:
        return self.off_epoch is None or epoch < self.off_epoch

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.active(epoch):
            return x, y
        if self.prob < 1 and float(torch.rand(())) >= self.prob:
            return x, y
        if x.dim() == 5:  # [T, B, C, H, W] -> [B, T, C, H, W]: the batch first, as a video
            video, targets = self.transform(tv_tensors.Video(x.transpose(0, 1)), y)
            return video.as_subclass(torch.Tensor).transpose(0, 1).contiguous(), targets
        images, targets = self.transform(x, y)  # [B, C, H, W]
        return images, targets


def build_mixer(cfg: AugmentConfig, num_classes: int) -> BatchMixer | None:
    """The mixer ``cfg`` asks for, or None when both alphas are 0."""
    options, weights = [], []
    if cfg.mixup_alpha > 0:
        options.append(v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes))
        weights.append(1 - cfg.switch_prob if cfg.cutmix_alpha > 0 else 1.0)
    if cfg.cutmix_alpha > 0:
        options.append(v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes))
        weights.append(cfg.switch_prob if cfg.mixup_alpha > 0 else 1.0)
    if not options:
        return None
    transform = options[0] if len(options) == 1 else v2.RandomChoice(options, p=weights)
    return BatchMixer(transform, cfg.prob, cfg.off_epoch)
