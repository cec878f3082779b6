"""Static image datasets through torchvision: ImageNet (ImageFolder) and CIFAR10/100.

Items are ``(x [3, H, W] float32, normalised, y int)``; the model repeats a static image over
its T time steps, so T and integration do not apply here.

Recipes (``papers.md`` 2.3), in torchvision transforms v2:
    ImageNet train  RandomResizedCrop(size, bicubic) -> RandomHorizontalFlip -> RandAugment(2 ops,
                    magnitude 9) -> float -> Normalize(ImageNet mean/std) -> RandomErasing(0.25,
                    per-pixel random values: timm's ``reprob 0.25, remode pixel``). Mixup 0.8 /
                    cutmix 1.0 act on batches and belong to the trainer.
    ImageNet eval   Resize(size / 0.875, bicubic) -> CenterCrop(size) -> float -> Normalize.
    CIFAR train     RandomCrop(size, padding 4) -> RandomHorizontalFlip -> RandAugment(1 op,
                    magnitude 9) -> float -> Normalize(CIFAR mean/std) -> RandomErasing(0.25).
                    (Spikformer's CIFAR config: timm ``rand-m9-n1-mstd0.4-inc1``, reprob 0.25;
                    torchvision's RandAugment has no magnitude noise, the one difference.)
    CIFAR eval      Resize(size) when size != 32 -> float -> Normalize.

On-disk layouts: ImageNet ``ROOT/train/<wnid>/*.JPEG`` and ``ROOT/val/<wnid>/*.JPEG`` (the
validation images sorted into class folders, e.g. by the usual ``valprep.sh``; 1000 folders
named by WordNet ID, n01440764 ...). CIFAR: torchvision's ``ROOT/cifar-10-batches-py/`` or
``ROOT/cifar-100-python/``; downloaded only when ``download=True``.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torchvision import datasets as tvd
from torchvision.transforms import v2

__all__ = ["IMAGE_STATS", "cifar_transform", "create_image_dataset", "imagenet_transform"]

IMAGE_STATS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_WNID = re.compile(r"^n\d{8}$")
_BICUBIC = v2.InterpolationMode.BICUBIC


def _to_float(name: str) -> list:
    mean, std = IMAGE_STATS[name]
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def imagenet_transform(train: bool, size: int = 224) -> v2.Compose:
    """The ImageNet recipe's train or eval transform (module docstring): ``[3, size, size]``."""
    if train:
        return v2.Compose([v2.RandomResizedCrop(size, interpolation=_BICUBIC, antialias=True),
                           v2.RandomHorizontalFlip(), v2.RandAugment(num_ops=2, magnitude=9),
                           *_to_float("imagenet"), v2.RandomErasing(p=0.25, value="random")])
    return v2.Compose([v2.Resize(round(size / 0.875), interpolation=_BICUBIC, antialias=True),
                       v2.CenterCrop(size), *_to_float("imagenet")])


def cifar_transform(name: str, train: bool, size: int = 32) -> v2.Compose:
    """The CIFAR recipe's train or eval transform ('cifar10' / 'cifar100'): ``[3, size, size]``."""
    resize = [v2.Resize(size, antialias=True)] if size != 32 else []
    if train:
        return v2.Compose([*resize, v2.RandomCrop(size, padding=4), v2.RandomHorizontalFlip(),
                           v2.RandAugment(num_ops=1, magnitude=9), *_to_float(name),
                           v2.RandomErasing(p=0.25, value="random")])
    return v2.Compose([*resize, *_to_float(name)])


def _cifar(name: str, split: str, root: Path, transform, download: bool):
    cls, folder = ((tvd.CIFAR10, "cifar-10-batches-py") if name == "cifar10"
                   else (tvd.CIFAR100, "cifar-100-python"))
    try:
        return cls(str(root), train=split == "train", transform=transform, download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted ..."
        files = ("data_batch_1..5, test_batch, batches.meta" if name == "cifar10"
                 else "train, test, meta")
        raise FileNotFoundError(
            f"{name}: no intact copy under {root} (torchvision says: {e}). Expected layout: "
            f"ROOT/{folder}/ with {files} (the python version of the archive). Download it with "
            f"`python datasets/prepare_cifar.py --name {name} --root {root} --download` or "
            f"create_dataset(..., download=True); check it with "
            f"`spikemoe data verify {name} --root {root}`."
        ) from e


class _ImageNetFolder(tvd.ImageFolder):
    """ImageFolder whose classes come from ``train/`` for both splits (val must not renumber)."""

    def __init__(self, root: str, classes: list[str], **kwargs) -> None:
        self._classes = classes
        super().__init__(root, **kwargs)

    def find_classes(self, directory):
        return self._classes, {c: i for i, c in enumerate(self._classes)}


def imagenet_classes(root: Path) -> list[str]:
    """The sorted WordNet-ID folders of ``ROOT/train``, checked; raises with the expected layout."""
    help_ = (f"Expected layout: ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG (1000 folders "
             f"named like n01440764). ImageNet cannot be downloaded automatically; see "
             f"datasets/imagenet.md, then run `spikemoe data verify imagenet --root {root}`.")
    train = root / "train"
    if not train.is_dir():
        raise FileNotFoundError(f"imagenet: no folder {train}. " + help_)
    classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    bad = [c for c in classes if not _WNID.match(c)]
    if bad or not classes:
        what = (f"class folder {bad[0]!r} in {train} is not a WordNet ID" if bad
                else f"{train} has no class folders")
        raise ValueError(f"imagenet: {what}; expected class names like n01440764 (n + 8 digits). "
                         + help_)
    return classes


def create_image_dataset(name: str, split: str, root: str | Path | None, *, size: int | None,
                         train_aug: bool, extra=None, download: bool = False):
    """ImageNet / CIFAR10 / CIFAR100 ``split`` with the recipe's train (``train_aug``) or eval
    transform, followed by ``extra`` (a callable on the tensor) when given."""
    if root is None:
        card = "imagenet" if name == "imagenet" else "cifar"
        raise ValueError(f"{name} needs root=DIR. See datasets/{card}.md for the layout; "
                         f"`spikemoe data verify {name} --root DIR` checks a copy.")
    root = Path(root).expanduser()
    if name == "imagenet":
        size = size or 224
        if download:
            raise ValueError("imagenet cannot be downloaded automatically (it needs a login at "
                             "image-net.org); see datasets/imagenet.md")
        classes = imagenet_classes(root)
        folder = root / ("train" if split == "train" else "val")
        if not folder.is_dir():
            raise FileNotFoundError(f"imagenet: no folder {folder}; expected ROOT/val/<wnid>/"
                                    "*.JPEG with the class folders of ROOT/train. See "
                                    "datasets/imagenet.md.")
        unknown = sorted({p.name for p in folder.iterdir() if p.is_dir()} - set(classes))
        if unknown:
            more = ", ..." if len(classes) > 5 else ""
            raise ValueError(f"imagenet: {folder} has class folder(s) {unknown[:5]} that train/ "
                             f"lacks; expected only the {len(classes)} classes of train/ "
                             f"({', '.join(classes[:5])}{more}).")
        # allow_empty: a class with no images here (a partial val/) keeps its number, not an error
        ds = _ImageNetFolder(str(folder), classes, transform=imagenet_transform(train_aug, size),
                             allow_empty=True)
    else:
        size = size or 32
        ds = _cifar(name, split, root, cifar_transform(name, train_aug, size), download)
    if extra is not None:
        ds.transform = v2.Compose([ds.transform, extra])
    return ds
