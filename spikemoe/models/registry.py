"""Model registry: ``create_model(name, **overrides)`` and ``list_models(pattern)``.

Each registered factory states every hyperparameter of its model in its body and takes
keyword overrides (``T=16``, ``num_classes=100``, ``emsp=False``, ``backend="torch"``).
"""
from __future__ import annotations

import difflib
import fnmatch
import math
import numbers
from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(factory: Callable[..., nn.Module] | None = None, *, name: str | None = None,
                   replace: bool = False):
    """Register ``factory`` under ``name`` (default: its function name); usable as
    ``@register_model`` or ``register_model(fn, name="my_model")``. A name registered twice is
    refused unless ``replace``. Returns the factory."""
    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _MODELS and not replace:
            raise ValueError(f"model {key!r} is registered twice; pass replace=True to replace "
                             "it, or pick another name.")
        _MODELS[key] = fn
        return fn

    return add if factory is None else add(factory)


def unregister_model(name: str) -> None:
    """Remove ``name`` from the registry (a model a test or a notebook registered)."""
    if _MODELS.pop(name, None) is None:
        raise ValueError(f"model {name!r} is not registered.")


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


def create_model(name: str, checkpoint=None, **overrides) -> nn.Module:
    """Build the registered model ``name``, with hyperparameter ``overrides``; with
    ``checkpoint`` (a path), load its weights: a spikemoe ``.pt`` checkpoint, a ``.safetensors``
    file, or an official Spikformer / Spike-driven / SpikingJelly checkpoint converted on the fly
    (``weights_io.load_checkpoint_into``; refused, with the reason, if it is not the same
    network).

    Raises:
        ValueError: unknown model name, an override the model does not have (the message lists
            the valid ones), or weights that do not fit.
    """
    factory = get_model_factory(name)
    try:
        model = factory(**overrides)
    except TypeError as e:  # a factory without check_overrides (e.g. a class registered as is)
        if "unexpected keyword argument" not in str(e):
            raise
        import inspect

        valid = [p for p in inspect.signature(factory).parameters if p != "self"]
        raise ValueError(f"model {name!r} does not take {e.args[0].split('argument ')[-1]}; "
                         f"its keywords are: {', '.join(valid) or 'none'}.") from None
    if checkpoint is not None:
        from .weights_io import load_checkpoint_into  # lazy: keeps the registry import-light

        load_checkpoint_into(model, checkpoint)
    return model


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
            f"Valid overrides (model.KEY=VALUE in a config): {', '.join(sorted(defaults))}."
        )
    return {**defaults, **overrides}


def is_int(value) -> bool:
    """True for an integer (Python or NumPy), False for bools, floats and strings."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(model: str, key: str, value, minimum: int = 1, what: str = "") -> int:
    """``value`` as an int, or a ``ValueError`` naming ``model.<key>``, the range and the value.

    Args:
        model: the registry name, for the message.
        key: the override key as the user writes it, without ``model.`` (``"expert_dim"``).
        value: the value found. minimum: the smallest valid value.
        what: what the value means, in words (``"the width d of each EMSA expert"``).
    """
    if not is_int(value) or value < minimum:
        meaning = f" ({what})" if what else ""
        raise ValueError(f"{model}: model.{key} must be an integer >= {minimum}{meaning}, got "
                         f"{value!r}. Set model.{key}=N with N >= {minimum}, or leave it unset "
                         "for the recipe's value.")
    return int(value)


def check_positive_float(model: str, key: str, value, what: str = "") -> float:
    """``value`` as a finite float > 0, or a ``ValueError`` naming ``model.<key>``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0
    if not ok:
        meaning = f" ({what})" if what else ""
        raise ValueError(f"{model}: model.{key} must be a finite number > 0{meaning}, got "
                         f"{value!r}. Leave it unset for the recipe's value.")
    return float(value)


def check_bool(model: str, key: str, value) -> bool:
    """``value`` if it is a bool (YAML true/false), else a ``ValueError`` naming ``model.<key>``."""
    if not isinstance(value, bool):
        raise ValueError(f"{model}: model.{key} must be true or false, got {value!r} "
                         f"({type(value).__name__}). Write model.{key}=true or model.{key}=false.")
    return value


def multiples_near(value: int, step: int) -> list[int]:
    """The positive multiples of ``step`` nearest ``value`` (one below, one above), for hints."""
    if value <= step:
        return [step]
    below = value // step * step
    return [value] if below == value else [below, below + step]


def divisors(n: int) -> list[int]:
    """The positive divisors of ``n``, ascending (for hints such as 'num_heads divides D')."""
    return [d for d in range(1, n + 1) if n % d == 0]

