"""Held-out evaluation: loss, top-1, top-5 (when there are more than 5 classes), model metrics.

What is scored is the dataset's task (``task.py``, from the dataset's declared kind): a
language model (``logits [B, N, V]``, targets ``[B, N]``) is scored per token: ``loss`` is the
mean token cross-entropy (nats), top-1/top-5 are next-token accuracies, and ``perplexity`` =
``exp(loss)`` and ``tokens`` are added.

``evaluate_model`` runs one pass over a (sharded) loader and sums over ranks, so the numbers
cover every test sample exactly once on 1 or N processes. ``evaluate_checkpoint`` rebuilds
the model and the data from the config stored in a checkpoint (``spikemoe evaluate``).

A model states the input of its recipe as ``model.input_shape`` (one sample: ``[T, C, H, W]``
frames, or ``[N]`` byte ids). Data of another size or T is refused by ``check_input_shape``
(before the dataset is built, and again on its first sample) unless the caller allows it
(``--allow-shape-mismatch``): a model fed 128x128 frames it was never trained on still prints
an accuracy, and that number is not the model's.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from ..contract import model_facts
from ..data import dataset_info
from ..models import create_model
from .checkpoint import find_checkpoint, load_checkpoint
from .config import config_from_dict
from .distributed import init_distributed
from .loaders import build_eval_loader, create_split, to_device
from .task import Meter, Task, task_for

__all__ = ["InputShapeError", "check_input_shape", "check_num_classes",
           "data_sample_shape", "evaluate_checkpoint", "evaluate_model", "first_sample_shape",
           "load_model_weights", "load_run_model"]

ALLOW_FLAG = "--allow-shape-mismatch"


class InputShapeError(ValueError):
    """Data whose samples do not have the model's recipe shape (``model.input_shape``)."""


@torch.no_grad()
def evaluate_model(model: nn.Module, loader, device: torch.device, task: Task,
                   autocast: contextlib.AbstractContextManager | None = None,
                   progress=None, num_classes: int | None = None) -> dict:
    """Evaluate ``model`` (unwrapped; eval mode for the pass, then restored) over ``loader``.

    Args:
        task: what the predictions are (``task.task_for(dataset kind)``).
        num_classes: the data's classes (top-5 is reported when more than 5 or not given).
    Returns:
        ``task.eval_result``: ``{"loss", "top1", "top5" (if K > 5), "n", "metrics": {...}}``;
        accuracies in percent, summed over every rank's shard; a language model adds
        ``perplexity`` and ``tokens`` (module docstring).
    """
    was_training = model.training
    model.eval()
    meter = Meter(device)
    for x, y in loader:
        x, y = to_device(x, device), y.to(device, non_blocking=True)
        with autocast or contextlib.nullcontext():
            out = model(x)
        task.add_eval_batch(meter, out, y)
        if progress is not None:
            progress.update(1)
    model.train(was_training)
    # every rank takes part in the reduction, even with an empty shard
    return task.eval_result(meter.reduce(), num_classes)


def check_num_classes(model: nn.Module, num_classes: int, data_name: str) -> None:
    """A model that states its classes (``model.num_classes``) must match the dataset's."""
    k = model_facts(model).num_classes
    if k is not None and k != num_classes:
        raise ValueError(f"the model has {k} output classes but {data_name} has {num_classes}; "
                         f"set model.num_classes={num_classes}.")


def data_sample_shape(data_cfg) -> tuple[int, ...] | None:
    """The shape of one sample that ``data_cfg`` (a ``DataConfig``) will give, from the
    dataset's registered facts, before anything is built: events ``(T, C, H, W)``, images
    ``(C, H, W)``, text ``(T,)``; ``size`` null = the dataset's native size. None when the
    dataset kind is not one of these."""
    info = dataset_info(data_cfg.name)
    size = data_cfg.size
    if size is None:
        hw = tuple(info.native_size)
    elif isinstance(size, int):
        hw = (size, size)
    else:
        hw = tuple(size)
    if info.kind == "events":
        return (int(data_cfg.T), info.in_channels, *map(int, hw))
    if info.kind == "images":
        return (info.in_channels, *map(int, hw))
    if info.kind == "text":
        return (int(data_cfg.T),)
    return None


def _shape_differences(model_shape: tuple, data_shape: tuple) -> list[str]:
    """What differs between a model's ``input_shape`` and one sample's shape, in words
    (empty when they fit; a static ``[C, H, W]`` image fits ``[T, C, H, W]``: the model
    repeats it T times)."""
    m, d = tuple(model_shape), tuple(data_shape)
    if len(m) == 4 and len(d) == 3:
        m = m[1:]
    if m == d:
        return []
    if len(m) != len(d):
        return [f"{len(d)}-d samples where the model takes {len(m)}-d ones"]
    out = []
    if len(m) == 1:
        out.append(f"windows of {d[0]} tokens instead of {m[0]}")
        return out
    if len(m) == 4 and m[0] != d[0]:
        out.append(f"T = {d[0]} time steps instead of {m[0]}")
    if m[-3] != d[-3]:
        out.append(f"{d[-3]} channels instead of {m[-3]}")
    if m[-2:] != d[-2:]:
        out.append(f"size {d[-2]}x{d[-1]} instead of {m[-2]}x{m[-1]}")
    return out


def check_input_shape(model: nn.Module, data_shape, data_name: str, *,
                      allow: bool = False, source: str = "the model") -> dict | None:
    """Refuse data whose samples differ from the model's recipe input.

    Args:
        model: a model with ``input_shape`` (one sample, ``[T, C, H, W]`` or ``[N]``); a model
            without it is not checked.
        data_shape: one sample's shape (without batch axis), or None (not known: no check).
        data_name: the data, in words, for the message (e.g. ``"cifar10-dvs test"``).
        allow: the user asked to run anyway (``--allow-shape-mismatch``).
        source: where the model comes from, for the message (a checkpoint path).
    Returns:
        None when the shapes fit; with ``allow``, a JSON-ready record of the mismatch
        (``{"model": [...], "data": [...], "differences": [...]}``) for the result to carry.
    Raises:
        InputShapeError: the shapes differ and ``allow`` is False; the message names both
        shapes, what differs, and the flag that runs it anyway.
    """
    model_shape = model_facts(model).input_shape
    if model_shape is None or data_shape is None:
        return None
    diffs = _shape_differences(tuple(model_shape), tuple(data_shape))
    if not diffs:
        return None
    record = {"model": list(model_shape), "data": list(data_shape), "differences": diffs}
    if allow:
        return record
    raise InputShapeError(
        f"{source} takes samples of shape {list(model_shape)} (its recipe's input_shape, "
        f"{'[N] byte ids' if len(model_shape) == 1 else '[T, C, H, W]'}), but {data_name} "
        f"gives {list(data_shape)}: {'; '.join(diffs)}. A model fed inputs it was not trained "
        "on still prints an accuracy, but it is not this model's. Use data of the model's "
        "shape (the run's own dataset: leave out --data; or a dataset with the same frames), "
        f"or pass {ALLOW_FLAG} to run it anyway (the result then records the mismatch).")


def load_model_weights(model: nn.Module, state: dict, source: str) -> None:
    """``model.load_state_dict(state)``, with a message a person can act on when it does not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()][:4]
        raise ValueError(
            f"the weights in {source} do not fit the model built from its config "
            f"({'; '.join(lines)[:600]}). The checkpoint comes from a different model or model "
            "version: evaluate/resume it with the model it was trained with.") from None


def load_run_model(checkpoint: str | Path, *, data: str | None = None, root: str | None = None,
                   use_ema: bool = False, allow_shape_mismatch: bool = False,
                   model_overrides: dict | None = None
                   ) -> tuple[Path, dict, object, nn.Module]:
    """A checkpoint's model with its weights, and its stored config (data overridable).

    Args:
        checkpoint: a ``.pt`` file, or a run directory (its ``best.pt``, else ``last.pt``).
        data / root: another dataset name / data folder than the run's (same classes: checked;
            same sample shape as the model's ``input_shape``: checked from the dataset's facts,
            before anything is built, unless ``allow_shape_mismatch``).
        use_ema: the EMA weights (the run must have had ``optim.ema_decay``).
        model_overrides: model keywords on top of the run's (``evaluate --set``), for switches
            that change how a trained model runs, not its weights (e.g. a fusion model's
            ``test_view``); weights that no longer fit are refused as usual.
    Returns:
        ``(checkpoint path, checkpoint state, TrainConfig, model on the CPU)``.
    """
    path = find_checkpoint(checkpoint, prefer="best")
    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"], where=f"the config stored in {path}")
    if data is not None:
        cfg.data.name = data
    if root is not None:
        cfg.data.root = root
    if model_overrides:
        cfg.model.kwargs = {**cfg.model.kwargs, **model_overrides}
    model = create_model(cfg.model.name, **cfg.model.kwargs)
    weights = state["model"]
    if use_ema:
        if state.get("ema") is None:
            raise ValueError(f"{path} holds no EMA weights (the run had optim.ema_decay=null); "
                             "evaluate without --ema.")
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items()
                   if k.startswith("module.")}
    load_model_weights(model, weights, str(path))
    check_num_classes(model, dataset_info(cfg.data.name).num_classes, cfg.data.name)
    check_input_shape(model, data_sample_shape(cfg.data), _data_words(cfg.data),
                      allow=allow_shape_mismatch, source=f"{cfg.model.name} (from {path})")
    return path, state, cfg, model


def _data_words(data_cfg, split: str | None = None) -> str:
    size = "native size" if data_cfg.size is None else f"size={data_cfg.size}"
    return (f"{data_cfg.name}{' ' + split if split else ''} (data.T={data_cfg.T}, "
            f"{size})")


def first_sample_shape(dataset) -> tuple[int, ...] | None:
    """The shape of ``dataset[0]``'s input (None for an empty dataset)."""
    if len(dataset) == 0:
        return None
    x = dataset[0][0]  # a dict of views (multi-view data) has no one shape: None
    return tuple(x.shape) if torch.is_tensor(x) else None


def evaluate_checkpoint(checkpoint: str | Path, *, data: str | None = None,
                        root: str | None = None, split: str = "test",
                        batch_size: int | None = None, use_ema: bool = False,
                        device: str = "auto", allow_shape_mismatch: bool = False,
                        model_overrides: dict | None = None) -> dict:
    """Rebuild the model and dataset from a checkpoint's stored config and evaluate it.

    Args:
        checkpoint: a ``.pt`` file, or a run directory (its ``best.pt``, else ``last.pt``).
        data / root: evaluate on another dataset name / data folder than the run's.
        split: 'test' or 'train'.
        use_ema: the EMA weights (the run must have had ``optim.ema_decay``).
        allow_shape_mismatch: evaluate even when the data's samples differ from the model's
            ``input_shape`` (size or T); the result then carries ``input_shape_mismatch``.
    Returns:
        ``evaluate_model``'s dict plus ``checkpoint``, ``epoch``, ``step``, ``model``, ``data``
        (and ``input_shape_mismatch``: model and data shapes, when allowed and different).
    Raises:
        InputShapeError: the data's samples differ from the model's recipe input.
    """
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    path, state, cfg, model = load_run_model(checkpoint, data=data, root=root, use_ema=use_ema,
                                             allow_shape_mismatch=allow_shape_mismatch,
                                             model_overrides=model_overrides)
    if batch_size is not None:
        cfg.data.eval_batch_size = batch_size
    dist = init_distributed(device)
    dataset = create_split(cfg.data, split, augment=False)
    if len(dataset) == 0:  # a top-1 of 0.00% over no sample is not a result
        raise ValueError(f"the {split} split of {cfg.data.name} is empty (root "
                         f"{cfg.data.root}): nothing to evaluate. Use --split train, or data "
                         "with a held-out part (`spikemoe data verify NAME --root DIR`).")
    # the facts predicted the shape; the first real sample confirms it
    mismatch = check_input_shape(model, first_sample_shape(dataset), _data_words(cfg.data, split),
                                 allow=allow_shape_mismatch,
                                 source=f"{cfg.model.name} (from {path})")
    model.to(dist.device)
    loader = build_eval_loader(dataset, cfg.data, dist)
    info = dataset_info(cfg.data.name)
    task = task_for(info.kind, loss=model_facts(model).classifier_loss)
    result = evaluate_model(model, loader, dist.device, task, num_classes=info.num_classes)
    out = {"checkpoint": str(path), "epoch": state.get("epoch"), "step": state.get("step"),
           "model": cfg.model.name, "data": cfg.data.name, "split": split, **result}
    if model_overrides:
        out["model_overrides"] = dict(model_overrides)
    if mismatch is not None:
        out["input_shape_mismatch"] = mismatch
    return out
