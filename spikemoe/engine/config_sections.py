"""The config's sections as dataclasses: every key, its type, its default and (in field
metadata) its choices. Loading, overrides and checks are in ``config.py``.

The dataclass defaults ARE the demo (``configs/demo.yaml`` states the same values; a test keeps
them equal), so ``spikemoe train`` with no CONFIG needs no file on disk.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SECTIONS", "AugmentConfig", "ConfigError", "DataConfig", "ModelConfig",
           "OptimConfig", "RunConfig", "ScheduleConfig", "TrainConfig"]


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message says which and what to do."""


@dataclass
class ModelConfig:
    """``name``: a registered model (``spikemoe models``); ``kwargs``: its overrides
    (flat in YAML: ``model: {name: x, embed_dim: 64}``)."""

    name: str = "spikformer_semm_2_256_dvs"
    kwargs: dict = field(default_factory=lambda: {
        "embed_dim": 96, "depth": 1, "img_size": [32, 32], "T": 4})


@dataclass
class DataConfig:
    """Arguments of ``spikemoe.data.create_dataset`` plus loading.

    ``batch_size`` is the GLOBAL batch: each of N processes loads ``batch_size / N``, so the
    same config trains the same model on 1 or N processes. ``augment``: null = the dataset
    recipe's train augmentation on the train split only; false = none; true = also on test.
    ``T``: frames per sample (event datasets), bytes per window (text). ``train_samples`` /
    ``test_samples``: use only that many samples of the split, evenly spaced through it
    (null = all; for corpora far larger than a short run, e.g. stdlib-bytes). ``views``: what
    a sample holds (digits-dvs ``events+image``: ``{"events", "image"}`` for the multi-view
    fusion models).
    """

    name: str = "digits-dvs"
    root: str | None = None
    T: int = 4
    size: int | list[int] | None = None
    integration: str = field(default="count", metadata={"choices": ("count", "time")})
    augment: bool | None = None
    cache_dir: str | None = None
    seed: int = 0
    batch_size: int = 32
    eval_batch_size: int | None = None
    num_workers: int = 0
    skip_corrupt: bool = False
    download: bool = False
    train_samples: int | None = None
    test_samples: int | None = None
    views: str = field(default="events", metadata={"choices": ("events", "events+image")})


@dataclass
class OptimConfig:
    """AdamW, loss and weight averaging.

    ``weight_decay`` skips biases and norm weights (1-D tensors), as timm's optimizer factory
    that the papers used. ``clip_grad``: max global grad norm (null = off). ``aux_weight``
    scales the model's ``aux_loss``. ``tet``: Temporal Efficient Training loss on the
    per-time-step logits of module ``tet_module`` (``[T, B, K]``). ``ema_decay``: EMA of the
    weights (null = off).
    """

    lr: float = 2.0e-3
    weight_decay: float = 0.06
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1.0e-8
    clip_grad: float | None = None
    label_smoothing: float = 0.1
    aux_weight: float = 1.0
    tet: bool = False
    tet_lambda: float = 0.0
    tet_means: float = 1.0
    tet_module: str = "head"
    ema_decay: float | None = None


@dataclass
class ScheduleConfig:
    """Linear warm-up from ``warmup_lr``, cosine to ``min_lr`` at ``epochs``, then
    ``cooldown_epochs`` at ``min_lr``: trains ``epochs + cooldown_epochs`` epochs (timm's
    convention: CIFAR10-DVS is 96 + 10). ``update``: 'epoch' (lr fixed within an epoch, as
    the papers' timm runs) or 'step' (smooth; for short runs)."""

    epochs: int = 20
    warmup_epochs: int = 1
    cooldown_epochs: int = 0
    warmup_lr: float = 1.0e-5
    min_lr: float = 1.0e-5
    update: str = field(default="step", metadata={"choices": ("epoch", "step")})


@dataclass
class AugmentConfig:
    """Batch mixing with torchvision v2 ``MixUp`` / ``CutMix``. ``prob``: chance a batch is
    mixed; ``switch_prob``: chance of CutMix when both alphas are set; ``off_epoch``: no
    mixing from this (0-based) epoch on. Per-sample augmentation is the dataset's
    (``data.augment``)."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5
    off_epoch: int | None = None


@dataclass
class RunConfig:
    """Where and how: run directory ``out_dir/name`` (name null = model-dataset-time),
    ``resume`` (a run directory or checkpoint file), device, precision ('auto' = bf16 on a
    CUDA GPU that has it, fp16 on older GPUs, fp32 on CPU), checkpoint and log cadence.
    ``stop_after_steps`` ends the run early (saving ``last``) without changing the schedule.
    ``profile_samples``: after training, ``spikemoe train`` profiles the best checkpoint on
    this many test samples into ``<run>/profile/`` (firing rates, energy; 0 = skip).
    ``resume_changes``: with ``resume=``, the keys whose new value the resumed run may take
    (``resume_changes=[optim.lr]``); any other key that differs from the checkpoint's config
    is refused (``resume.check_resume_config``).
    ``memopt``: SpikingJelly 2.0's memory optimiser on a spiking model, level 0-4 (null or 0 =
    off; 1 = checkpoint the stem and every block, CPU or GPU; 2-4 search on a CUDA GPU only),
    applied before DDP; see ``engine/memopt.py``."""

    out_dir: str = "runs"
    name: str | None = None
    resume: str | None = None
    seed: int = 0
    device: str = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda")})
    precision: str = field(default="auto",
                           metadata={"choices": ("auto", "fp32", "bf16", "fp16")})
    eval_every: int = 1
    save_every_steps: int | None = None
    stop_after_steps: int | None = None
    log_every: int = 20
    progress: bool = True
    tensorboard: bool = True
    sync_bn: bool = False
    find_unused_parameters: bool = False
    profile_samples: int = 64
    resume_changes: list[str] = field(default_factory=list)
    memopt: int | None = None


@dataclass
class TrainConfig:
    """The whole config; its defaults are the demo run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run: RunConfig = field(default_factory=RunConfig)


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig,
            "schedule": ScheduleConfig, "augment": AugmentConfig, "run": RunConfig}
