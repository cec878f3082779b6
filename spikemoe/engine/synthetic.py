"""Tiny deterministic data and a tiny non-spiking model, for tests, benchmarks and smoke runs.

``SyntheticFrames``: event-frame items ``(x [T, 2, H, W] float32 counts, y)`` like the real
event datasets', learnable in a few steps: class ``c`` is a fixed random template (Poisson
rate map) and each sample is Poisson counts drawn from it, with a per-sample generator
``(seed, index)`` so an item never depends on the order it is read in.

``TinyANN``: a two-layer perceptron over time-averaged frames that follows the model contract
(``ModelOutput`` with an auxiliary loss and metrics), with no BatchNorm and no spiking
neurons: its loss and gradients on one process equal those of N processes exactly (up to the
order of float sums), which the distributed test relies on.
"""
from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import Dataset

from spikemoe.contract import ModelOutput, SpikeMoEModel

from ..data import DatasetInfo, DatasetSpec
from .loaders import DataBundle

__all__ = ["SyntheticFrames", "TinyANN", "synthetic_bundle"]


class SyntheticFrames(Dataset):
    """``n`` items of ``num_classes`` Poisson-count templates (module docstring).

    Args:
        n: items. T, size: frames ``[T, 2, size, size]``. seed: templates and samples.
        offset: index offset (a test split is ``offset=n_train``: other samples, same templates).
        delay_s: sleep per item (to make a run slow enough to kill in a test).
    """

    def __init__(self, n: int, *, T: int = 2, size: int = 16, num_classes: int = 4,
                 seed: int = 0, offset: int = 0, delay_s: float = 0.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.templates = 2.0 * torch.rand(num_classes, T, 2, size, size, generator=g) ** 3
        self.n, self.seed, self.offset, self.delay_s = n, seed, offset, delay_s
        self.num_classes = num_classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.delay_s:
            time.sleep(self.delay_s)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.offset + i + 1)
        y = (self.offset + i) % self.num_classes
        x = torch.poisson(self.templates[y], generator=g)  # [T, 2, H, W]
        return x, y


def synthetic_spec(name: str, n_train: int = 64, n_test: int = 32, **kwargs) -> DatasetSpec:
    """``synthetic_bundle``'s splits as a dataset spec (kind 'events'), to register with
    ``spikemoe.data.temporary_dataset`` so that the commands find it by ``name``."""
    data = synthetic_bundle(n_train, n_test, **kwargs)
    size = data.test.templates.shape[-1]
    return DatasetSpec(
        info=DatasetInfo(name, "events", data.num_classes, 2, (size, size), "none",
                         "spikemoe/engine/synthetic.py", needs_root=False),
        build=lambda spec, split, options: data.train if split == "train" else data.test,
        verify=lambda spec, root, deep: ([], ["synthetic, in memory"]))


def synthetic_bundle(n_train: int = 64, n_test: int = 32, **kwargs) -> DataBundle:
    """Train and test ``SyntheticFrames`` sharing templates."""
    train = SyntheticFrames(n_train, **kwargs)
    test = SyntheticFrames(n_test, offset=n_train, **kwargs)
    return DataBundle(train, test, train.num_classes)


class TinyANN(SpikeMoEModel):
    """``[T, B, C, H, W]`` or ``[B, C, H, W]`` -> mean over T -> Linear-GELU-Linear -> logits.

    ``aux_loss`` = ``aux_scale * mean(hidden^2)`` (exercises the trainer's aux path);
    ``metrics``: ``hidden_rate`` (fraction of positive hidden units) and ``logit_norm`` ``[K]``.
    Declares its classes only (``spikemoe.contract``): any input size with ``in_features``.
    """

    def __init__(self, in_features: int = 2 * 16 * 16, hidden: int = 32, num_classes: int = 4,
                 aux_scale: float = 1e-3) -> None:
        super().__init__()
        self.num_classes, self.aux_scale = num_classes, aux_scale
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        if x.dim() == 5:
            x = x.mean(dim=0)  # [T, B, C, H, W] -> [B, C, H, W]
        h = torch.nn.functional.gelu(self.fc1(x.flatten(1)))  # [B, C*H*W] -> [B, hidden]
        logits = self.fc2(h)  # [B, K]
        metrics = {"hidden_rate": (h > 0).float().mean().detach(),
                   "logit_norm": logits.detach().abs().mean(dim=0)}
        return ModelOutput(logits, self.aux_scale * h.pow(2).mean(), metrics)
