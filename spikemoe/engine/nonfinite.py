"""Non-finite values in training: found on the device without a sync, raised at the next check.

A NaN/inf loss, input batch, gradient norm (fp32/bf16; fp16's ``GradScaler`` skips such steps
itself) or weight is recorded as ``first bad step * 8 + code`` in one int64 tensor on the
device (``NonFiniteGuard.flag``: no host sync per step). The trainer reads it at its checks
(log interval, save, epoch end; under DDP the earliest step over the ranks) and raises
``NonFiniteLossError`` naming the step, the epoch and batch, and the last good checkpoint.
Nothing is saved after a non-finite value, so the last checkpoint is the last good one.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["BAD", "NonFiniteGuard", "NonFiniteLossError", "clip_and_check_gradients",
           "non_finite_message", "non_finite_tensors"]

# what went non-finite: code -> (event kind, words)
BAD = {1: ("loss", "the loss became NaN/inf"), 2: ("input", "an input batch held NaN/inf values"),
       3: ("gradients", "the gradients became NaN/inf"), 4: ("weights", "the weights became NaN/inf")}
CODE = {kind: code for code, (kind, _) in BAD.items()}
_NONE = 1 << 62  # "nothing bad yet", larger than any step * 8 + code


class NonFiniteLossError(RuntimeError):
    """The loss, an input batch, the gradients or the weights became NaN or inf; ``step`` is
    the 1-based step where it was first seen."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


class NonFiniteGuard:
    """The first step at which something went non-finite, and what (module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.first = torch.full((), _NONE, dtype=torch.int64, device=device)

    def flag(self, bad: torch.Tensor, kind: str, step: int) -> None:
        """Record (on the device) ``step`` with ``kind`` if ``bad`` holds and nothing was yet."""
        first = bad & (self.first == _NONE)
        self.first = torch.where(first, step * 8 + CODE[kind], self.first)

    def earliest(self, distributed: bool) -> tuple[int, int] | None:
        """``(step, code)`` of the earliest bad value over every rank, or None (a sync)."""
        bad = self.first.clone()
        if distributed:
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MIN)
        value = int(bad)
        return None if value == _NONE else (value // 8, value % 8)


def clip_and_check_gradients(model: nn.Module, optimizer, scaler, guard: NonFiniteGuard,
                             clip_grad: float | None, step: int) -> None:
    """Clip the gradients to global norm ``clip_grad`` (None: no clipping) and flag NaN/inf
    gradients at ``step`` (fp32/bf16; fp16's ``GradScaler`` skips such steps by design)."""
    if clip_grad is not None:
        scaler.unscale_(optimizer)
        norm = nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        if not scaler.is_enabled():
            guard.flag(~torch.isfinite(norm), "gradients", step)
    elif not scaler.is_enabled():
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if grads:
            norms = torch._foreach_norm(grads)  # one fused pass; NaN/inf propagate
            guard.flag(~torch.isfinite(torch.stack(norms)).all(), "gradients", step)


def non_finite_tensors(model: nn.Module, distributed: bool) -> list[str]:
    """Names of the parameters and buffers (BN statistics) holding NaN/inf on any rank; empty
    when all are finite (one reduction, then names only when something is bad)."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    if not tensors:
        return []
    bad = ~torch.stack([torch.isfinite(t).all() for t in tensors]).all()
    if distributed:
        bad = bad.to(torch.int64)
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    if not bool(bad):
        return []
    names = [n for n, t in (*model.named_parameters(), *model.named_buffers())
             if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    return names or ["(on another rank)"]


def non_finite_message(step: int, code: int, detail: str, run_dir: Path,
                       steps_per_epoch: int) -> tuple[str, str]:
    """``(kind, message)`` for the first non-finite value: what, where (step, epoch, batch),
    the last good checkpoint, and what to try."""
    last = run_dir / "checkpoints" / "last.pt"
    kept = (f"The last good checkpoint is {last}; resume from it (resume={run_dir}) "
            if last.exists() else "No checkpoint was written before it; start again ")
    epoch, batch = divmod(max(step, 1) - 1, steps_per_epoch)
    kind, what = BAD[code]
    fix = ("check the data: an input batch held NaN/inf values (data.skip_corrupt does not "
           "catch those; inspect the files or the cache)" if kind == "input" else
           "with a lower optim.lr, optim.clip_grad set, or run.precision=fp32")
    return kind, (f"{what}{detail} at step {step} (epoch {epoch + 1}, batch {batch + 1} of "
                  f"{steps_per_epoch}); training stopped and nothing was saved after it. "
                  f"{kept}{fix}.")
