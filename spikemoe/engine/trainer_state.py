"""The trainer's state: what a checkpoint holds, how a run is restored from one, and the save.

A checkpoint (``CHECKPOINT_FORMAT``) holds model, optimiser, scheduler, scaler, EMA, epoch,
step, the best epoch, this epoch's training sums (``task.Meter``, by name) and every rank's RNG
states: a run resumed from any checkpoint ends with the same weights, bit for bit on CPU, as
one never stopped. A save first checks that nothing went non-finite (``nonfinite.py``), so the
last checkpoint is always the last good one.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, save_checkpoint
from .config import config_to_dict
from .distributed import all_gather_objects
from .evaluate import load_model_weights
from .nonfinite import non_finite_tensors
from .resume import apply_resume_changes
from .rng import get_rng_state, set_rng_state
from .task import METRIC

__all__ = ["TrainerState"]

_OLD_SUMS = ("loss", "aux_loss", "correct", "samples")  # a checkpoint's positional sums


class TrainerState:
    """Checkpoint state of ``Trainer`` (a mixin: the attributes are the trainer's)."""

    def state_dict(self) -> dict:
        """Everything a resume needs (plain data and tensors: weights-only loadable)."""
        rng = all_gather_objects(get_rng_state())  # every rank takes part
        return {
            "format": CHECKPOINT_FORMAT, "config": config_to_dict(self.cfg),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.epoch, "step": self.step, "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.dist.world_size, "best": dict(self.best),
            "sums": self.meter.state_dict(),
            "rng": rng,
        }

    def _load_state(self, ckpt: dict, path: Path) -> None:
        if ckpt["steps_per_epoch"] != self.steps_per_epoch:
            raise CheckpointError(
                f"{path} was written with {ckpt['steps_per_epoch']} steps per epoch, this config "
                f"gives {self.steps_per_epoch} (data.batch_size or the dataset changed). Resume "
                "with the run's own data settings.")
        load_model_weights(self.model, ckpt["model"], str(path))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        sched = dict(ckpt["scheduler"], lr_lambdas=[None])  # the schedule comes from the config
        self.scheduler.load_state_dict(sched)
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.epoch, self.step, self.best = ckpt["epoch"], ckpt["step"], dict(ckpt["best"])
        if ckpt["world_size"] == self.dist.world_size:  # sums are this rank's shard's
            self.meter.load_state_dict(_named_sums(ckpt))
        if self.resume_changes:
            apply_resume_changes(self.resume_changes, self.cfg, self.optimizer, self.scheduler)

    def save(self, name: str = "last") -> Path | None:
        """Write ``checkpoints/<name>.pt`` (rank 0) after checking that the loss, inputs and
        gradients stayed finite and that every parameter and buffer is finite."""
        self.check_finite()
        names = non_finite_tensors(self.model, self.dist.distributed)
        if names:
            self._raise_non_finite(self.step, 4, f" ({', '.join(names[:5])}"
                                   f"{', ...' if len(names) > 5 else ''})")
        state = self.state_dict()
        path = self.run_dir / "checkpoints" / f"{name}.pt"
        if self.dist.is_main:
            save_checkpoint(state, path, keep_previous=name == "last",
                            previous_ok=self._last_ok)
            self._last_ok = self._last_ok or name == "last"
        return path

    def _restore_rng(self, ckpt: dict, path: Path) -> None:
        """Every rank's random streams from the checkpoint (when it has as many ranks)."""
        rng = ckpt["rng"]
        if len(rng) == self.dist.world_size:
            set_rng_state(rng[self.dist.rank])
        else:
            self.logger.info(f"note: {path} was written by {len(rng)} processes, this run "
                             f"has {self.dist.world_size}: random streams restart from run.seed.")
        self.logger.info(f"resumed {path} at epoch {self.epoch + 1}, step {self.step}")


def _named_sums(ckpt: dict) -> dict[str, torch.Tensor]:
    """The checkpoint's epoch sums by name (a checkpoint may hold them as a positional
    tensor plus a ``metric_sums`` dict: read both)."""
    sums = ckpt["sums"]
    if isinstance(sums, dict):
        return sums
    named = dict(zip(_OLD_SUMS, sums.to(torch.float64).unbind(0)))
    named.update({METRIC + k: v for k, v in ckpt.get("metric_sums", {}).items()})
    return named
