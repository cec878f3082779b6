"""What a run needs before its first step, apart from the loop: its run directory, its
optimiser's parameter groups, its precision, and the checks and facts read off its data.

A new run claims its own directory (``run_dir.claim_run_dir``: exclusive create; rank 0
claims, every rank gets the name) only after the model and data are built, so a bad model
override leaves no folder behind.
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .distributed import DistInfo, broadcast_object
from .evaluate import InputShapeError, check_input_shape, first_sample_shape
from .loaders import DataBundle
from .run_dir import RunDirError, claim_run_dir

__all__ = ["amp_dtype", "check_data_fits_model", "claim_shared_run_dir", "data_baselines",
           "param_groups", "skipped_files", "wrap_distributed"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norm weights (1-D tensors), as timm's optimizer factory."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def amp_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of ``run.precision`` on ``device`` (None: fp32; the CPU trains in fp32)."""
    if device.type != "cuda":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def wrap_distributed(model: nn.Module, dist: DistInfo, run, unused_parameters: bool = False
                     ) -> tuple[nn.Module, nn.Module]:
    """``(model, net)``: under torch.distributed the model (SyncBatchNorm with ``run.sync_bn``)
    and its DDP wrapper, which the step calls; else the model twice. ``unused_parameters``:
    the model declares that a step may leave parameters without gradient
    (``ModelFacts.sparse_updates``: a modular net runs only the modules it chose), so DDP looks
    for them whatever ``run.find_unused_parameters`` says."""
    if not dist.distributed:
        return model, model
    if run.sync_bn:
        if dist.device.type != "cuda":
            raise ValueError("run.sync_bn=true needs CUDA GPUs (torch's SyncBatchNorm runs "
                             "on GPUs only); set run.sync_bn=false on CPU.")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device = dist.device
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                  else None,
                                  find_unused_parameters=run.find_unused_parameters
                                  or unused_parameters)
    return model, net


def _stamp() -> str:
    """The time part of a generated run name (``$SPIKEMOE_RUN_STAMP`` overrides it: two runs
    given the same stamp must still get two folders)."""
    return os.environ.get("SPIKEMOE_RUN_STAMP") or datetime.now().strftime("%Y%m%d-%H%M%S")


def claim_shared_run_dir(dist: DistInfo, out_dir: str, name: str | None, model: str,
                         data: str) -> Path:
    """Rank 0 claims a new run directory (``run.name``, else ``<model>-<data>-<stamp>``);
    every rank gets it, or the same ``RunDirError``."""
    chosen = name is not None
    name = name or f"{model}-{data}-{_stamp()}"
    claimed = ""
    if dist.is_main:
        try:
            claimed = str(claim_run_dir(out_dir, name, chosen=chosen))
        except RunDirError as e:
            claimed = f"error:{e}"
    claimed = broadcast_object(claimed)
    if claimed.startswith("error:"):
        raise RunDirError(claimed[len("error:"):])
    return Path(claimed)


def check_data_fits_model(model: nn.Module, data: DataBundle, model_name: str,
                          data_name: str) -> None:
    """Refuse a run whose data samples differ from the model's ``input_shape`` (size, T,
    channels): it would train, but evaluate and profile would then refuse its own model.
    Reads one TEST sample (no augmentation: no random number is drawn)."""
    try:
        check_input_shape(model, first_sample_shape(data.test), f"data {data_name}",
                          source=f"model {model_name}")
    except InputShapeError as e:
        words = str(e).split(" A model fed inputs")[0].rstrip(".")
        raise InputShapeError(
            f"{words}. Make them agree before training: set the data to the model's shape "
            "(data.size=[H,W], data.T=N) or the model to the data's (model.img_size=[H,W], "
            "model.T=N; any multiple of the stem's patch size works).") from None


def _unwrapped(split):
    return getattr(split, "dataset", split)  # through a Subset (data.*_samples)


def data_baselines(data: DataBundle) -> dict | None:
    """The dataset's own reference figures, if it has any (``stdlib-bytes``: the unigram
    perplexity of its training split, ``text_corpus.StdlibBytes.baselines``)."""
    compute = getattr(_unwrapped(data.train), "baselines", None)
    return compute(_unwrapped(data.test)) if callable(compute) else None


def skipped_files(data: DataBundle) -> list[tuple[str, str]]:
    """The event files ``data.skip_corrupt`` left out of either split, as (path, reason)."""
    skipped = []
    for split in (data.train, data.test):
        skipped += [tuple(item) for item in getattr(_unwrapped(split), "skipped_files", None) or []]
    return skipped
