"""Batching for the models' time-major contract: ``collate_time_major(batch) -> (x, y)``."""
from __future__ import annotations

import torch

__all__ = ["collate_time_major"]


def _stack(xs: list[torch.Tensor], what: str) -> torch.Tensor:
    """Stack one kind of item: frames time-major, images and token ids batch-first."""
    first = xs[0].shape
    for i, x in enumerate(xs):
        if x.shape != first:
            raise ValueError(f"batch items differ in shape{what}: item 0 is {list(first)}, item "
                             f"{i} is {list(x.shape)}; build the dataset with one T and size")
    if len(first) not in (1, 3, 4):
        raise ValueError(f"items{what} must be event frames [T, 2, H, W], images [C, H, W] or "
                         f"token ids [N], got {list(first)}")
    x = torch.stack(xs)  # [B, T, 2, H, W], [B, C, H, W] or [B, N]
    if x.dim() == 5:
        x = x.transpose(0, 1).contiguous()  # [B, T, 2, H, W] -> [T, B, 2, H, W]
    return x


def collate_time_major(batch: list[tuple]) -> tuple[torch.Tensor | dict[str, torch.Tensor],
                                                    torch.Tensor]:
    """Stack ``(x, y)`` items into model input.

    Event items ``x [T, 2, H, W]`` -> ``x [T, B, 2, H, W]`` (time-major, contiguous); image items
    ``x [C, H, W]`` -> ``x [B, C, H, W]``. Labels -> ``y`` int64 ``[B]``. Token items (text:
    ``x [N]`` int64 with per-token targets ``y [N]``) -> ``x [B, N]``, ``y [B, N]``. Multi-view
    items ``x = {view: tensor}`` (digits-dvs ``views="events+image"``) -> a dict of the same
    keys, each view batched by the rules above (``events [T, B, 2, H, W]``, ``image
    [B, 1, H, W]``).

    Raises:
        ValueError: an empty batch, items of different shapes or views (the message names both).
    """
    if not batch:
        raise ValueError("collate_time_major got an empty batch")
    first = batch[0][0]
    if isinstance(first, dict):
        keys = list(first)
        for i, (x, _) in enumerate(batch):
            if not isinstance(x, dict) or list(x) != keys:
                found = sorted(x) if isinstance(x, dict) else type(x).__name__
                raise ValueError(f"batch items differ in views: item 0 has {keys}, item {i} has "
                                 f"{found}; build the dataset with one views= option")
        x = {k: _stack([torch.as_tensor(x[k]) for x, _ in batch], f" (view {k!r})") for k in keys}
        return x, torch.as_tensor([int(y) for _, y in batch], dtype=torch.int64)
    xs = [torch.as_tensor(x) for x, _ in batch]
    x = _stack(xs, "")
    if xs[0].dim() == 1:  # token sequences with a target per token: [B, N], [B, N]
        return x, torch.stack([torch.as_tensor(y, dtype=torch.int64) for _, y in batch])
    y = torch.as_tensor([int(y) for _, y in batch], dtype=torch.int64)
    return x, y
