"""Reading an official checkpoint file into a flat state dict (``load_official_checkpoint``)."""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import torch

from .report import ConversionError

__all__ = ["load_official_checkpoint", "unwrap_state_dict"]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
_CHECKPOINT_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")


def unwrap_state_dict(obj, where: str) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint object: a bare one, or under one of
    ``_CHECKPOINT_KEYS``; wrapper prefixes (``module.``, ``_orig_mod.``) removed."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = dict(obj)
    else:
        inner = next((k for k in _CHECKPOINT_KEYS if isinstance(obj, Mapping) and
                      isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            found = (f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping)
                     else type(obj).__name__)
            raise ConversionError(
                f"{where}: expected a state dict (parameter name -> tensor), or a dict holding "
                f"one under {' / '.join(map(repr, _CHECKPOINT_KEYS))}; found {found}. Pass the "
                "file the official training script wrote (checkpoint-*.pth.tar, model_best.pth.tar,"
                " checkpoint_max_test_acc1.pth) or save model.state_dict() yourself.")
        state = {k: v for k, v in obj[inner].items() if isinstance(v, torch.Tensor)}
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_official_checkpoint(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read an official checkpoint file into a flat state dict.

    ``.safetensors`` files go through the ``safetensors`` package; anything else through
    ``torch.load(weights_only=True)`` (no pickled code runs; ``argparse.Namespace``, which the
    timm and torchvision training scripts store under ``args``, is allowed as plain data).

    Args:
        path: the checkpoint file.
        key: the entry holding the weights (``state_dict``, ``model``, ``state_dict_ema``);
            default: a bare state dict, else the first of those present.

    Returns:
        ``{name: tensor}`` on the CPU, ``module.`` / ``_orig_mod.`` prefixes removed.

    Raises:
        FileNotFoundError: no such file.
        ConversionError: unreadable, or no state dict inside (the message says what was found).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist.")
    if path.suffix == ".safetensors":
        from ..weights_io import load_weights

        obj = load_weights(path)
    else:
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (unpickling and zip errors have many types)
            first = (str(e).strip().splitlines() or ["no message"])[0][:300]
            raise ConversionError(
                f"{path} cannot be read with weights-only loading ({type(e).__name__}: {first}). "
                "If it is a truncated download, fetch it again. If it holds other Python "
                "objects and you trust it, re-save only its weights: python -c \"import torch; "
                f"c = torch.load('{path}', weights_only=False); torch.save(c.get('state_dict', "
                "c.get('model', c)), 'weights.pth')\"") from None
    if key is not None:
        if not (isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping)):
            have = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise ConversionError(f"{path} has no state dict under {key!r}; it holds {have}. "
                                  "Leave out the key to pick the weights automatically.")
        obj = obj[key]
    return unwrap_state_dict(obj, str(path))
