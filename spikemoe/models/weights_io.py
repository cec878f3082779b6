"""Model weights in the safetensors format: ``save_weights`` / ``load_weights``.

A ``.safetensors`` file holds named tensors and a string-to-string metadata table, and
loading it runs no code (unlike a pickle). spikemoe writes the state dict of a model with
its registry name and overrides in the metadata (``spikemoe.model``, ``spikemoe.config``
as JSON), so the file alone rebuilds the model; checkpoints for training (optimizer, step)
stay ``.pt`` files (``spikemoe.engine.checkpoint``).

Uses the ``safetensors`` package (``pip install safetensors``); without it these functions
raise ``SafetensorsUnavailableError`` saying so, and nothing else in spikemoe needs it.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..files import atomic_write, write_bytes_atomic

__all__ = ["SafetensorsUnavailableError", "load_checkpoint_into", "load_weights", "model_metadata",
           "read_metadata", "save_converted", "save_weights"]


class SafetensorsUnavailableError(ValueError):
    """The ``safetensors`` package is not installed; the message says how to install it."""


def _safetensors_torch():
    try:
        from safetensors import torch as st
    except ImportError:
        raise SafetensorsUnavailableError(
            "reading or writing .safetensors files needs the 'safetensors' package, which is "
            "not installed: pip install safetensors (or write a .pt file instead).") from None
    return st


def save_weights(model_or_state: nn.Module | Mapping[str, torch.Tensor], path: str | Path,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write a model's state dict (or a state dict) to ``path`` as safetensors, atomically.

    Args:
        model_or_state: an ``nn.Module`` (its ``state_dict()``) or ``{name: tensor}``.
        path: the file to write (conventionally ``*.safetensors``).
        metadata: strings stored in the header (``read_metadata`` returns them).

    Returns:
        ``path``. Tensors are copied to the CPU and made contiguous (tensors that share
        memory, e.g. tied weights, are stored once each by value).

    Raises:
        SafetensorsUnavailableError: the package is missing.
        ValueError: a value is not a tensor, or metadata is not ``str -> str``.
    """
    st = _safetensors_torch()
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"save_weights stores tensors only; {bad[:5]} are not tensors. Pass a "
                         "model or its state_dict(), not a training checkpoint dict.")
    meta = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError("safetensors metadata must map strings to strings; encode other values "
                         "with json.dumps.")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    return write_bytes_atomic(path, st.save(tensors, metadata=meta or None))


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist.")


def _unreadable(path: Path, e: Exception) -> ValueError:
    return ValueError(f"{path} is not a readable safetensors file ({type(e).__name__}: "
                      f"{str(e)[:200]}). It may be truncated, or another format: .pt/.pth files "
                      "are read with torch.load, not as safetensors.")


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file into ``{name: tensor}`` (on ``device``).

    Raises:
        FileNotFoundError: no such file.
        SafetensorsUnavailableError: the package is missing.
        ValueError: the file is not a readable safetensors file.
    """
    st = _safetensors_torch()
    path = Path(path)
    _check_file(path)
    try:
        return st.load_file(str(path), device=str(device))
    except Exception as e:  # noqa: BLE001  (SafetensorError, OSError, ...)
        raise _unreadable(path, e) from None


def read_metadata(path: str | Path) -> dict[str, str]:
    """The header metadata of a ``.safetensors`` file (``{}`` when it has none)."""
    _safetensors_torch()
    from safetensors import safe_open

    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001
        raise _unreadable(path, e) from None


def model_metadata(name: str, overrides: Mapping | None = None) -> dict[str, str]:
    """The metadata spikemoe stores with a model's weights: its registry name and overrides."""
    return {"spikemoe.model": name,
            "spikemoe.config": json.dumps({"model": {"name": name, **dict(overrides or {})}})}


def load_checkpoint_into(model: nn.Module, path: str | Path, source: str | None = None):
    """Load weights from ``path`` into ``model`` (what ``create_model(name, checkpoint=path)``
    does).

    ``path`` is a ``.safetensors`` file, a spikemoe checkpoint (``{"model": ..., "config":
    ...}``), a bare state dict, or an official checkpoint (Spikformer, Spike-driven
    Transformer, SpikingJelly 2.0 Spikformer), which is converted on the fly: ``source``
    names its code, or it is detected from its keys and the model's style.

    Returns:
        ``None`` when the keys were the model's own, else the ``ConversionReport``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: weights that do not fit the model (the message lists the keys and shapes
            and what to do), or an official checkpoint that does not convert exactly
            (``spikemoe convert --allow-mismatch`` writes one that loads anyway).
    """
    from .official_weights import convert_state_dict, detect_source, load_official_checkpoint

    state = load_official_checkpoint(path)
    own = model.state_dict()
    if source is None and state.keys() == own.keys():
        wrong = [f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})"
                 for k, v in state.items() if v.shape != own[k].shape]
        if wrong:
            raise ValueError(f"the weights in {path} do not fit {getattr(model, 'name', 'the model')}"
                             f": {'; '.join(wrong[:4])}. Build the model with the sizes it was "
                             "saved with (the same overrides).")
        model.load_state_dict(state)
        return None
    if source is None:
        source = detect_source(state, model)
        if source is None:
            missing = sorted(own.keys() - state.keys())[:4]
            raise ValueError(
                f"the weights in {path} are neither {getattr(model, 'name', 'the model')}'s own "
                f"(no {', '.join(missing)}, ...) nor an official Spikformer / Spike-driven / "
                "SpikingJelly checkpoint. Check the model name and its overrides.")
    converted, report = convert_state_dict(source, state, model)
    model.load_state_dict(converted)
    return report


def save_converted(path: Path, state: dict, name: str, overrides: dict, info: dict) -> Path:
    """Write converted weights (``spikemoe convert``): a ``.safetensors`` file with the model
    name, overrides and ``info`` (source, variant, checkpoint) in its metadata, or, for any
    other suffix, a checkpoint ``{"model", "config": {"model": {"name", ...}},
    "converted_from"}`` that ``spikemoe evaluate`` and ``create_model(checkpoint=)`` read."""
    if path.suffix == ".safetensors":
        return save_weights(state, path, metadata={**model_metadata(name, overrides),
                                                   **{f"spikemoe.{k}": v for k, v in info.items()}})
    checkpoint = {"model": state, "config": {"model": {"name": name, **overrides}},
                  "converted_from": info}
    return atomic_write(path, lambda f: torch.save(checkpoint, f))
