"""The trainer, one for every model: typed configs, checkpoints, torchrun, logging.

    load_config(path, overrides) -> TrainConfig        config.py
    Trainer(cfg).fit() / train(cfg) -> summary         trainer.py
    evaluate_checkpoint(path) -> metrics               evaluate.py
    save_checkpoint / load_checkpoint                  checkpoint.py

One concept per module: ``config`` (and ``config_sections``), ``trainer`` (the loop and its
state), ``task`` (loss, sums, results and "better" of classification / language modelling),
``nonfinite``, ``run_setup``, ``run_dir``, ``resume``, ``checkpoint``, ``rng``, ``distributed``,
``loaders``, ``logging``, ``schedule``, ``mixing``, ``losses``, ``ema``, ``evaluate``,
``profile_run``, ``memopt``, ``synthetic``. The command line is ``spikemoe.cli``. The trainer
and evaluation import torchvision (about a second), so they load on first use.
"""
from .checkpoint import CheckpointError, find_checkpoint, load_checkpoint, save_checkpoint
from .config import (
    AugmentConfig,
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)

_LAZY = {"Trainer": "trainer", "train": "trainer", "NonFiniteLossError": "trainer",
         "DataBundle": "loaders", "evaluate_checkpoint": "evaluate", "evaluate_model": "evaluate",
         "read_metrics": "logging"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'spikemoe.engine' has no attribute {name!r}")


__all__ = ["AugmentConfig", "CheckpointError", "ConfigError", "DataBundle", "DataConfig",
           "ModelConfig", "NonFiniteLossError", "OptimConfig", "RunConfig", "ScheduleConfig",
           "TrainConfig", "Trainer", "apply_overrides", "config_from_dict",
           "config_to_dict", "evaluate_checkpoint", "evaluate_model", "find_checkpoint",
           "load_checkpoint", "load_config", "read_metrics", "save_checkpoint", "save_config",
           "train"]
