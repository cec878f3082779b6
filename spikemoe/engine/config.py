"""Typed training configs: YAML onto dataclasses, ``key=value`` overrides, checked types.

A config has six sections (``model``, ``data``, ``optim``, ``schedule``, ``augment``, ``run``)::

    model:    {name: spikformer_semm_2_256_dvs, embed_dim: 64}   # name + create_model overrides
    data:     {name: digits-dvs, T: 4, batch_size: 32}
    optim:    {lr: 1.0e-3, weight_decay: 0.06, label_smoothing: 0.1}
    schedule: {epochs: 96, warmup_epochs: 10, cooldown_epochs: 10}
    augment:  {mixup_alpha: 0.5, prob: 0.5, off_epoch: 75}
    run:      {out_dir: runs, seed: 0}

The sections, their keys and defaults (the demo) are dataclasses in ``config_sections.py``.

Errors name the key: an unknown key suggests the nearest valid one, a wrong type names the
expected type and the value found. ``model`` keys other than ``name`` go to
``create_model(name, **kwargs)`` and are checked there, by the model's own factory.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path

import yaml

from .config_sections import (
    SECTIONS,
    AugmentConfig,
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
)

__all__ = ["SECTIONS", "type_name", "AugmentConfig", "ConfigError", "DataConfig", "ModelConfig", "OptimConfig",
           "RunConfig", "ScheduleConfig", "TrainConfig", "apply_overrides", "config_from_dict",
           "config_to_dict", "load_config", "save_config"]


def _fields(section: str) -> dict[str, tuple[object, dict]]:
    cls = SECTIONS[section]
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], dict(f.metadata)) for f in dataclasses.fields(cls)}


def type_name(tp) -> str:
    """A type annotation in words: ``int or null``, ``list[float]``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_name(a) for a in typing.get_args(tp))}]"
    return tp.__name__


def _coerce(value, tp):
    """``value`` as type ``tp``, or raise TypeError. YAML reads ``1e-3`` as a string: numeric
    strings are accepted where a float is expected; bools are never numbers."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option)
            except TypeError:
                pass
        raise TypeError
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise TypeError from None
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if tp is dict or typing.get_origin(tp) is dict:
        if isinstance(value, dict):
            return dict(value)
        raise TypeError
    if typing.get_origin(tp) is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(tp)
            return [_coerce(v, item) for v in value]
        raise TypeError
    raise TypeError


def _suggest(key: str, valid, prefix: str = "") -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f" Did you mean '{prefix}{close[0]}'?" if close else ""


def _suggest_leaf(key: str) -> str:
    """Nearest ``section.key`` for a bare (or misplaced) key name."""
    leaves = {k.split(".")[1]: k for k in reversed(_all_keys())}
    close = difflib.get_close_matches(key, list(leaves), n=1, cutoff=0.6)
    return f" Did you mean '{leaves[close[0]]}'?" if close else ""


def _all_keys() -> list[str]:
    return [f"{s}.{k}" for s in SECTIONS for k in _fields(s)]


def _set(cfg: TrainConfig, section: str, key: str, value, where: str) -> None:
    """Check and set ``section.key = value``; ``where`` names the source for messages."""
    if section == "model" and key != "name":
        if key == "kwargs":
            raise ConfigError(f"{where}: write model overrides flat (model.embed_dim=64), "
                              "not under model.kwargs")
        cfg.model.kwargs[key] = value  # checked by the model factory in create_model
        return
    fields_ = _fields(section)
    if key not in fields_:
        raise ConfigError(
            f"{where}: unknown key '{section}.{key}'.{_suggest(key, fields_, section + '.')} "
            f"Valid keys of '{section}': {', '.join(fields_)}.")
    tp, meta = fields_[key]
    try:
        value = _coerce(value, tp)
    except TypeError:
        raise ConfigError(f"{where}: '{section}.{key}' expects {type_name(tp)}, got "
                          f"{value!r} ({type(value).__name__}).") from None
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{where}: '{section}.{key}' must be one of {meta['choices']}, got "
                          f"{value!r}.")
    setattr(getattr(cfg, section), key, value)


def config_from_dict(data: dict, where: str = "config", base: TrainConfig | None = None
                     ) -> TrainConfig:
    """Build a ``TrainConfig`` from nested plain data (a YAML document), onto ``base``."""
    cfg = base if base is not None else TrainConfig()
    if data is None:
        return cfg
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of sections ({', '.join(SECTIONS)}), "
                          f"got {type(data).__name__}.")
    for section, values in data.items():
        if section not in SECTIONS:
            hint = _suggest(str(section), SECTIONS) or _suggest_leaf(str(section))
            owners = [k for k in _all_keys() if k.split(".")[1] == section]
            if owners:
                hint = f" '{section}' is a key of a section: write it under {owners[0]}."
            raise ConfigError(f"{where}: unknown section '{section}'.{hint} "
                              f"Sections: {', '.join(SECTIONS)}.")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: section '{section}' must be a mapping of keys, got "
                              f"{values!r}.")
        if section == "model":
            cfg.model.kwargs = {}  # a config file's model section replaces the default one
        for key, value in values.items():
            _set(cfg, section, str(key), value, where)
    validate(cfg, where)
    return cfg


def _resolve_key(key: str, where: str) -> tuple[str, str]:
    """``optim.lr`` -> (optim, lr); a bare key unique across sections (``lr``, ``resume``)
    resolves to its section."""
    if "." in key:
        section, _, name = key.partition(".")
        if section not in SECTIONS:
            raise ConfigError(f"{where}: unknown section '{section}' in '{key}'."
                              f"{_suggest(section, SECTIONS)} Sections: {', '.join(SECTIONS)}.")
        return section, name
    owners = [s for s in SECTIONS if key in _fields(s)]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise ConfigError(f"{where}: '{key}' is ambiguous: write one of "
                          f"{', '.join(f'{s}.{key}' for s in owners)}.")
    raise ConfigError(f"{where}: unknown key '{key}'.{_suggest_leaf(key)} "
                      "Keys are section.key, e.g. optim.lr=5e-4 or model.embed_dim=64.")


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``key=value`` strings; values are parsed as YAML (``[32, 32]``, ``null``, ``1e-3``).

    ``model.name=OTHER`` drops the model overrides of the config it replaces (they belong to
    the old model); ``model.*`` overrides on the same command line still apply.
    """
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value; e.g. optim.lr=5e-4 or "
                              "resume=runs/demo")
        key, _, text = item.partition("=")
        where = f"override {item!r}"
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        parsed.append((*_resolve_key(key.strip(), where), value, where))
    if any(s == "model" and k == "name" and v != cfg.model.name for s, k, v, _ in parsed):
        cfg.model.kwargs = {}
    for section, name, value, where in parsed:
        _set(cfg, section, name, value, where)
    validate(cfg, "overrides")
    return cfg


def validate(cfg: TrainConfig, where: str) -> None:
    """Range checks a type cannot express."""
    checks = [
        (cfg.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (cfg.data.T >= 1, "data.T must be >= 1"),
        (cfg.data.num_workers >= 0, "data.num_workers must be >= 0"),
        (all(n is None or n >= 1 for n in (cfg.data.train_samples, cfg.data.test_samples)),
         "data.train_samples and data.test_samples must be >= 1, or null for the whole split"),
        (cfg.schedule.epochs >= 1, "schedule.epochs must be >= 1"),
        (0 <= cfg.schedule.warmup_epochs <= cfg.schedule.epochs,
         "schedule.warmup_epochs must be between 0 and schedule.epochs"),
        (cfg.schedule.cooldown_epochs >= 0, "schedule.cooldown_epochs must be >= 0"),
        (cfg.optim.lr > 0, "optim.lr must be > 0"),
        (0 <= cfg.optim.label_smoothing < 1, "optim.label_smoothing must be in [0, 1)"),
        (len(cfg.optim.betas) == 2, "optim.betas must hold two numbers, e.g. [0.9, 0.999]"),
        (cfg.optim.ema_decay is None or 0 < cfg.optim.ema_decay < 1,
         "optim.ema_decay must be in (0, 1), or null for no EMA"),
        (0 <= cfg.augment.prob <= 1 and 0 <= cfg.augment.switch_prob <= 1,
         "augment.prob and augment.switch_prob must be in [0, 1]"),
        (cfg.augment.mixup_alpha >= 0 and cfg.augment.cutmix_alpha >= 0,
         "augment.mixup_alpha and augment.cutmix_alpha must be >= 0 (0 = off)"),
        (cfg.run.log_every >= 1 and cfg.run.eval_every >= 1,
         "run.log_every and run.eval_every must be >= 1"),
        (cfg.run.save_every_steps is None or cfg.run.save_every_steps >= 1,
         "run.save_every_steps must be >= 1, or null"),
    ]
    o, s, d, r = cfg.optim, cfg.schedule, cfg.data, cfg.run
    checks += [
        (o.clip_grad is None or o.clip_grad > 0,
         f"optim.clip_grad must be > 0 (the largest global gradient norm), or null for no "
         f"clipping; got {o.clip_grad} (a negative norm would flip the gradient)"),
        (o.weight_decay >= 0, f"optim.weight_decay must be >= 0 (0 = none); got {o.weight_decay}"),
        (all(0 <= b < 1 for b in o.betas),
         f"optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.999]; got {o.betas}"),
        (o.eps > 0, f"optim.eps must be > 0; got {o.eps}"),
        (o.aux_weight >= 0, f"optim.aux_weight must be >= 0 (0 = ignore the router loss); got "
                            f"{o.aux_weight}"),
        (0 <= o.tet_lambda <= 1, f"optim.tet_lambda must be in [0, 1]; got {o.tet_lambda}"),
        (0 <= s.min_lr <= o.lr, f"schedule.min_lr must be in [0, optim.lr={o.lr}]; got "
                                f"{s.min_lr}"),
        (0 <= s.warmup_lr <= o.lr, f"schedule.warmup_lr must be in [0, optim.lr={o.lr}]; got "
                                   f"{s.warmup_lr}"),
        (d.eval_batch_size is None or d.eval_batch_size >= 1,
         f"data.eval_batch_size must be >= 1, or null (= data.batch_size); got "
         f"{d.eval_batch_size}"),
        (d.size is None or all(n >= 1 for n in ([d.size] if isinstance(d.size, int) else d.size)),
         f"data.size must be a positive int or [H, W], or null; got {d.size}"),
        (not isinstance(d.size, list) or len(d.size) == 2,
         f"data.size as a list must be [H, W]; got {d.size}"),
        (r.stop_after_steps is None or r.stop_after_steps >= 1,
         f"run.stop_after_steps must be >= 1, or null; got {r.stop_after_steps}"),
        (r.profile_samples >= 0, f"run.profile_samples must be >= 0 (0 = no profile); got "
                                 f"{r.profile_samples}"),
        (r.memopt in (None, 0, 1, 2, 3, 4), f"run.memopt must be 0-4 or null (off); got {r.memopt}"),
        (r.name is None or (r.name.strip() not in ("", ".", "..") and "/" not in r.name),
         f"run.name must be a folder name (no '/', not '.' or '..'); got {r.name!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{where}: {message}.")


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config (None: the built-in demo), then apply ``key=value`` overrides.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message lists configs beside it).
        ConfigError: unknown key, wrong type or out-of-range value (the message names it).
    """
    cfg = TrainConfig()
    if path is not None:
        path = Path(path)
        if path.is_dir():
            near = sorted(p.name for p in path.glob("*.yaml"))
            listing = f" Configs in it: {', '.join(near)}." if near else ""
            raise ConfigError(f"config {str(path)!r} is a folder, not a YAML file; pass a file "
                              f"such as {path / 'demo.yaml'}.{listing}")
        if not path.is_file():
            near = sorted(p.name for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
            listing = f" Configs in {path.parent}: {', '.join(near)}." if near else ""
            raise FileNotFoundError(f"config file {str(path)!r} does not exist.{listing}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        cfg = config_from_dict(data, where=str(path))
    return apply_overrides(cfg, list(overrides))


def config_to_dict(cfg: TrainConfig) -> dict:
    """Nested plain data (str, int, float, bool, None, list, dict): YAML- and checkpoint-safe."""
    out = {}
    for section in SECTIONS:
        values = dataclasses.asdict(getattr(cfg, section))
        if section == "model":
            values = {"name": values["name"], **values["kwargs"]}
        out[section] = _plain(values)
    return out


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (``load_config`` reads it back to an equal config)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
