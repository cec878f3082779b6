"""Static image datasets through torchvision: ImageNet (ImageFolder) and CIFAR10/100, one spec each.

Items are ``(x [3, H, W] float32, normalised, y int)``; the model repeats a static image over
its T time steps, so T and integration do not apply here. The recipes' transforms are in
``image_torchvision`` (imported, with torchvision, only when a split is built).

On-disk layouts: ImageNet ``ROOT/train/<wnid>/*.JPEG`` and ``ROOT/val/<wnid>/*.JPEG`` (the
validation images sorted into class folders, e.g. by the usual ``valprep.sh``; 1000 folders
named by WordNet ID, n01440764 ...). CIFAR: torchvision's ``ROOT/cifar-10-batches-py/`` or
``ROOT/cifar-100-python/``; downloaded only when ``download=True``.

Verify: CIFAR's files against torchvision's MD5s; ImageNet's class folders and image counts
against the ILSVRC-2012 release (1,281,167 train / 50,000 val).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from .frames import to_hw
from .spec import BuildOptions, DatasetInfo, DatasetSpec, register_dataset

__all__ = ["ImageSpec", "imagenet_classes"]

IMAGENET_COUNTS = {"train": 1_281_167, "val": 50_000}
_WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True, kw_only=True)
class ImageSpec(DatasetSpec):
    """A torchvision image dataset: a ``DatasetSpec`` plus its normalisation and eval transform.

    Attributes:
        mean, std: per-channel normalisation (RGB, of pixel values scaled to [0, 1]).
        eval_transform: ``(out_hw) -> transform`` of the test split (``recipe_augment`` is the
            train split's).
        source: the ``torchvision.datasets`` class that reads it ('' for ImageNet's folders).
        contents: the files of its torchvision folder, in words, for messages.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    eval_transform: Callable[[tuple[int, int]], Callable]
    source: str = ""
    contents: str = ""


def _options(spec: ImageSpec, split: str, options: BuildOptions):
    """``(transform, root)`` of ``split``: the recipe's train or eval transform, then ``extra``."""
    augment = options.augment
    if not (isinstance(augment, bool) or augment is None or callable(augment)):
        raise ValueError(f"augment must be None, True, False or a callable, got {augment!r}")
    out = to_hw(options.size, spec.info.native_size)
    if out[0] != out[1]:
        raise ValueError(f"{spec.name}: size must be square for image datasets, got "
                         f"{options.size!r}")
    if options.root is None:
        raise ValueError(f"{spec.name} needs root=DIR. See {spec.info.card} for the layout; "
                         f"`spikemoe data verify {spec.name} --root DIR` checks a copy.")
    train_aug = (split == "train") if augment is None else augment is True
    transform = (spec.recipe_augment if train_aug else spec.eval_transform)(out)
    if callable(augment) and not isinstance(augment, bool):
        from .image_torchvision import then

        transform = then(transform, augment)
    return transform, Path(options.root).expanduser()


def build_cifar(spec: ImageSpec, split: str, options: BuildOptions) -> Dataset:
    """CIFAR10 / CIFAR100 ``split`` through torchvision (downloaded only if asked)."""
    from torchvision import datasets as tvd

    transform, root = _options(spec, split, options)
    cls = getattr(tvd, spec.source)
    try:
        return cls(str(root), train=split == "train", transform=transform,
                   download=options.download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted ..."
        raise FileNotFoundError(
            f"{spec.name}: no intact copy under {root} (torchvision says: {e}). Expected layout: "
            f"ROOT/{cls.base_folder}/ with {spec.contents} (the python version of the archive). "
            f"Download it with `python datasets/prepare_cifar.py --name {spec.name} --root "
            f"{root} --download` or create_dataset(..., download=True); check it with "
            f"`spikemoe data verify {spec.name} --root {root}`."
        ) from e


def download_cifar(spec: ImageSpec, root: str | Path | None) -> None:
    """Let torchvision download both splits into ``root`` (it skips an intact copy)."""
    for split in ("train", "test"):
        build_cifar(spec, split, BuildOptions(root=root, download=True))


def verify_cifar(spec: ImageSpec, root: Path, deep: bool) -> tuple[list[str], list[str]]:
    """Every file of the copy against torchvision's MD5s (``deep`` adds nothing)."""
    from torchvision import datasets as tvd
    from torchvision.datasets.utils import check_integrity

    cls = getattr(tvd, spec.source)
    folder = root / cls.base_folder
    if not folder.is_dir():
        return [f"missing folder {folder} (download with `python datasets/prepare_cifar.py "
                f"--name {spec.name} --root {root} --download`)"], []
    problems = []
    for fname, md5 in [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]:
        path = folder / fname
        if not path.is_file():
            problems.append(f"missing file {path}")
        elif not check_integrity(str(path), md5):
            problems.append(f"checksum mismatch: {path} (md5 should be {md5}); re-download it")
    n_files = len(cls.train_list) + len(cls.test_list) + 1
    return problems, [f"checked {n_files} files against torchvision's MD5s"]


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


def build_imagenet(spec: ImageSpec, split: str, options: BuildOptions) -> Dataset:
    """ImageNet ``split`` ('test' reads ``val/``) with the class numbering of ``train/``."""
    transform, root = _options(spec, split, options)
    if options.download:
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
    from .image_torchvision import ImageNetFolder

    # allow_empty: a class with no images here (a partial val/) keeps its number, not an error
    return ImageNetFolder(str(folder), classes, transform=transform, allow_empty=True)


def verify_imagenet(spec: ImageSpec, root: Path, deep: bool) -> tuple[list[str], list[str]]:
    """Class folders of train/ and val/ and their image counts (``deep`` adds nothing)."""
    try:
        classes = imagenet_classes(root)
    except (FileNotFoundError, ValueError) as e:
        return [str(e)], []
    problems, notes = [], []
    if len(classes) != 1000:
        problems.append(f"train/ has {len(classes)} class folders, expected 1000")
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            problems.append(f"missing folder {folder}")
            continue
        have = {p.name for p in folder.iterdir() if p.is_dir()}
        if split == "val" and have != set(classes):
            extra, missing = sorted(have - set(classes)), sorted(set(classes) - have)
            problems.append(f"val/ class folders differ from train/: {len(missing)} missing "
                            f"{missing[:3]}, {len(extra)} unknown {extra[:3]}")
        n = sum(1 for c in have for f in (folder / c).iterdir() if f.is_file())
        notes.append(f"{split}: {len(have)} classes, {n} images")
        if n != IMAGENET_COUNTS[split]:
            problems.append(f"{split}: {n} images, the ILSVRC-2012 release has "
                            f"{IMAGENET_COUNTS[split]}")
    return problems, notes


def _transform(recipe: str, stats, train: bool) -> Callable[[tuple[int, int]], Callable]:
    """A builder ``(out_hw) -> transform`` of ``image_torchvision.<recipe>_transform``."""
    def build(out_hw: tuple[int, int]):
        from . import image_torchvision

        return getattr(image_torchvision, f"{recipe}_transform")(stats, train, out_hw[0])
    return build


def _cifar_spec(name: str, num_classes: int, source: str, contents: str, mean, std) -> ImageSpec:
    stats = (mean, std)
    return ImageSpec(
        info=DatasetInfo(name, "images", num_classes, 3, (32, 32),
                         "RandomCrop(pad 4), flip, RandAugment(1, m9), random erasing 0.25",
                         "datasets/cifar.md"),
        build=build_cifar, verify=verify_cifar, download=download_cifar,
        recipe_augment=_transform("cifar", stats, True),
        eval_transform=_transform("cifar", stats, False),
        mean=mean, std=std, source=source, contents=contents)


@register_dataset
def cifar10() -> ImageSpec:
    """CIFAR-10 (Krizhevsky 2009): 50,000 / 10,000 32 x 32 images, 10 classes."""
    return _cifar_spec("cifar10", 10, "CIFAR10", "data_batch_1..5, test_batch, batches.meta",
                       (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@register_dataset
def cifar100() -> ImageSpec:
    """CIFAR-100 (Krizhevsky 2009): 50,000 / 10,000 32 x 32 images, 100 classes."""
    return _cifar_spec("cifar100", 100, "CIFAR100", "train, test, meta",
                       (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


@register_dataset
def imagenet() -> ImageSpec:
    """ImageNet ILSVRC-2012 (Russakovsky et al. 2015): 1000 classes, by hand (no download)."""
    stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return ImageSpec(
        info=DatasetInfo("imagenet", "images", 1000, 3, (224, 224),
                         "RandomResizedCrop, flip, RandAugment(2, m9), random erasing 0.25",
                         "datasets/imagenet.md"),
        build=build_imagenet, verify=verify_imagenet,
        recipe_augment=_transform("imagenet", stats, True),
        eval_transform=_transform("imagenet", stats, False),
        mean=stats[0], std=stats[1])
