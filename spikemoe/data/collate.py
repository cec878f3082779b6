"""Batching for the models' time-major contract: ``collate_time_major(batch) -> (x, y)``."""
from __future__ import annotations

import torch

__all__ = ["collate_time_major"]


def collate_time_major(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(x, y)`` items into model input.

    Event items ``x [T, 2, H, W]`` -> ``x [T, B, 2, H, W]`` (time-major, contiguous); image items
    ``x [C, H, W]`` -> ``x [B, C, H, W]``. Labels -> ``y`` int64 ``[B]``. Token items (text:
    ``x [N]`` int64 with per-token targets ``y [N]``) -> ``x [B, N]``, ``y [B, N]``.

    Raises:
        ValueError: an empty batch, or items of different shapes (the message names both).
    """
    if not batch:
        raise ValueError("collate_time_major got an empty batch")
    xs = [torch.as_tensor(x) for x, _ in batch]
    first = xs[0].shape
    for i, x in enumerate(xs):
        if x.shape != first:
            raise ValueError(f"batch items differ in shape: item 0 is {list(first)}, item {i} is "
                             f"{list(x.shape)}; build the dataset with one T and size")
    if len(first) == 1:  # token sequences with a target per token
        return torch.stack(xs), torch.stack([torch.as_tensor(y, dtype=torch.int64)
                                             for _, y in batch])  # [B, N], [B, N]
    if len(first) not in (3, 4):
        raise ValueError("items must be event frames [T, 2, H, W], images [C, H, W] or token "
                         f"ids [N], got {list(first)}")
    x = torch.stack(xs)  # [B, T, 2, H, W] or [B, C, H, W]
    if x.dim() == 5:
        x = x.transpose(0, 1).contiguous()  # [B, T, 2, H, W] -> [T, B, 2, H, W]
    y = torch.as_tensor([int(y) for _, y in batch], dtype=torch.int64)
    return x, y
