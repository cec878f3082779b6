"""Datasets and data loaders for training and evaluation, from ``DataConfig``.

Datasets come from ``spikemoe.data.create_dataset`` (or are handed in, for tests and custom
data). Loaders are built so that the batch order depends only on ``(run.seed, epoch)``:

- train: ``ResumableDistributedSampler`` (same permutation on 1 or N processes; rank r takes
  positions r, r + N, ...), ``drop_last`` so every step has the same batch size;
- each loader owns a ``torch.Generator`` seeded per epoch, so creating an iterator never
  draws from the global generator (torch's DataLoader otherwise takes its worker base seed
  from it, and a resumed run would drift from an uninterrupted one).

Bit-identical mid-epoch resume holds with ``num_workers=0``. With workers, augmentation is
drawn in worker processes seeded per epoch: resuming at an epoch boundary is exact, mid-epoch
the per-sample augmentation differs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..data import create_dataset, dataset_info
from .config import DataConfig
from .distributed import DistInfo, ResumableDistributedSampler, ShardSampler

__all__ = [
    "DataBundle",
    "build_datasets",
    "build_eval_loader",
    "build_train_loader",
    "WithIndex",
    "create_split",
    "local_batch",
    "to_device",
]


@dataclass
class DataBundle:
    """The train and test sets of a run, their number of classes, and the dataset's declared
    kind ('events', 'images' or 'text': the run's task, ``task.task_for``; None: classification).
    """

    train: Dataset | None
    test: Dataset
    num_classes: int
    kind: str | None = None


def create_split(cfg: DataConfig, split: str, augment=None) -> Dataset:
    """``spikemoe.data.create_dataset`` for one split of ``cfg`` (the data module's errors say
    what to do when a dataset is missing or not prepared). ``augment``: None = ``cfg``'s."""
    size = tuple(cfg.size) if isinstance(cfg.size, list) else cfg.size
    dataset = create_dataset(cfg.name, split, root=cfg.root, T=cfg.T, size=size,
                             integration=cfg.integration,
                             augment=cfg.augment if augment is None else augment,
                             cache_dir=cfg.cache_dir, seed=cfg.seed,
                             skip_corrupt=cfg.skip_corrupt, download=cfg.download,
                             **({"views": cfg.views} if cfg.views != "events" else {}))
    limit = cfg.train_samples if split == "train" else cfg.test_samples
    if limit is not None and limit < len(dataset):  # evenly spaced: i * len / limit
        dataset = Subset(dataset, [i * len(dataset) // limit for i in range(limit)])
    return dataset


def build_datasets(cfg: DataConfig) -> DataBundle:
    """The train and test splits of ``cfg``, the dataset's number of classes and kind."""
    info = dataset_info(cfg.name)
    return DataBundle(create_split(cfg, "train"), create_split(cfg, "test"), info.num_classes,
                      info.kind)


def to_device(x, device: torch.device):
    """A batch's input on ``device``: a tensor, or a dict of named view tensors."""
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=True) for k, v in x.items()}
    return x.to(device, non_blocking=True)


def local_batch(global_batch: int, world_size: int, key: str = "data.batch_size") -> int:
    """This process's share of the global batch; it must divide evenly."""
    if global_batch % world_size:
        raise ValueError(f"{key}={global_batch} is the global batch and must divide evenly over "
                         f"{world_size} processes; set it to a multiple of {world_size}.")
    return global_batch // world_size


def _collate():
    from spikemoe.data import collate_time_major

    return collate_time_major


class WithIndex(Dataset):
    """``dataset``'s items with their position: ``(x, y, i)``. The position is the index the
    sampler drew, so it is the same on 1 or N processes and across a resume (an EM-trained
    model keeps one stored choice per training example, ``contract.ExampleChoices``)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        return x, y, i


def _collate_with_index(batch: list) -> tuple:
    x, y = _collate()([(x, y) for x, y, _ in batch])
    return x, y, torch.tensor([i for _, _, i in batch], dtype=torch.int64)  # [B]


def build_train_loader(dataset: Dataset, cfg: DataConfig, dist: DistInfo, seed: int,
                       with_index: bool = False
                       ) -> tuple[DataLoader, ResumableDistributedSampler, torch.Generator]:
    """Shuffled, sharded, ``drop_last`` loader; call ``sampler.set_epoch(epoch, skip)`` and
    ``generator.manual_seed(...)`` before each epoch (the trainer does). With ``with_index``
    each batch is ``(x, y, index [B])`` (``WithIndex``)."""
    batch = local_batch(cfg.batch_size, dist.world_size)
    collate = _collate()
    if with_index:
        dataset, collate = WithIndex(dataset), _collate_with_index
    sampler = ResumableDistributedSampler(dataset, dist.world_size, dist.rank, seed)
    if sampler.num_samples < batch:
        raise ValueError(f"the train set has {len(dataset)} samples, fewer than one global batch "
                         f"(data.batch_size={cfg.batch_size}); lower data.batch_size.")
    generator = torch.Generator()
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers, collate_fn=collate, generator=generator,
                        pin_memory=dist.device.type == "cuda",
                        persistent_workers=False)
    return loader, sampler, generator


def build_eval_loader(dataset: Dataset, cfg: DataConfig, dist: DistInfo) -> DataLoader:
    """Ordered loader over this rank's shard of ``dataset`` (no padding, no drops)."""
    batch = cfg.eval_batch_size or cfg.batch_size
    batch = max(1, batch // dist.world_size)
    generator = torch.Generator()
    generator.manual_seed(0)
    return DataLoader(dataset, batch_size=batch,
                      sampler=ShardSampler(len(dataset), dist.rank, dist.world_size),
                      num_workers=cfg.num_workers, collate_fn=_collate(), generator=generator,
                      pin_memory=dist.device.type == "cuda")
