"""Model registry: ``create_model(name, **overrides)`` and ``list_models(pattern)``.

Each registered factory states every hyperparameter of its model in its body and takes
keyword overrides (``T=16``, ``num_classes=100``, ``emsp=False``, ``backend="torch"``).
"""
from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``factory`` under its function name."""
    name = factory.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = factory
    return factory


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def get_model_factory(name: str) -> Callable[..., nn.Module]:
    """The factory registered as ``name``; unknown names raise with the closest matches."""
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _MODELS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} `spikemoe models` lists all {len(_MODELS)} names."
        ) from None


def create_model(name: str, **overrides) -> nn.Module:
    """Build the registered model ``name``, with hyperparameter ``overrides``.

    Raises:
        ValueError: unknown model name, or an override the model does not have (the message
        lists the valid ones).
    """
    factory = get_model_factory(name)
    return factory(**overrides)


def check_overrides(name: str, defaults: dict, overrides: dict) -> dict:
    """Merge ``overrides`` into a factory's ``defaults``; unknown keys raise a clear error."""
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, defaults, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"{name} has no hyperparameter {', '.join(hints)}. "
            f"Valid overrides: {', '.join(sorted(defaults))}."
        )
    return {**defaults, **overrides}




