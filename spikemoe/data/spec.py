"""One spec per dataset, and the registry that holds them.

A ``DatasetSpec`` is everything the library knows about one dataset: its facts
(``DatasetInfo``: kind, classes, shape, card), the recipe's train augmentation (in words, on
the info, and as a builder), and the functions that build a split, verify a copy on disk and
fetch a missing one. The families register theirs next to their code (``event_specs``,
``image_datasets``, ``digits_dvs``, ``text_corpus``); a test or a user registers one more the
same way:

    @register_dataset
    def tiny() -> DatasetSpec:
        return DatasetSpec(info=DatasetInfo("tiny", "images", 2, 3, (4, 4), "none", "my card"),
                           build=lambda spec, split, options: MyDataset(split),
                           verify=lambda spec, root, deep: ([], ["nothing to check"]))

``create_dataset`` / ``dataset_info`` / ``list_datasets`` (``registry``) and
``verify_dataset`` (``verify``) are lookups in this registry.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "BuildOptions", "DatasetInfo", "DatasetSpec", "dataset_spec",
           "register_dataset", "registered_names", "temporary_dataset", "unregister_dataset"]

KINDS = ("events", "images", "text")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is, for model building, the engine's choice of task, and messages.

    Attributes:
        name: registry name. kind: 'events' (items ``[T, 2, H, W]``), 'images' (``[C, H, W]``)
            or 'text' (byte ids ``[T]`` with next-byte targets ``[T]``; num_classes = 256 is the
            vocabulary, in_channels and native_size are 1 and (1, 1), unused).
        num_classes, in_channels: model head and stem sizes.
        native_size: ``(H, W)`` of the sensor (events) or the recipe's crop (images).
        train_augment: the recipe's train augmentation, in words (``augment=None``).
        card: the dataset card under ``datasets/``.
        needs_root: whether the data lives in a folder the user names (False: embedded).
        views: the values of ``create_dataset(views=...)`` it can build: 'events' (every
            dataset: its items as documented above) and, for a multi-view dataset, names such
            as 'events+image' (items ``({view: tensor}, y)``; digits-dvs).
    """

    name: str
    kind: str
    num_classes: int
    in_channels: int
    native_size: tuple[int, int]
    train_augment: str
    card: str
    needs_root: bool = True
    views: tuple[str, ...] = ("events",)


@dataclass(frozen=True)
class BuildOptions:
    """The keyword arguments of ``create_dataset``, handed to a spec's ``build`` as one value.

    See ``registry.create_dataset`` for each one's meaning; a build reads those of its kind.
    """

    root: str | Path | None = None
    T: int = 16
    size: int | tuple[int, int] | None = None
    integration: str = "count"
    augment: Any = None
    cache_dir: str | Path | None = None
    seed: int = 0
    skip_corrupt: bool = False
    download: bool = False
    views: str = "events"


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """One dataset: its facts and the functions that build, verify and fetch it.

    Each function takes the spec itself first, so one function serves a whole family (the
    event datasets share one ``build``, reading ``spec.layout``).

    Attributes:
        info: the dataset's facts (``dataset_info(name)`` returns it).
        build: ``(spec, split, options: BuildOptions) -> torch Dataset`` of ``(x, y)`` for
            split 'train' or 'test'; raises ValueError / FileNotFoundError saying what to fix.
        verify: ``(spec, root: Path | None, deep: bool) -> (problems, notes)``, lists of
            readable lines; problems empty means the copy is complete. For ``needs_root``
            datasets ``verify_dataset`` has checked that ``root`` is an existing folder.
        recipe_augment: ``(out_hw: (H, W)) -> callable`` building the recipe's train
            transform of one item, or None where the recipe has none.
        download: ``(spec, root) -> None`` fetching a missing copy into ``root`` (``create_
            dataset(download=True)`` and ``spikemoe data prepare --download``), or None where
            there is nothing to fetch (embedded) or it cannot be fetched automatically.
    """

    info: DatasetInfo
    build: Callable[..., Any]
    verify: Callable[..., tuple[list[str], list[str]]]
    recipe_augment: Callable[[tuple[int, int]], Callable] | None = None
    download: Callable[..., None] | None = None

    @property
    def name(self) -> str:
        return self.info.name

    def expected_layout(self) -> str:
        """The on-disk layout in one line, for messages (here: a pointer to the card)."""
        return f"see {self.info.card}"


_SPECS: dict[str, DatasetSpec] = {}


def _check(spec: DatasetSpec) -> None:
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"register_dataset expects a DatasetSpec (or a function returning one), "
                        f"got {type(spec).__name__}")
    info = spec.info
    if not isinstance(info, DatasetInfo) or not isinstance(info.name, str) or not info.name:
        raise ValueError(f"a DatasetSpec needs info=DatasetInfo(name=<non-empty str>, ...), "
                         f"got {info!r}")
    if info.kind not in KINDS:
        raise ValueError(f"dataset {info.name!r}: kind must be one of {KINDS}, got {info.kind!r}")
    if not (callable(spec.build) and callable(spec.verify)):
        raise ValueError(f"dataset {info.name!r}: build and verify must be callables "
                         "(spec, split, options) -> Dataset and (spec, root, deep) -> "
                         "(problems, notes)")


def _add(spec: DatasetSpec, replace: bool) -> None:
    _check(spec)
    if spec.name in _SPECS and not replace:
        raise ValueError(f"dataset {spec.name!r} is already registered (card "
                         f"{_SPECS[spec.name].info.card}); pass replace=True to replace it, or "
                         f"unregister_dataset({spec.name!r}) first")
    _SPECS[spec.name] = spec


def register_dataset(obj: DatasetSpec | Callable[[], DatasetSpec] | None = None, *,
                     replace: bool = False):
    """Register a dataset spec; usable as ``@register_dataset``, ``@register_dataset(replace=
    True)`` on a function returning a ``DatasetSpec``, or called with a spec.

    Args:
        obj: a ``DatasetSpec``, or a function of no arguments returning one (called once, now).
        replace: replace a spec of the same name (it keeps its place in ``list_datasets()``).
    Returns:
        ``obj`` unchanged (so a decorated function stays a function), or a decorator.
    Raises:
        ValueError: the name is already registered and ``replace`` is False, or the spec is
            malformed (unknown kind, missing callables).
    """
    if obj is None:
        return lambda fn: register_dataset(fn, replace=replace)
    _add(obj if isinstance(obj, DatasetSpec) else obj(), replace)
    return obj


def unregister_dataset(name: str) -> DatasetSpec:
    """Remove ``name`` from the registry and return its spec (unknown names raise, as lookups)."""
    spec = dataset_spec(name)
    del _SPECS[name]
    return spec


@contextmanager
def temporary_dataset(spec: DatasetSpec, *, replace: bool = False) -> Iterator[DatasetSpec]:
    """Register ``spec`` for the ``with`` block, then restore the registry as it was.

    With ``replace=True`` it stands in for a registered spec of the same name (say, one whose
    ``download`` is a stub) and the original comes back, in its place, afterwards.
    """
    before = _SPECS.get(spec.name)
    _add(spec, replace)
    try:
        yield spec
    finally:
        if before is None:
            _SPECS.pop(spec.name, None)
        else:
            _SPECS[spec.name] = before


def registered_names() -> list[str]:
    """Registered names, in registration order."""
    return list(_SPECS)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec registered as ``name``; unknown names raise with the closest matches."""
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), _SPECS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}.{hint} Known: {', '.join(_SPECS)}.") from None
