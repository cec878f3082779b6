"""What the image datasets take from torchvision: the recipes' transforms v2 and ImageFolder.

Importing this module imports torchvision (~2 s); ``image_datasets`` imports it only when a
split is built. Recipes (Spikformer, Zhou et al. ICLR 2023, and its timm configs):

    ImageNet train  RandomResizedCrop(size, bicubic) -> RandomHorizontalFlip -> RandAugment(2 ops,
                    magnitude 9) -> float -> Normalize(mean, std) -> RandomErasing(0.25,
                    per-pixel random values: timm's ``reprob 0.25, remode pixel``). Mixup 0.8 /
                    cutmix 1.0 act on batches and belong to the trainer.
    ImageNet eval   Resize(size / 0.875, bicubic) -> CenterCrop(size) -> float -> Normalize.
    CIFAR train     RandomCrop(size, padding 4) -> RandomHorizontalFlip -> RandAugment(1 op,
                    magnitude 9) -> float -> Normalize(mean, std) -> RandomErasing(0.25).
                    (Spikformer's CIFAR config: timm ``rand-m9-n1-mstd0.4-inc1``, reprob 0.25;
                    torchvision's RandAugment has no magnitude noise, the one difference.)
    CIFAR eval      Resize(size) when size != 32 -> float -> Normalize.

``mean`` and ``std`` are each dataset's, from its spec (``image_datasets``).
"""
from __future__ import annotations

import torch
from torchvision import datasets as tvd
from torchvision.transforms import v2

__all__ = ["ImageNetFolder", "cifar_transform", "imagenet_transform", "then"]

Stats = tuple[tuple[float, ...], tuple[float, ...]]
_BICUBIC = v2.InterpolationMode.BICUBIC


def _to_float(stats: Stats) -> list:
    mean, std = stats
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def imagenet_transform(stats: Stats, train: bool, size: int = 224) -> v2.Compose:
    """The ImageNet recipe's train or eval transform (module docstring): ``[3, size, size]``."""
    if train:
        return v2.Compose([v2.RandomResizedCrop(size, interpolation=_BICUBIC, antialias=True),
                           v2.RandomHorizontalFlip(), v2.RandAugment(num_ops=2, magnitude=9),
                           *_to_float(stats), v2.RandomErasing(p=0.25, value="random")])
    return v2.Compose([v2.Resize(round(size / 0.875), interpolation=_BICUBIC, antialias=True),
                       v2.CenterCrop(size), *_to_float(stats)])


def cifar_transform(stats: Stats, train: bool, size: int = 32) -> v2.Compose:
    """The CIFAR recipe's train or eval transform (module docstring): ``[3, size, size]``."""
    resize = [v2.Resize(size, antialias=True)] if size != 32 else []
    if train:
        return v2.Compose([*resize, v2.RandomCrop(size, padding=4), v2.RandomHorizontalFlip(),
                           v2.RandAugment(num_ops=1, magnitude=9), *_to_float(stats),
                           v2.RandomErasing(p=0.25, value="random")])
    return v2.Compose([*resize, *_to_float(stats)])


def then(transform, extra) -> v2.Compose:
    """``transform`` followed by ``extra`` (a callable on the tensor)."""
    return v2.Compose([transform, extra])


class ImageNetFolder(tvd.ImageFolder):
    """ImageFolder whose classes come from ``train/`` for both splits (val must not renumber)."""

    def __init__(self, root: str, classes: list[str], **kwargs) -> None:
        self._classes = classes
        super().__init__(root, **kwargs)

    def find_classes(self, directory):
        return self._classes, {c: i for i, c in enumerate(self._classes)}
