"""One process or N under ``torchrun``: the same command, the same training.

``torchrun --nproc_per_node=N`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; with
``WORLD_SIZE > 1`` we join the process group (NCCL on GPUs, gloo on CPU) and the trainer wraps
the model in ``DistributedDataParallel``. Nothing here launches processes: torchrun does.

Data: ``ResumableDistributedSampler`` is torch's ``DistributedSampler`` (the shuffle is a
function of ``(seed, epoch)`` only, identical on every rank and run) that can start an epoch
part-way, for exact mid-epoch resume. ``ShardSampler`` splits the test set without padding,
so metrics summed over ranks count every sample exactly once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

__all__ = ["DistInfo", "ResumableDistributedSampler", "ShardSampler", "all_gather_cat", "all_gather_objects",
           "all_reduce_sum", "broadcast_object", "cleanup_distributed", "init_distributed"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place: ``rank`` of ``world_size``; ``device`` it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, writes checkpoints and shows progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("run.device=cuda, but torch.cuda.is_available() is False on this "
                         "machine. Use run.device=auto (or cpu) to train on the CPU.")
    if device in ("auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistInfo:
    """Join torchrun's process group if there is one; pick this process's device.

    Args:
        device: 'auto' (this rank's GPU if there is one, else CPU), 'cuda' or 'cpu'.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank, world, local_rank, dev)


def cleanup_distributed() -> None:
    """Leave the process group (after the last collective)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (a no-op on one process); returns ``t``."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` (same shape on every rank) concatenated along dim 0, rank order;
    ``t`` itself on a single process."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return t
    parts = [torch.empty_like(t) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (a picklable value, e.g. a run directory name)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` whose epoch can start after ``skip`` of this rank's samples.

    ``set_epoch(epoch, skip)``: the order is the same as without ``skip``, minus its first
    ``skip`` indices, so resuming after ``k`` batches of ``b`` replays batch ``k + 1`` onwards.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int,
                 shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = int(skip)

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.skip:])

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + N, rank + 2N, ...`` in order: every sample on exactly one rank."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
