"""Profiling a trained run or a registered model on real data (``spikemoe profile``, and the
profile ``spikemoe train`` writes at the end of a run): builds the model and its dataset, checks
that the data fits the model, and hands both to ``analysis.profile.profile_model``; the
``ProfileResult`` it returns gets the measurement's source (model, data, split, weights,
parameters).

``profile_checkpoint``: a checkpoint's model and weights on its run's dataset.
``profile_registered``: a registered model at initialisation (seed 0), on ``digits-dvs`` at the
model's T and size when it takes 2-channel event frames, on ``stdlib-bytes`` windows for a
byte-level language model, else on the dataset named.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..analysis.health import ProfileWarning
from ..analysis.profile import profile_model
from ..analysis.results import ProfileResult
from ..contract import model_facts
from ..data import create_dataset, dataset_info
from ..models import create_model
from .evaluate import check_input_shape, first_sample_shape, load_run_model
from .loaders import create_split
from .task import task_for

__all__ = ["profile_checkpoint", "profile_registered"]


def _dataset_for_model(model, data: str | None, root: str | None, split: str):
    """``(name, dataset)`` to profile ``model`` on: ``data``, or the default for its input."""
    facts = model_facts(model)
    shape = facts.input_shape  # (T, C, H, W), or (N,) for a byte-level LM
    if shape is not None and len(shape) == 1:  # a language model: windows of N bytes
        data = data or "stdlib-bytes"
        return data, create_dataset(data, split, root=root, T=int(shape[0]), augment=False)
    if data is None:
        if shape is None or shape[1] != 2:
            raise ValueError(
                f"--model without --data profiles on digits-dvs, which gives 2-channel event "
                f"frames, but this model takes input {list(shape) if shape else '?'}. Pass "
                "--data NAME --root DIR (e.g. --data cifar10 --root /data/cifar).")
        data = "digits-dvs"
    info = dataset_info(data)
    k = facts.num_classes
    if k is not None and k != info.num_classes:
        raise ValueError(f"the model has {k} output classes but {data} has {info.num_classes}; "
                         f"pick a model or dataset with the same classes.")
    T, size = (int(shape[0]), (int(shape[2]), int(shape[3]))) if shape else (16, None)
    return data, create_dataset(data, split, root=root, T=T, size=size, augment=False)


def profile_checkpoint(checkpoint: str | Path, *, data: str | None = None, root: str | None = None,
                       split: str = "test", samples: int = 64, table: str = "45nm-fp32",
                       first_layer_once: bool | str = "auto", progress: bool = True,
                       allow_shape_mismatch: bool = False) -> ProfileResult:
    """Profile a checkpoint's model (its weights) on its dataset's ``split``.

    Data (``data``/``root``) whose samples differ from the model's ``input_shape`` raises
    ``InputShapeError`` unless ``allow_shape_mismatch`` (then an ``input_shape_mismatch``
    entry leads the result's ``warnings``)."""
    path, state, cfg, model = load_run_model(checkpoint, data=data, root=root,
                                             allow_shape_mismatch=allow_shape_mismatch)
    dataset = create_split(cfg.data, split, augment=False)
    mismatch = check_input_shape(model, first_sample_shape(dataset), f"{cfg.data.name} {split}",
                                 allow=allow_shape_mismatch,
                                 source=f"{cfg.model.name} (from {path})")
    result = _profile(model, dataset, cfg.data.name, samples, table, first_layer_once, progress)
    return dataclasses.replace(result, model=cfg.model.name, data=cfg.data.name, split=split,
                               weights=f"{path} (epoch {state.get('epoch')})",
                               warnings=_mismatch_warnings(mismatch) + result.warnings)


def _mismatch_warnings(mismatch: dict | None) -> list[ProfileWarning]:
    """The ``input_shape_mismatch`` warning (first of the result's) when the shapes differ."""
    if mismatch is None:
        return []
    return [ProfileWarning(
        "input_shape_mismatch",
        f"profiled on inputs of shape {mismatch['data']}, not the model's {mismatch['model']} "
        f"({'; '.join(mismatch['differences'])}; --allow-shape-mismatch): not the model's "
        "recipe input.")]


def profile_registered(name: str, *, data: str | None = None, root: str | None = None,
                       split: str = "test", samples: int = 64, table: str = "45nm-fp32",
                       first_layer_once: bool | str = "auto", progress: bool = True,
                       allow_shape_mismatch: bool = False) -> ProfileResult:
    """Profile a registered model at initialisation (``torch.manual_seed(0)``) on real data,
    built at the model's T and size (its first sample is checked against ``input_shape`` all
    the same)."""
    torch.manual_seed(0)
    model = create_model(name)
    data_name, dataset = _dataset_for_model(model, data, root, split)
    mismatch = check_input_shape(model, first_sample_shape(dataset), f"{data_name} {split}",
                                 allow=allow_shape_mismatch, source=name)
    result = _profile(model, dataset, data_name, samples, table, first_layer_once, progress)
    return dataclasses.replace(result, model=name, data=data_name, split=split,
                               weights="random initialisation (seed 0)",
                               warnings=_mismatch_warnings(mismatch) + result.warnings)


def _profile(model, dataset, data_name, samples, table, first_layer_once, progress
             ) -> ProfileResult:
    """``profile_model`` on the first ``samples`` of ``dataset``, scored by the data's task."""
    task = task_for(dataset_info(data_name).kind)
    n = min(samples, len(dataset))
    bar = tqdm(total=n, desc="profile", unit="sample", disable=not progress, leave=False)
    try:
        result = profile_model(model.cpu(), dataset, table=table, first_layer_once=first_layer_once,
                               max_samples=n, progress=bar, score=task.profile_score)
    finally:
        bar.close()
    return dataclasses.replace(result, params=sum(p.numel() for p in model.parameters()))
