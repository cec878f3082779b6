"""The trainer: one loop for every model, on 1 process or N under torchrun.

Any model that returns ``ModelOutput(logits [B, K], aux_loss, metrics)`` trains here; the loss
is ``task(logits, targets) + optim.aux_weight * aux_loss`` (``losses.py``). Nothing assumes a
spiking model: TET is opt-in and reads per-step logits through a hook. A language model
(``logits [B, N, V]`` for targets ``[B, N]``) trains on the mean per-token cross-entropy; its
top-1 is next-token accuracy and its records add ``perplexity = exp(mean token loss)``.

Per step: MixUp/CutMix (torchvision v2) -> forward under ``torch.autocast`` (bf16/fp16 on CUDA,
fp32 on CPU) -> backward (``GradScaler`` for fp16) -> optional gradient clipping -> AdamW ->
``LambdaLR`` warm-up/cosine/cool-down -> optional EMA. Metrics are summed on the device and
read at ``run.log_every`` steps and at epoch ends only, so the loop does not wait on the GPU.

Exactness: the checkpoint holds model, optimiser, scheduler, scaler, EMA, epoch, step, this
epoch's metric sums and every rank's RNG states; the batch order is a function of
(seed, epoch) (``loaders.py``). A run resumed from any checkpoint ends with the same weights,
bit for bit on CPU, as one never stopped (``tests/test_engine_resume.py``).

A non-finite loss, a non-finite input batch, or non-finite gradients (fp32/bf16; fp16's
``GradScaler`` skips such steps itself) are recorded on the device with their step number and
raise ``NonFiniteLossError`` at the next check (log interval, save, epoch end); before every
save the parameters and buffers (BN statistics) are checked too. Nothing is saved after a
non-finite value, so the last checkpoint is the last good one.

A new run claims its own directory (``run_dir.claim_run_dir``: exclusive create, after the
model is built, so a bad model override leaves no folder behind). A resumed run refuses a
changed config unless the change is listed in ``run.resume_changes`` (``resume.py``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from datetime import datetime
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..files import link_or_copy
from .checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    run_dir_of,
    save_checkpoint,
)
from .config import TrainConfig, config_to_dict, save_config
from .distributed import all_gather_objects, all_reduce_sum, broadcast_object, init_distributed
from .ema import build_ema
from .evaluate import (
    InputShapeError,
    MetricSums,
    check_input_shape,
    check_num_classes,
    evaluate_model,
    first_sample_shape,
    load_model_weights,
)
from .loaders import DataBundle, build_datasets, build_eval_loader, build_train_loader, local_batch
from .logging import RunLogger, read_metrics
from .losses import StepLogits, TETLoss, token_view, topk_correct
from .mixing import build_mixer
from .resume import apply_resume_changes, check_resume_config
from .rng import get_rng_state, seed_everything, set_rng_state
from .run_dir import RunDirError, claim_run_dir
from .schedule import build_scheduler

__all__ = ["NonFiniteLossError", "Trainer", "train"]

FORMAT = 1  # checkpoint layout version
# what went non-finite: code -> (event kind, words); recorded on the device by code
_BAD = {1: ("loss", "the loss became NaN/inf"), 2: ("input", "an input batch held NaN/inf values"),
        3: ("gradients", "the gradients became NaN/inf"), 4: ("weights", "the weights became NaN/inf")}
_NONE = 1 << 62  # "nothing bad yet", larger than any step * 8 + code


class NonFiniteLossError(RuntimeError):
    """The loss, an input batch, the gradients or the weights became NaN or inf; ``step`` is
    the 1-based step where it was first seen."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norm weights (1-D tensors), as timm's optimizer factory."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """Builds everything a run needs from ``cfg`` and trains it with ``fit()``.

    Args:
        cfg: the resolved config (``config.load_config``).
        data: train/test sets and class count; None builds them from ``cfg.data``.
        model: a model to train instead of ``create_model(cfg.model.name, **kwargs)``.
    """

    def __init__(self, cfg: TrainConfig, data: DataBundle | None = None,
                 model: nn.Module | None = None) -> None:
        self.cfg, run = cfg, cfg.run
        self.dist = dist = init_distributed(run.device)
        self.device = dist.device
        ckpt_path = find_checkpoint(run.resume) if run.resume else None
        ckpt = load_checkpoint(ckpt_path) if ckpt_path else None
        self.resume_changes: dict = {}
        if ckpt is not None:
            self._check_resumable(ckpt, ckpt_path)
        seed_everything(run.seed + dist.rank)  # ranks draw different augmentations

        self.data = data if data is not None else build_datasets(cfg.data)
        if model is None:
            from spikemoe.models import create_model

            model = create_model(cfg.model.name, **cfg.model.kwargs)
        check_num_classes(model, self.data.num_classes, cfg.data.name)
        if data is None:  # data built from cfg.data: its frames must be what the model takes
            _check_data_fits_model(model, self.data, cfg)
        if run.memopt:  # SpikingJelly's memopt (engine/memopt.py), before a run folder and DDP
            from .memopt import apply_memopt, example_batch

            model = apply_memopt(model.to(self.device), run.memopt, example_batch(
                self.data.train, local_batch(cfg.data.batch_size, dist.world_size), self.device))
        self.baselines = _data_baselines(self.data)
        self.skipped_files = _skipped_files(self.data)
        # only now, with data and model built, does the run take a folder
        self.run_dir = run_dir_of(ckpt_path) if ckpt_path else self._new_run_dir()
        # ``last.pt`` is known whole when this process loaded it or wrote it: then a save may
        # keep it as ``last.prev.pt`` without re-reading it (else it is checked first)
        self._last_ok = ckpt_path is not None and ckpt_path == self.run_dir / "checkpoints" / \
            "last.pt"
        self.model = model.to(self.device)
        self.net = self.model  # what the step calls: the model, or its DDP wrapper
        if dist.distributed:
            if run.sync_bn:
                if self.device.type != "cuda":
                    raise ValueError("run.sync_bn=true needs CUDA GPUs (torch's SyncBatchNorm runs "
                                     "on GPUs only); set run.sync_bn=false on CPU.")
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=run.find_unused_parameters)
        self.ema = build_ema(self.model, cfg.optim.ema_decay)

        o = cfg.optim
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, o.weight_decay), lr=o.lr,
                                           betas=tuple(o.betas), eps=o.eps)
        self.train_loader, self.sampler, self.loader_gen = build_train_loader(
            self.data.train, cfg.data, dist, run.seed)
        self.test_loader = build_eval_loader(self.data.test, cfg.data, dist)
        self.local_batch = local_batch(cfg.data.batch_size, dist.world_size)
        self.steps_per_epoch = len(self.train_loader)
        self.total_epochs = cfg.schedule.epochs + cfg.schedule.cooldown_epochs
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, o.lr, self.steps_per_epoch)
        self.amp_dtype = self._amp_dtype(run.precision)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.mixer = build_mixer(cfg.augment, self.data.num_classes)
        self.criterion = _classifier_loss(self.model, o.label_smoothing)
        self.tet = StepLogits(self.model, o.tet_module) if o.tet else None
        self.tet_loss = TETLoss(o.label_smoothing, o.tet_lambda, o.tet_means) if o.tet else None

        self.epoch = self.step = 0
        self.sequence_task = False  # set by the first step whose logits are [B, N, V]
        self.best = {"top1": None, "epoch": None}
        self._new_sums()
        # first bad step * 8 + its _BAD code (on the device: no sync per step), or _NONE
        self._bad = torch.full((), _NONE, dtype=torch.int64, device=self.device)
        if ckpt is not None:
            self._load_state(ckpt, ckpt_path)
        self.logger = RunLogger(self.run_dir, enabled=dist.is_main, tensorboard=run.tensorboard,
                                resume_step=self.step if ckpt is not None else None)
        if dist.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
        if self.resume_changes:
            changes = {k: list(v) for k, v in self.resume_changes.items()}
            self.logger.write("event", self.step, {"event": "resume_changes", "changes": changes})
            self.logger.info("resumed with changed config (run.resume_changes): " + "; ".join(
                f"{k}: {old!r} -> {new!r}" for k, (old, new) in self.resume_changes.items()))
        for path, reason in self.skipped_files:
            self.logger.info(f"skipped (data.skip_corrupt): {path}: {reason}")
        if ckpt is not None:
            rng = ckpt["rng"]
            if len(rng) == dist.world_size:
                set_rng_state(rng[dist.rank])  # last: nothing above may draw after this
            else:
                self.logger.info(f"note: {ckpt_path} was written by {len(rng)} processes, this run "
                                 f"has {dist.world_size}: random streams restart from run.seed.")
            self.logger.info(f"resumed {ckpt_path} at epoch {self.epoch + 1}, step {self.step}")

    # ---------------------------------------------------------------- set-up helpers
    def _new_run_dir(self) -> Path:
        """Rank 0 claims a new run directory (``run_dir.claim_run_dir``); all ranks get it."""
        run = self.cfg.run
        name = run.name or (f"{self.cfg.model.name}-{self.cfg.data.name}-"
                            f"{os.environ.get('SPIKEMOE_RUN_STAMP') or _stamp()}")
        claimed: str = ""
        if self.dist.is_main:
            try:
                claimed = str(claim_run_dir(run.out_dir, name, chosen=run.name is not None))
            except RunDirError as e:
                claimed = f"error:{e}"
        claimed = broadcast_object(claimed)
        if claimed.startswith("error:"):
            raise RunDirError(claimed[len("error:"):])
        return Path(claimed)

    def _check_resumable(self, ckpt: dict, path: Path) -> None:
        if ckpt.get("format") != FORMAT:
            raise CheckpointError(f"{path} has checkpoint format {ckpt.get('format')}, this "
                                  f"spikemoe writes format {FORMAT}; it cannot resume it.")
        stored, asked = ckpt["config"]["model"], config_to_dict(self.cfg)["model"]
        if stored != asked:
            raise CheckpointError(
                f"{path} was trained with model {stored}, but this config builds {asked}. "
                f"Resume with the run's own config (`spikemoe train resume={run_dir_of(path)}` "
                "with no CONFIG), or start a fresh run without resume=.")
        self.resume_changes = check_resume_config(ckpt["config"], self.cfg, str(path))

    def _amp_dtype(self, precision: str) -> torch.dtype | None:
        if self.device.type != "cuda":
            return None  # CPU trains in fp32
        if precision == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def autocast(self):
        """The forward's precision context (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _new_sums(self) -> None:
        # loss * B, aux * B, top-1 hits, samples: summed on the device, read at epoch end
        self.sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        self.metric_sums = MetricSums()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything a resume needs (plain data and tensors: weights-only loadable)."""
        rng = all_gather_objects(get_rng_state())  # every rank takes part
        return {
            "format": FORMAT, "config": config_to_dict(self.cfg),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.epoch, "step": self.step, "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.dist.world_size, "best": dict(self.best),
            "sums": self.sums.cpu(), "metric_sums": {k: v.cpu() for k, v in
                                                     self.metric_sums.sums.items()},
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
            self.sums = ckpt["sums"].to(self.device)
            self.metric_sums.sums = {k: v.to(self.device) for k, v in ckpt["metric_sums"].items()}
        if self.resume_changes:
            apply_resume_changes(self.resume_changes, self.cfg, self.optimizer, self.scheduler)

    def save(self, name: str = "last") -> Path | None:
        """Write ``checkpoints/<name>.pt`` (rank 0) after checking that the loss, inputs and
        gradients stayed finite and that every parameter and buffer is finite."""
        self.check_finite()
        self._check_weights_finite()
        state = self.state_dict()
        path = self.run_dir / "checkpoints" / f"{name}.pt"
        if self.dist.is_main:
            save_checkpoint(state, path, keep_previous=name == "last",
                            previous_ok=self._last_ok)
            self._last_ok = self._last_ok or name == "last"
        return path

    def _check_weights_finite(self) -> None:
        """Raise ``NonFiniteLossError`` if a parameter or buffer (BN statistics) is NaN/inf."""
        tensors = [t for t in (*self.model.parameters(), *self.model.buffers())
                   if t.is_floating_point()]
        if not tensors:
            return
        bad = ~torch.stack([torch.isfinite(t).all() for t in tensors]).all()
        if self.dist.distributed:
            bad = bad.to(torch.int64)
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        if bool(bad):
            names = [n for n, t in (*self.model.named_parameters(), *self.model.named_buffers())
                     if t.is_floating_point() and not bool(torch.isfinite(t).all())]
            self._raise_non_finite(self.step, 4, f" ({', '.join(names[:5])}"
                                   f"{', ...' if len(names) > 5 else ''})")

    # ---------------------------------------------------------------- one step
    def forward_backward(self, x: torch.Tensor, y: torch.Tensor, epoch: int):
        """Mix, forward, loss, backward (no optimiser step). Returns ``(loss, output)``."""
        targets = y
        if self.mixer is not None:
            x, targets = self.mixer(x, y, epoch)
        with self.autocast():
            out = self.net(x)
            logits = out.logits.float()
            if self.tet is not None:
                task = self.tet_loss(self.tet.take(out.logits).float(), targets)
            else:
                task = self.criterion(*token_view(logits, targets))  # per token for LMs
            loss = task + self.cfg.optim.aux_weight * out.aux_loss.float()
        if x.is_floating_point():  # first: a NaN input makes the loss NaN too
            self._flag(~torch.isfinite(x).all(), 2)
        self._flag(~torch.isfinite(loss.detach()), 1)
        self.scaler.scale(loss).backward()
        return loss.detach(), out

    def _flag(self, bad: torch.Tensor, code: int) -> None:
        """Record (on the device, no sync) the first step where ``bad`` held, and what it was
        (``_BAD`` code)."""
        first = bad & (self._bad == _NONE)
        self._bad = torch.where(first, (self.step + 1) * 8 + code, self._bad)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        """One optimiser step on a batch; returns the loss (on the device, not synchronised)."""
        loss, out = self.forward_backward(x, y, epoch)
        if self.cfg.optim.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad)
            if not self.scaler.is_enabled():  # fp16: the scaler skips inf steps by design
                self._flag(~torch.isfinite(norm), 3)
        elif not self.scaler.is_enabled():
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            if grads:
                norms = torch._foreach_norm(grads)  # one fused pass; NaN/inf propagate
                self._flag(~torch.isfinite(torch.stack(norms)).all(), 3)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        logits, targets = token_view(out.logits.detach(), y)
        (hits,) = topk_correct(logits, targets, (1,))
        b = len(y)
        per_sample = targets.numel() // b  # predictions per sample: 1, or N tokens for an LM
        self.sequence_task |= per_sample > 1 or out.logits.dim() == 3
        self.sums += torch.stack([loss.double() * b, out.aux_loss.detach().double() * b,
                                  hits.double() / per_sample, self.sums.new_tensor(b)])
        self.metric_sums.add(out.metrics, b)
        return loss

    def check_finite(self) -> None:
        """Raise ``NonFiniteLossError`` if any rank's loss, input batch or gradients have been
        NaN/inf since the start."""
        bad = self._bad.clone()
        if self.dist.distributed:  # the earliest bad step over the ranks, with its code
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MIN)
        value = int(bad)
        if value == _NONE:
            return
        self._raise_non_finite(value // 8, value % 8)

    def _raise_non_finite(self, step: int, code: int, detail: str = "") -> None:
        last = self.run_dir / "checkpoints" / "last.pt"
        kept = (f"The last good checkpoint is {last}; resume from it (resume={self.run_dir}) "
                if last.exists() else "No checkpoint was written before it; start again ")
        epoch, batch = divmod(max(step, 1) - 1, self.steps_per_epoch)
        kind, what = _BAD[code]
        fix = ("check the data: an input batch held NaN/inf values (data.skip_corrupt does not "
               "catch those; inspect the files or the cache)" if kind == "input" else
               "with a lower optim.lr, optim.clip_grad set, or run.precision=fp32")
        message = (f"{what}{detail} at step {step} (epoch {epoch + 1}, batch {batch + 1} of "
                   f"{self.steps_per_epoch}); training stopped and nothing was saved after it. "
                   f"{kept}{fix}.")
        self.logger.write("event", step, {"event": f"non_finite_{kind}", "message": message})
        raise NonFiniteLossError(message, step)

    # ---------------------------------------------------------------- loops
    def train_epoch(self, epoch: int) -> bool:
        """Train (the rest of) ``epoch``; returns False when ``run.stop_after_steps`` stopped it."""
        run = self.cfg.run
        done = self.step - epoch * self.steps_per_epoch  # steps of this epoch already taken
        self.sampler.set_epoch(epoch, skip=done * self.local_batch)
        self.loader_gen.manual_seed(run.seed * 1_000_003 + epoch)
        self.net.train()
        bar = self.logger.progress(self.steps_per_epoch, f"epoch {epoch + 1}/{self.total_epochs}",
                                   show=run.progress)
        bar.update(done)
        for x, y in self.train_loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            loss = self.train_step(x, y, epoch)
            bar.update(1)
            if self.step % run.log_every == 0:
                self.check_finite()
                lr = self.optimizer.param_groups[0]["lr"]
                value = all_reduce_sum(loss.clone()).item() / self.dist.world_size
                self.logger.write("step", self.step, {"epoch": epoch + 1, "loss": value, "lr": lr})
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
            if run.stop_after_steps is not None and self.step >= run.stop_after_steps:
                bar.close()
                self.save("last")
                return False
            end_of_epoch = self.step % self.steps_per_epoch == 0
            if run.save_every_steps and self.step % run.save_every_steps == 0 and not end_of_epoch:
                self.save("last")
        bar.close()
        self.check_finite()
        return True

    def evaluate(self) -> dict:
        """Test metrics of the model (and ``top1_ema`` of the EMA weights)."""
        if self.dist.distributed:  # BN statistics: every rank evaluates rank 0's
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer, 0)
        result = evaluate_model(self.model, self.test_loader, self.device, self.autocast())
        if self.ema is not None:
            result["top1_ema"] = evaluate_model(self.ema.module, self.test_loader, self.device,
                                                self.autocast())["top1"]
        return result

    def fit(self) -> dict:
        """Train to the end of the schedule (or ``run.stop_after_steps``); returns the summary
        also written to ``summary.json``."""
        log, cfg = self.logger, self.cfg
        start = time.perf_counter()
        if self.step == 0:
            params = sum(p.numel() for p in self.model.parameters())
            log.info(f"run {self.run_dir}: {cfg.model.name} ({params:,} parameters) on "
                     f"{cfg.data.name}, {self.total_epochs} epochs x {self.steps_per_epoch} steps, "
                     f"{self.dist.world_size} process(es) on {self.device}")
            if self.baselines and "unigram_perplexity" in self.baselines:
                log.info(f"reference: unigram perplexity {self.baselines['unigram_perplexity']:.3f} "
                         f"(byte entropy of the training split, "
                         f"{self.baselines['unigram_entropy_bits']:.3f} bits)")
        test: dict = {}
        throughput = []
        if self.epoch >= self.total_epochs:  # resumed a run that had finished
            try:
                return self._finished_summary(start)
            finally:
                self.close()
        try:
            while self.epoch < self.total_epochs:
                epoch, t0, step0 = self.epoch, time.perf_counter(), self.step
                if not self.train_epoch(epoch):
                    log.info(f"stopped after step {self.step} (run.stop_after_steps)")
                    return self._summary(test, start, stopped=True)
                train_s = time.perf_counter() - t0
                samples_per_s = (self.step - step0) * self.cfg.data.batch_size / train_s
                throughput.append(samples_per_s)
                record, test, improved = self._end_epoch(epoch, train_s, samples_per_s, test)
                log.write("epoch", self.step, record)  # before the save: a resume rewrites it
                self.save("last")
                if improved and self.dist.is_main:
                    _link_best(self.run_dir / "checkpoints")
                log.info(_epoch_line(record, self.total_epochs))
            return self._summary(test, start, throughput=throughput)
        finally:
            self.close()

    def _end_epoch(self, epoch: int, train_s: float, samples_per_s: float, test: dict
                   ) -> tuple[dict, dict, bool]:
        """Close ``epoch``: its metrics record, the test metrics (new when evaluated this
        epoch, else ``test``), and whether the test top-1 is a new best."""
        loss_sum, aux_sum, hits, n = all_reduce_sum(self.sums.clone()).tolist()
        record = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                  "train/loss": loss_sum / n, "train/aux_loss": aux_sum / n,
                  "train/top1": 100 * hits / n, "samples_per_s": samples_per_s,
                  "epoch_time_s": train_s}
        if self.sequence_task and self.cfg.optim.label_smoothing == 0:
            # exp of the mean token loss (without the aux term); with label smoothing the
            # training loss is not a log-likelihood, so only the test perplexity is reported
            task_loss = (loss_sum - self.cfg.optim.aux_weight * aux_sum) / n
            record["train/perplexity"] = math.exp(min(task_loss, 700.0))
        record.update({f"train/{k}": v for k, v in self.metric_sums.means(n).items()})
        self.epoch = epoch + 1
        self._new_sums()
        improved = False
        if self.epoch % self.cfg.run.eval_every == 0 or self.epoch == self.total_epochs:
            test = self.evaluate()
            record.update({f"test/{k}": v for k, v in test.items() if k not in ("n", "metrics")})
            record.update({f"test/{k}": v for k, v in test["metrics"].items()})
            if "perplexity" in test:  # a language model: the best epoch is the lowest perplexity
                best_ppl = self.best.get("perplexity")
                improved = best_ppl is None or test["perplexity"] < best_ppl
            else:
                improved = self.best["top1"] is None or test["top1"] > self.best["top1"]
            if improved:
                self.best = {"top1": test["top1"], "epoch": self.epoch,
                             **({"perplexity": test["perplexity"]} if "perplexity" in test else {})}
        record.update({"best/top1": self.best["top1"], "best/epoch": self.best["epoch"]})
        return record, test, improved

    def _finished_summary(self, start: float) -> dict:
        """A resumed run that had already trained every epoch: nothing is trained; its
        ``summary.json`` is returned as it is, or (killed before writing it) rebuilt once from
        a fresh evaluation and the epoch records' throughput."""
        path = self.run_dir / "summary.json"
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            summary = None
        if isinstance(summary, dict) and not summary.get("stopped"):
            self.logger.info(f"run {self.run_dir} already finished ({self.epoch}/"
                             f"{self.total_epochs} epochs); nothing to train. Its summary: {path}")
            return {**summary, "already_finished": True}  # the key is not written to disk
        epochs = [r for r in read_metrics(self.run_dir / "metrics.jsonl", "epoch")
                  if "samples_per_s" in r] if (self.run_dir / "metrics.jsonl").exists() else []
        return self._summary(self.evaluate(), start,
                             throughput=[r["samples_per_s"] for r in epochs])

    def _summary(self, test: dict, start: float, stopped: bool = False,
                 throughput: list | None = None) -> dict:
        summary = {"run_dir": str(self.run_dir), "model": self.cfg.model.name,
                   "data": self.cfg.data.name, "epochs": self.epoch, "steps": self.step,
                   "best_top1": self.best["top1"], "best_epoch": self.best["epoch"],
                   "final_top1": test.get("top1"), "final_top5": test.get("top5"),
                   "final_top1_ema": test.get("top1_ema"), "stopped": stopped,
                   **({"final_perplexity": test["perplexity"]} if "perplexity" in test else {}),
                   **({"best_perplexity": self.best["perplexity"]}
                      if "perplexity" in self.best else {}),
                   **({"baselines": self.baselines} if self.baselines else {}),
                   "samples_per_s": (sum(throughput) / len(throughput)) if throughput else None,
                   "skipped_files": [list(item) for item in self.skipped_files],
                   "wall_s": time.perf_counter() - start}
        if not stopped:
            self.logger.write("final", self.step, {k: v for k, v in summary.items()
                                                   if k != "run_dir"})
            ppl = (f", final test perplexity {summary['final_perplexity']:.3f}"
                   if "final_perplexity" in summary else "")
            self.logger.info(f"done: best test top-1 {summary['best_top1']:.2f}% (epoch "
                             f"{summary['best_epoch']}), final {summary['final_top1']:.2f}%{ppl}; "
                             f"run directory {self.run_dir}")
        if self.dist.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        return summary

    def close(self) -> None:
        """Release the log files and hooks (the process group is the caller's)."""
        if self.tet is not None:
            self.tet.remove()
            self.tet = None
        self.logger.close()


def _stamp() -> str:
    """The time part of a generated run name (``$SPIKEMOE_RUN_STAMP`` overrides it: two runs
    given the same stamp must still get two folders)."""
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _check_data_fits_model(model: nn.Module, data: DataBundle, cfg: TrainConfig) -> None:
    """Refuse a run whose data samples differ from the model's ``input_shape`` (size, T,
    channels): it would train, but evaluate and profile would then refuse its own model.
    Reads one TEST sample (no augmentation: no random number is drawn)."""
    try:
        check_input_shape(model, first_sample_shape(data.test), f"data {cfg.data.name}",
                          source=f"model {cfg.model.name}")
    except InputShapeError as e:
        words = str(e).split(" A model fed inputs")[0].rstrip(".")
        raise InputShapeError(
            f"{words}. Make them agree before training: set the data to the model's shape "
            "(data.size=[H,W], data.T=N) or the model to the data's (model.img_size=[H,W], "
            "model.T=N; any multiple of the stem's patch size works).") from None


def _classifier_loss(model: nn.Module, label_smoothing: float):
    """The task loss the model declares (``classifier_loss``): softmax cross-entropy (default)
    or V-MoE's per-class sigmoid cross-entropy (``models.vit.sigmoid_cross_entropy``)."""
    if getattr(model, "classifier_loss", "softmax_xent") == "sigmoid_xent":
        from spikemoe.models.vit import sigmoid_cross_entropy

        return lambda logits, targets: sigmoid_cross_entropy(logits, targets, label_smoothing)
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


def _data_baselines(data: DataBundle) -> dict | None:
    """The dataset's own reference figures, if it has any (``stdlib-bytes``: the unigram
    perplexity of its training split, ``text_corpus.StdlibBytes.baselines``)."""
    train = getattr(data.train, "dataset", data.train)  # through a Subset (data.train_samples)
    test = getattr(data.test, "dataset", data.test)
    compute = getattr(train, "baselines", None)
    return compute(test) if callable(compute) else None


def _link_best(folder: Path) -> None:
    """``best.pt`` := the ``last.pt`` just written (a hard link; atomic replace)."""
    link_or_copy(folder / "last.pt", folder / "best.pt")


def _skipped_files(data: DataBundle) -> list[tuple[str, str]]:
    """The event files ``data.skip_corrupt`` left out of either split, as (path, reason)."""
    skipped = []
    for split in (data.train, data.test):
        dataset = getattr(split, "dataset", split)  # through a Subset (data.*_samples)
        skipped += [tuple(item) for item in getattr(dataset, "skipped_files", None) or []]
    return skipped


def _epoch_line(r: dict, total: int) -> str:
    line = (f"epoch {r['epoch']}/{total}: train loss {r['train/loss']:.4f} top-1 "
            f"{r['train/top1']:.1f}%")
    if "test/top1" in r:
        line += f" | test loss {r['test/loss']:.4f} top-1 {r['test/top1']:.2f}%"
        if "test/perplexity" in r:
            line += f" perplexity {r['test/perplexity']:.3f}"
        if "test/top5" in r:
            line += f" top-5 {r['test/top5']:.2f}%"
    if r.get("best/top1") is not None:
        line += f" | best {r['best/top1']:.2f}% (epoch {r['best/epoch']})"
    return line + f" | {r['samples_per_s']:.0f} samples/s, lr {r['lr']:.2e}"


def train(cfg: TrainConfig, data: DataBundle | None = None, model: nn.Module | None = None) -> dict:
    """``Trainer(cfg, data, model).fit()``: train and return the summary."""
    return Trainer(cfg, data=data, model=model).fit()

