"""Resuming with a changed config: refused, unless each change is asked for and then applied.

A checkpoint stores the config it was trained with. ``resume=RUN`` with a config (or
``key=value`` overrides) that differs from it would otherwise write the new values into
``config.yaml`` while the restored optimiser and scheduler keep the old ones. So:

* keys that cannot change what is trained (where logs go, how often, progress bars, data
  location, worker count: ``SAFE_KEYS``) may differ freely;
* any other differing key is refused, each named with its old and new value, unless the user
  lists it in ``run.resume_changes`` (``resume_changes=[optim.lr,optim.weight_decay]``);
* a listed key is applied for real: ``optim.lr`` and ``schedule.*`` re-base the restored
  ``LambdaLR`` and set the current learning rate from the new schedule at the current step;
  ``optim.weight_decay`` / ``betas`` / ``eps`` are written into the restored optimiser's
  parameter groups; the others (loss, data, augmentation) are read from the config when the
  run is rebuilt; ``run.seed`` changes the batch order from the next epoch on (the random
  streams themselves resume from the checkpoint). The trainer records the changes in ``metrics.jsonl`` and ``train.log``.
* model keys, ``data.batch_size`` and ``data.name`` can never change on resume (the weights
  and the step count would not match): listing them is refused too.
"""
from __future__ import annotations

from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, find_checkpoint, run_dir_of
from .config import ConfigError, TrainConfig, apply_overrides, config_to_dict, load_config

__all__ = ["FIXED_PREFIXES", "SAFE_KEYS", "apply_resume_changes", "config_changes",
           "check_resumable", "check_resume_config", "resolve_train_config"]

# Cannot change the trained weights, the optimiser state or the data order.
SAFE_KEYS = frozenset({
    "run.out_dir", "run.name", "run.resume", "run.resume_changes", "run.progress",
    "run.tensorboard", "run.log_every", "run.save_every_steps", "run.stop_after_steps",
    "run.profile_samples", "run.eval_every", "run.device", "data.root", "data.cache_dir",
    "data.download", "data.num_workers", "data.eval_batch_size",
})
# Can never change on resume.
FIXED_PREFIXES = ("model.",)
FIXED_KEYS = frozenset({"data.name", "data.batch_size"})


def _flat(config: dict) -> dict:
    return {f"{section}.{key}": value for section, values in config.items()
            for key, value in values.items()}


def config_changes(stored: dict, asked: TrainConfig) -> dict[str, tuple]:
    """``{key: (old, new)}`` for every key whose value differs between the checkpoint's
    config ``stored`` (plain data) and ``asked``, safe keys excluded."""
    old, new = _flat(stored), _flat(config_to_dict(asked))
    keys = sorted(set(old) | set(new))
    return {k: (old.get(k), new.get(k)) for k in keys
            if k not in SAFE_KEYS and old.get(k) != new.get(k)}


def check_resume_config(stored: dict, asked: TrainConfig, where: str) -> dict[str, tuple]:
    """The changes the resumed run will apply; raises ``ConfigError`` for any other.

    Args:
        stored: the checkpoint's ``config`` (plain data).
        asked: the config of the resumed run.
        where: the checkpoint path, for messages.
    """
    changes = config_changes(stored, asked)
    allowed = set(asked.run.resume_changes)
    fixed = [k for k in changes if k.startswith(FIXED_PREFIXES) or k in FIXED_KEYS]
    unknown = sorted(k for k in allowed if k not in _flat(config_to_dict(asked))
                     and not k.startswith("model."))
    if unknown:
        raise ConfigError(f"run.resume_changes names {unknown}, which are not config keys; "
                          "write section.key, e.g. resume_changes=[optim.lr].")
    if fixed:
        listing = "; ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in fixed)
        raise ConfigError(
            f"{where} cannot be resumed with a different {', '.join(fixed)} ({listing}): the "
            "weights or the step count would not match. Resume with the run's own values, or "
            "start a fresh run (a new run.name) with the new ones.")
    refused = [k for k in changes if k not in allowed]
    if refused:
        listing = "; ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in refused)
        raise ConfigError(
            f"resuming {where} with a changed config: {listing}. A resumed run keeps its "
            "checkpoint's config unless you ask: drop these overrides, or list the keys to "
            f"change in resume_changes=[{','.join(refused)}] (they are then applied to the "
            "optimiser and scheduler state and recorded in the run directory).")
    return changes


def apply_resume_changes(changes: dict[str, tuple], cfg: TrainConfig, optimizer, scheduler
                         ) -> None:
    """Put listed changes into the restored optimiser and scheduler state (in place)."""
    o = cfg.optim
    if "optim.weight_decay" in changes:
        optimizer.param_groups[0]["weight_decay"] = o.weight_decay  # group 1: biases, norms
    for group in optimizer.param_groups:
        if "optim.betas" in changes:
            group["betas"] = tuple(o.betas)
        if "optim.eps" in changes:
            group["eps"] = o.eps
    if "optim.lr" in changes or any(k.startswith("schedule.") for k in changes):
        # LambdaLR: lr = base_lr * factor(step); the factor comes from the new config already
        scheduler.base_lrs = [o.lr for _ in optimizer.param_groups]
        for group, lam in zip(optimizer.param_groups, scheduler.lr_lambdas):
            group["initial_lr"] = o.lr
            group["lr"] = o.lr * lam(scheduler.last_epoch)
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def resolve_train_config(config: str | None, overrides: list[str]):
    """The config ``spikemoe train`` runs: CONFIG (or the demo) plus overrides; with
    ``resume=RUN_DIR`` and no CONFIG, the run's own ``config.yaml`` plus overrides."""
    cfg = load_config(config, overrides)
    if cfg.run.resume and config is None:
        run_dir = run_dir_of(find_checkpoint(cfg.run.resume))
        stored = run_dir / "config.yaml"
        if stored.is_file():
            cfg = load_config(stored)
            cfg.run.stop_after_steps = None  # the stop that ended the run is not re-applied
            cfg = apply_overrides(cfg, overrides)
    return cfg


def check_resumable(ckpt: dict, path, cfg: TrainConfig) -> dict:
    """Refuse a checkpoint this trainer cannot continue with ``cfg`` (another checkpoint
    format, another model); return the config changes the user listed (``check_resume_config``)."""
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {ckpt.get('format')}, this "
                              f"spikemoe writes format {CHECKPOINT_FORMAT}; it cannot resume it.")
    stored, asked = ckpt["config"]["model"], config_to_dict(cfg)["model"]
    if stored != asked:
        raise CheckpointError(
            f"{path} was trained with model {stored}, but this config builds {asked}. "
            f"Resume with the run's own config (`spikemoe train resume={run_dir_of(path)}` "
            "with no CONFIG), or start a fresh run without resume=.")
    return check_resume_config(ckpt["config"], cfg, str(path))
