"""The trainer: one loop for every model, on 1 process or N under torchrun.

Any model that returns ``ModelOutput(logits, aux_loss, metrics)`` trains here; the loss is
``task.loss(logits, targets) + optim.aux_weight * aux_loss``. The task (``task.py``) comes from
the dataset's declared kind: classification, or a language model (``logits [B, N, V]`` for
targets ``[B, N]``, mean per-token cross-entropy, next-token top-1, ``perplexity``); it owns the
loss, the sums, the results, "better than" and the log words. Nothing assumes a spiking model:
TET is opt-in and reads per-step logits through a hook.

Per step: MixUp/CutMix (torchvision v2) -> forward under ``torch.autocast`` (bf16/fp16 on CUDA,
fp32 on CPU) -> backward (``GradScaler`` for fp16) -> optional gradient clipping -> AdamW ->
``LambdaLR`` warm-up/cosine/cool-down -> optional EMA. Metrics are summed on the device and
read at ``run.log_every`` steps and at epoch ends only, so the loop does not wait on the GPU.

Exactness: the batch order is a function of (seed, epoch) (``loaders.py``) and a checkpoint
holds all else (``trainer_state.py``): a resumed run ends with the same weights, bit for bit
on CPU, as one never stopped (``tests/test_engine_resume.py``).

A non-finite loss, input batch, gradient or weight raises ``NonFiniteLossError`` at the next
check and nothing is saved after it (``nonfinite.py``). A new run claims its own directory
after its model and data are built (``run_setup.py``). A resumed run refuses a changed config
unless the change is listed in ``run.resume_changes`` (``resume.py``).
"""
from __future__ import annotations

import contextlib
import json
import time
import warnings

import torch
from torch import nn

from ..contract import model_facts
from ..files import link_or_copy, write_text_atomic
from .checkpoint import (
    find_checkpoint,
    load_checkpoint,
    run_dir_of,
)
from .config import TrainConfig, save_config
from .distributed import all_reduce_sum, init_distributed
from .ema import build_ema
from .evaluate import check_num_classes, evaluate_model
from .example_choices import run_e_step
from .loaders import (
    DataBundle,
    build_datasets,
    build_eval_loader,
    build_train_loader,
    local_batch,
    to_device,
)
from .logging import RunLogger
from .losses import StepLogits, TETLoss
from .mixing import build_mixer
from .nonfinite import (
    NonFiniteGuard,
    NonFiniteLossError,
    clip_and_check_gradients,
    non_finite_message,
)
from .resume import check_resumable
from .rng import seed_everything
from .run_setup import (
    amp_dtype,
    check_data_fits_model,
    claim_shared_run_dir,
    data_baselines,
    param_groups,
    skipped_files,
    wrap_distributed,
)
from .run_summary import banner_lines, build_summary, read_finished_summary, recorded_throughput
from .schedule import build_scheduler
from .task import Meter, task_for
from .trainer_state import TrainerState

__all__ = ["NonFiniteLossError", "Trainer", "train"]

_OLD_SUMS = ("loss", "aux_loss", "correct", "samples")  # a checkpoint's positional sums


class Trainer(TrainerState):
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
            self.resume_changes = check_resumable(ckpt, ckpt_path, cfg)
        seed_everything(run.seed + dist.rank)  # ranks draw different augmentations

        self.data = data if data is not None else build_datasets(cfg.data)
        if model is None:
            from spikemoe.models import create_model

            model = create_model(cfg.model.name, **cfg.model.kwargs)
        check_num_classes(model, self.data.num_classes, cfg.data.name)
        if data is None:  # data built from cfg.data: its frames must be what the model takes
            check_data_fits_model(model, self.data, cfg.model.name, cfg.data.name)
        if run.memopt:  # SpikingJelly's memopt (engine/memopt.py), before a run folder and DDP
            from .memopt import apply_memopt, example_batch

            model = apply_memopt(model.to(self.device), run.memopt, example_batch(
                self.data.train, local_batch(cfg.data.batch_size, dist.world_size), self.device))
        self.facts = model_facts(model)  # what the model declares (spikemoe.contract)
        if self.facts.e_step_every:  # EM-trained: one stored choice per training example
            model.attach_examples(len(self.data.train), run.seed)
        self.baselines = data_baselines(self.data)
        self.skipped_files = skipped_files(self.data)
        # only now, with data and model built, does the run take a folder
        self.run_dir = run_dir_of(ckpt_path) if ckpt_path else claim_shared_run_dir(
            dist, run.out_dir, run.name, cfg.model.name, cfg.data.name)
        # ``last.pt`` is known whole when this process loaded it or wrote it: then a save may
        # keep it as ``last.prev.pt`` without re-reading it (else it is checked first)
        self._last_ok = ckpt_path is not None and ckpt_path == self.run_dir / "checkpoints" / \
            "last.pt"
        # ``net`` is what the step calls: the model, or its DDP wrapper
        self.model, self.net = wrap_distributed(model.to(self.device), dist, run,
                                                unused_parameters=self.facts.sparse_updates)
        self.ema = build_ema(self.model, cfg.optim.ema_decay)

        o = cfg.optim
        self.optimizer = torch.optim.AdamW(param_groups(self.model, o.weight_decay), lr=o.lr,
                                           betas=tuple(o.betas), eps=o.eps)
        self.train_loader, self.sampler, self.loader_gen = build_train_loader(
            self.data.train, cfg.data, dist, run.seed, with_index=bool(self.facts.e_step_every))
        self.test_loader = build_eval_loader(self.data.test, cfg.data, dist)
        self.local_batch = local_batch(cfg.data.batch_size, dist.world_size)
        self.steps_per_epoch = len(self.train_loader)
        self.total_epochs = cfg.schedule.epochs + cfg.schedule.cooldown_epochs
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, o.lr, self.steps_per_epoch)
        self.amp_dtype = amp_dtype(self.device, run.precision)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.mixer = build_mixer(cfg.augment, self.data.num_classes)
        self.task = task_for(self.data.kind, o.label_smoothing, self.facts.classifier_loss)
        self.tet = StepLogits(self.model, o.tet_module) if o.tet else None
        self.tet_loss = TETLoss(o.label_smoothing, o.tet_lambda, o.tet_means) if o.tet else None

        self.epoch = self.step = 0
        self.best = {"top1": None, "epoch": None}
        self.meter = Meter(self.device)  # this epoch's training sums
        self.guard = NonFiniteGuard(self.device)
        self._last_loss = torch.zeros((), device=self.device)  # what an E-step-only step reports
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
            self._restore_rng(ckpt, ckpt_path)  # last: nothing above may draw after this

    def autocast(self):
        """The forward's precision context (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ---------------------------------------------------------------- one step
    def forward_backward(self, x, y: torch.Tensor, epoch: int, index=None):
        """Mix, forward, loss, backward (no optimiser step). Returns ``(loss, output)``.
        ``x``: a tensor, or a dict of named view tensors (multi-view models)."""
        targets = y
        if self.mixer is not None:
            if isinstance(x, dict):
                raise ValueError("MixUp/CutMix mix one input tensor, but this data gives a dict "
                                 f"of views ({', '.join(x)}); set augment.mixup_alpha=0 and "
                                 "augment.cutmix_alpha=0 for multi-view data.")
            x, targets = self.mixer(x, y, epoch)
        with self.autocast():
            out = self.net(x) if index is None else self.net(x, index=index)
            if self.tet is not None:
                task = self.tet_loss(self.tet.take(out.logits).float(), targets)
            else:
                task = self.task.loss(out.logits.float(), targets)  # per token for LMs
            loss = task + self.cfg.optim.aux_weight * out.aux_loss.float()
        for view in (x.values() if isinstance(x, dict) else (x,)):
            if view.is_floating_point():  # first: a NaN input makes the loss NaN too
                self.guard.flag(~torch.isfinite(view).all(), "input", self.step + 1)
        self.guard.flag(~torch.isfinite(loss.detach()), "loss", self.step + 1)
        self.scaler.scale(loss).backward()
        return loss.detach(), out

    def train_step(self, x, y: torch.Tensor, epoch: int, index=None) -> torch.Tensor:
        """One optimiser step on a batch; returns the loss (on the device, not synchronised).
        An EM-trained model's E-step comes first every ``e_step_every`` steps (``run_e_step``)."""
        facts = self.facts
        if facts.e_step_every and self.step % facts.e_step_every == 0:
            run_e_step(self.model, x, y, index, self.cfg.model.name,
                       self.logger if self.step % self.cfg.run.log_every == 0 else None,
                       self.step + 1)
            if not facts.m_step_on_e_step:  # the reference: an E-step iteration is no M-step
                with warnings.catch_warnings():  # the schedule follows steps, M-step or not
                    warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step",
                                            UserWarning)
                    self.scheduler.step()
                self.step += 1
                return self._last_loss
        loss, out = self.forward_backward(x, y, epoch, index)
        clip_and_check_gradients(self.model, self.optimizer, self.scaler, self.guard,
                                 self.cfg.optim.clip_grad, self.step + 1)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        self.task.add_train_batch(self.meter, loss, out, y)
        self._last_loss = loss
        return loss

    def check_finite(self) -> None:
        """Raise ``NonFiniteLossError`` if any rank's loss, input batch or gradients have been
        NaN/inf since the start."""
        first = self.guard.earliest(self.dist.distributed)
        if first is not None:
            self._raise_non_finite(*first)

    def _raise_non_finite(self, step: int, code: int, detail: str = "") -> None:
        kind, message = non_finite_message(step, code, detail, self.run_dir, self.steps_per_epoch)
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
        for batch in self.train_loader:
            x, y = to_device(batch[0], self.device), batch[1].to(self.device, non_blocking=True)
            index = batch[2].to(self.device) if len(batch) > 2 else None  # EM: example indices
            loss = self.train_step(x, y, epoch, index)
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
        result = evaluate_model(self.model, self.test_loader, self.device, self.task,
                                self.autocast(), num_classes=self.data.num_classes)
        if self.ema is not None:
            result["top1_ema"] = evaluate_model(self.ema.module, self.test_loader, self.device,
                                                self.task, self.autocast(),
                                                num_classes=self.data.num_classes)["top1"]
        return result

    def fit(self) -> dict:
        """Train to the end of the schedule (or ``run.stop_after_steps``); returns the summary
        also written to ``summary.json``."""
        log, cfg = self.logger, self.cfg
        start = time.perf_counter()
        if self.step == 0:
            for line in banner_lines(self.run_dir, cfg.model.name,
                                     sum(p.numel() for p in self.model.parameters()),
                                     cfg.data.name, self.total_epochs, self.steps_per_epoch,
                                     self.dist.world_size, self.device, self.baselines):
                log.info(line)
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
                    folder = self.run_dir / "checkpoints"  # best.pt := the last.pt just written
                    link_or_copy(folder / "last.pt", folder / "best.pt")
                log.info(self.task.epoch_line(record, self.total_epochs))
            return self._summary(test, start, throughput=throughput)
        finally:
            self.close()

    def _end_epoch(self, epoch: int, train_s: float, samples_per_s: float, test: dict
                   ) -> tuple[dict, dict, bool]:
        """Close ``epoch``: its metrics record, the test metrics (new when evaluated this
        epoch, else ``test``), and whether the test result is a new best (``task.better``)."""
        record = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                  **self.task.train_record(self.meter.reduce(), self.cfg.optim.aux_weight),
                  "samples_per_s": samples_per_s, "epoch_time_s": train_s}
        self.epoch = epoch + 1
        self.meter = Meter(self.device)
        improved = False
        if self.epoch % self.cfg.run.eval_every == 0 or self.epoch == self.total_epochs:
            test = self.evaluate()
            record.update({f"test/{k}": v for k, v in test.items() if k not in ("n", "metrics")})
            record.update({f"test/{k}": v for k, v in test["metrics"].items()})
            improved = self.task.better(test, self.best)
            if self.facts.epoch_measurements:  # the model's own epoch-end measurements
                record.update({f"measure/{k}": v for k, v in self._measure_epoch().items()})
            if improved:
                self.best = self.task.best_record(test, self.epoch)
        record.update({"best/top1": self.best["top1"], "best/epoch": self.best["epoch"]})
        return record, test, improved

    def _measure_epoch(self) -> dict:
        """``model.measure_epoch`` on the first held-out batch (no augmentation, no random
        draw; ``contract.SpikeMoEModel.measure_epoch``)."""
        x, y = next(iter(self.test_loader))[:2]
        return self.model.measure_epoch(to_device(x, self.device), y.to(self.device))

    def _finished_summary(self, start: float) -> dict:
        """A resumed run that had already trained every epoch: nothing is trained; its
        ``summary.json`` is returned as it is, or (killed before writing it) rebuilt once from
        a fresh evaluation and the epoch records' throughput."""
        summary = read_finished_summary(self.run_dir)
        if summary is not None:
            self.logger.info(f"run {self.run_dir} already finished ({self.epoch}/"
                             f"{self.total_epochs} epochs); nothing to train. Its summary: "
                             f"{self.run_dir / 'summary.json'}")
            return {**summary, "already_finished": True}  # the key is not written to disk
        return self._summary(self.evaluate(), start,
                             throughput=recorded_throughput(self.run_dir))

    def _summary(self, test: dict, start: float, stopped: bool = False,
                 throughput: list | None = None) -> dict:
        summary = build_summary(
            run_dir=self.run_dir, model=self.cfg.model.name, data=self.cfg.data.name,
            epochs=self.epoch, steps=self.step, task_fields=self.task.summary_fields(test, self.best),
            stopped=stopped, baselines=self.baselines, throughput=throughput,
            skipped_files=self.skipped_files, wall_s=time.perf_counter() - start)
        if not stopped:
            self.logger.write("final", self.step, {k: v for k, v in summary.items()
                                                   if k != "run_dir"})
            self.logger.info(f"done: {self.task.done_words(summary)}; run directory {self.run_dir}")
        if self.dist.is_main:
            write_text_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
        return summary

    def close(self) -> None:
        """Release the log files and hooks (the process group is the caller's)."""
        if self.tet is not None:
            self.tet.remove()
            self.tet = None
        self.logger.close()


def train(cfg: TrainConfig, data: DataBundle | None = None, model: nn.Module | None = None) -> dict:
    """``Trainer(cfg, data, model).fit()``: train and return the summary."""
    return Trainer(cfg, data=data, model=model).fit()

