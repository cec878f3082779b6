"""What every event dataset's build shares: the frame options' checks and the train transform.

Used by the tonic event datasets (``event_specs.py``) and by digits-dvs (``digits_dvs.py``).
"""
from __future__ import annotations

from collections.abc import Callable

from .frames import INTEGRATIONS, to_hw
from .spec import BuildOptions, DatasetSpec

__all__ = ["check_event_options", "event_transform"]


def check_event_options(spec: DatasetSpec, options: BuildOptions) -> None:
    """Reject a bad ``T``, ``integration`` or ``size`` before any file is read.

    Raises:
        ValueError: naming the option, what it must be and what it got.
    """
    T = options.T
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int (frames per sample), got {T!r}")
    if options.integration not in INTEGRATIONS:
        raise ValueError(f"integration must be one of {INTEGRATIONS}, got "
                         f"{options.integration!r}")
    to_hw(options.size, spec.info.native_size)  # validates size


def event_transform(spec: DatasetSpec, split: str, options: BuildOptions) -> Callable | None:
    """The transform of the float frames ``[T, 2, H, W]`` for ``options.augment``.

    Args:
        spec: the dataset (its ``recipe_augment``: None where the recipe has none).
        split: 'train' or 'test'.
        options: ``augment``: None = the recipe's on 'train' only; True = the recipe's on any split, or
            ``EventFrameAugment(flip=False)`` where the recipe has none; False = none; a
            callable = that instead of the recipe (on any split).
    Returns:
        The transform, or None for none.
    """
    augment = options.augment
    if augment is None:
        augment = split == "train" and spec.recipe_augment is not None
    if augment is False:
        return None
    if augment is True:
        out_hw = to_hw(options.size, spec.info.native_size)
        if spec.recipe_augment is not None:
            return spec.recipe_augment(out_hw)
        from .augment import EventFrameAugment  # torchvision: imported only when needed

        return EventFrameAugment(flip=False)
    if callable(augment):
        return augment
    raise ValueError(f"augment must be None, True, False or a callable, got {augment!r}")
