"""Typed configs: the demo file equals the built-in defaults, errors name the key, overrides
parse as YAML, every paper recipe builds its model for its dataset's classes."""
import argparse
from pathlib import Path

import pytest
import torch
import yaml

import spikemoe
from spikemoe.cli.train import add_engine_parsers
from spikemoe.data import dataset_info
from spikemoe.engine import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from spikemoe.engine.resume import resolve_train_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "demo.yaml")


def test_demo_yaml_is_the_builtin_default():
    # `spikemoe train` with no CONFIG runs TrainConfig(); the file must say the same.
    assert load_config(CONFIGS / "demo.yaml") == TrainConfig()
    assert TrainConfig().data.name == "digits-dvs" and TrainConfig().model.kwargs["embed_dim"] == 96


def test_unknown_keys_suggest_the_nearest_valid_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'optim.lrr'\. Did you mean 'optim.lr'"):
        load_config(None, ["optim.lrr=1e-3"])
    with pytest.raises(ConfigError, match="Did you mean 'schedule.warmup_epochs'"):
        load_config(None, ["warmup_epoch=3"])  # bare key, nearest across all sections
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimm:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=rf"{bad}: unknown section 'optimm'\. Did you mean 'optim'"):
        load_config(bad)
    bad.write_text("lr: 0.1\n")  # a key put at the top level
    with pytest.raises(ConfigError, match="write it under optim.lr"):
        load_config(bad)


def test_wrong_types_name_the_key_the_type_and_the_value():
    with pytest.raises(ConfigError, match=r"'schedule.epochs' expects int, got 'ten' \(str\)"):
        load_config(None, ["schedule.epochs=ten"])
    with pytest.raises(ConfigError, match=r"'data.batch_size' expects int, got 1.5"):
        load_config(None, ["data.batch_size=1.5"])
    with pytest.raises(ConfigError, match=r"'run.progress' expects bool, got 1 \(int\)"):
        load_config(None, ["run.progress=1"])  # no silent int -> bool
    with pytest.raises(ConfigError, match=r"'run.precision' must be one of"):
        load_config(None, ["run.precision=fp8"])
    with pytest.raises(ConfigError, match="warmup_epochs must be between 0 and schedule.epochs"):
        load_config(None, ["schedule.epochs=2", "schedule.warmup_epochs=5"])
    with pytest.raises(ConfigError, match="'seed' is ambiguous: write one of data.seed, run.seed"):
        load_config(None, ["seed=1"])
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(None, ["optim.lr"])


def test_overrides_parse_values_as_yaml():
    cfg = load_config(None, ["lr=1e-3", "optim.betas=[0.8, 0.9]", "optim.ema_decay=0.99",
                             "data.size=[16, 16]", "model.embed_dim=64", "resume=null",
                             "model.name=test_spikformer"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)  # YAML reads 1e-3 as str
    assert cfg.optim.betas == [0.8, 0.9] and cfg.optim.ema_decay == 0.99
    assert cfg.data.size == [16, 16] and cfg.run.resume is None
    assert cfg.model.name == "test_spikformer" and cfg.model.kwargs == {"embed_dim": 64}
    # another model drops the demo model's overrides; the same model keeps them
    assert load_config(None, ["model.name=test_spike_driven"]).model.kwargs == {}
    same = load_config(None, [f"model.name={TrainConfig().model.name}", "model.depth=2"])
    assert same.model.kwargs == {**TrainConfig().model.kwargs, "depth": 2}
    assert cfg.schedule.epochs == TrainConfig().schedule.epochs  # untouched keys keep defaults


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(None, ["lr=3e-4", "augment.off_epoch=5", "model.img_size=[32, 32]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_missing_config_file_lists_the_configs_beside_it(tmp_path):
    (tmp_path / "a.yaml").write_text("")
    with pytest.raises(FileNotFoundError, match="Configs in .*: a.yaml"):
        load_config(tmp_path / "b.yaml")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_builds_its_model_for_its_dataset(path):
    cfg = load_config(path)
    info = dataset_info(cfg.data.name)
    with torch.device("meta"):
        model = spikemoe.create_model(cfg.model.name, **cfg.model.kwargs)
    assert model.num_classes == info.num_classes
    if info.kind == "text":  # a language model: its context is the window length
        assert model.input_shape == (cfg.data.T,)
        return
    if model.input_shape is None:  # a multi-view model: its data must give several views
        assert cfg.data.views != "events" and model.T == cfg.data.T
        return
    assert model.in_channels == info.in_channels
    if not info.needs_root:  # short runs on the local datasets (digits-dvs): no paper recipe
        assert model.T == cfg.data.T
        return
    if info.kind == "events":
        assert cfg.data.T == model.T == 16  # papers.md 2.3: T = 16 for the DVS recipes
    if cfg.model.name.startswith(("vit_", "vmoe_")):  # vmoe's recipe: per-step, no smoothing
        assert cfg.schedule.update == "step" and cfg.optim.label_smoothing == 0.0
        return
    assert cfg.schedule.update == "epoch" and cfg.optim.label_smoothing == 0.1  # timm's


def test_cifar10_dvs_recipe_is_the_papers():
    # papers.md 2.3, number by number.
    cfg = load_config(CONFIGS / "cifar10dvs_spikformer_semm_2_256.yaml")
    assert (cfg.data.batch_size, cfg.optim.lr, cfg.optim.weight_decay) == (16, 1e-3, 0.06)
    assert (cfg.schedule.epochs, cfg.schedule.warmup_epochs, cfg.schedule.cooldown_epochs) == (96, 10, 10)
    assert (cfg.augment.mixup_alpha, cfg.augment.prob, cfg.augment.off_epoch) == (0.5, 0.5, 75)
    im = load_config(CONFIGS / "imagenet_spikformer_semm_8_512.yaml")
    assert (im.data.batch_size, im.optim.lr, im.optim.weight_decay) == (24 * 8, 5e-4, 0.05)
    assert (im.augment.mixup_alpha, im.augment.cutmix_alpha) == (0.8, 1.0)
    assert im.schedule.epochs + im.schedule.cooldown_epochs == 310


def test_train_and_evaluate_parsers_and_resume_config(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="spikemoe")
    add_engine_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "configs/demo.yaml", "lr=1e-3"])
    assert args.items == ["configs/demo.yaml", "lr=1e-3"] and callable(args.func)
    args = parser.parse_args(["evaluate", "runs/x", "--data", "digits-dvs", "--json"])
    assert (args.checkpoint, args.data, args.json) == ("runs/x", "digits-dvs", True)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    assert "optim.lr" in capsys.readouterr().out
    # resume=RUN_DIR with no CONFIG: the run's own config, without the stop that ended it.
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    save_config(load_config(None, ["model.embed_dim=48", "run.stop_after_steps=7"]),
                run / "config.yaml")
    cfg = resolve_train_config(None, [f"resume={run}", "schedule.epochs=30"])
    assert cfg.model.kwargs["embed_dim"] == 48 and cfg.schedule.epochs == 30
    assert cfg.run.stop_after_steps is None and cfg.run.resume == str(run)


def test_print_config_prints_the_resolved_config_and_trains_nothing(tmp_path, capsys):
    from spikemoe.cli import main

    demo = str(CONFIGS / "demo.yaml")
    assert main(["train", demo, "lr=1e-3", "data.T=8", f"run.out_dir={tmp_path}",
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = config_to_dict(load_config(demo, ["lr=1e-3", "data.T=8", f"run.out_dir={tmp_path}"]))
    assert printed == expected and printed["optim"]["lr"] == 1e-3
    assert list(tmp_path.iterdir()) == []  # no run directory: nothing was trained

