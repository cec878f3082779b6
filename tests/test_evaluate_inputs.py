"""Inputs the commands must not take silently: data whose size or T differs from the model's
recipe (``evaluate`` / ``profile CHECKPOINT --data``), and ``train --help`` listing every key."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from spikemoe.cli import main
from spikemoe.contract import SpikeMoEModel
from spikemoe.engine.config import SECTIONS, DataConfig
from spikemoe.engine.evaluate import InputShapeError, check_input_shape, data_sample_shape


class _Recipe(SpikeMoEModel):
    input_shape = (4, 2, 32, 32)  # [T, C, H, W]


def test_shapes_compared_with_the_models_recipe_by_hand():
    m = _Recipe()
    assert check_input_shape(m, (4, 2, 32, 32), "x") is None
    assert check_input_shape(m, (2, 32, 32), "x") is None  # a static image: repeated T times
    with pytest.raises(InputShapeError) as e:
        check_input_shape(m, (16, 2, 128, 128), "cifar10-dvs test", source="demo")
    msg = str(e.value)
    for part in ("[4, 2, 32, 32]", "[16, 2, 128, 128]", "T = 16 time steps instead of 4",
                 "size 128x128 instead of 32x32", "--allow-shape-mismatch", "cifar10-dvs test"):
        assert part in msg, part
    record = check_input_shape(m, (4, 2, 16, 16), "x", allow=True)
    assert record == {"model": [4, 2, 32, 32], "data": [4, 2, 16, 16],
                      "differences": ["size 16x16 instead of 32x32"]}
    assert check_input_shape(nn.Linear(1, 1), (9, 9), "x") is None  # no input_shape: no check


def test_sample_shape_predicted_from_the_dataset_facts():
    assert data_sample_shape(DataConfig(name="digits-dvs", T=4)) == (4, 2, 32, 32)  # native
    assert data_sample_shape(DataConfig(name="cifar10-dvs", T=16)) == (16, 2, 128, 128)
    assert data_sample_shape(DataConfig(name="n-mnist", T=8, size=[16, 16])) == (8, 2, 16, 16)
    assert data_sample_shape(DataConfig(name="cifar10", size=32)) == (3, 32, 32)
    assert data_sample_shape(DataConfig(name="stdlib-bytes", T=128)) == (128,)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny trained run: test_spikformer_semm at [2, 2, 32, 32] on 64 digits (native size,
    data.size null, as the demo), 1 epoch."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "model.name=test_spikformer_semm", "model.T=2", "data.T=2",
                 "model.img_size=[32,32]", "data.train_samples=64", "data.test_samples=16",
                 "schedule.epochs=1", "schedule.warmup_epochs=0", "data.batch_size=16",
                 "run.profile_samples=0", "run.progress=false", "run.tensorboard=false",
                 f"run.out_dir={out}", "run.name=tiny"]) == 0
    return next(p for p in out.iterdir() if p.is_dir())


def _fake_cifar10dvs(root: Path) -> Path:
    """Two 128x128 recordings per class in CIFAR10-DVS's on-disk layout (.aedat4)."""
    from spikemoe.data.events import as_events
    from spikemoe.data.writers import write_aedat4

    rng = np.random.default_rng(0)
    for c in ("airplane", "cat"):
        (root / "CIFAR10DVS" / c).mkdir(parents=True)
        for i in range(2):
            n = 60
            ev = as_events(np.sort(rng.integers(0, 10_000, n)), rng.integers(0, 128, n),
                           rng.integers(0, 128, n), rng.integers(0, 2, n))
            write_aedat4(root / "CIFAR10DVS" / c / f"cifar10_{c}_{i}.aedat4", ev)
    return root


def test_evaluate_refuses_frames_of_another_size_unless_asked(run, tmp_path, capsys, monkeypatch):
    root = _fake_cifar10dvs(tmp_path / "c10")
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPIKEMOE_CACHE", str(cache))  # the run's data.cache_dir is null
    # 4 recordings, all in the 9:1 split's train part: --split train
    args = ["evaluate", str(run), "--data", "cifar10-dvs", "--root", str(root), "--split", "train"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "[2, 2, 32, 32]" in err and "[2, 2, 128, 128]" in err
    assert "size 128x128 instead of 32x32" in err and "--allow-shape-mismatch" in err
    assert not cache.exists()  # refused before any frame was built

    assert main([*args, "--allow-shape-mismatch", "--json"]) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out.strip().splitlines()[-1])
    assert r["input_shape_mismatch"]["data"] == [2, 2, 128, 128] and r["n"] == 4
    assert "not the model's accuracy" in captured.err

    # profile CHECKPOINT --data: the same refusal, the same way out
    out = tmp_path / "prof"
    prof = ["profile", str(run), "--data", "cifar10-dvs", "--root", str(root), "--split", "train",
            "--out", str(out), "--samples", "2"]
    assert main(prof) == 2
    assert "--allow-shape-mismatch" in capsys.readouterr().err and not out.exists()
    assert main([*prof, "--allow-shape-mismatch", "--json"]) == 0
    p = json.loads((out / "profile.json").read_text())
    assert p["warnings"][0]["code"] == "input_shape_mismatch"


def test_evaluate_on_the_runs_own_data_is_not_refused(run, capsys):
    assert main(["evaluate", str(run), "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["n"] == 16 and "input_shape_mismatch" not in r


def test_train_help_lists_every_config_key(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    keys = text[text.index("keys (section.key=value"):text.index("examples:")]
    words = set(keys.replace(",", " ").replace(".", " ").split())
    for section, cls in SECTIONS.items():
        assert section in words
        for f in dataclasses.fields(cls):
            if section != "model":  # model: name + free-form create_model overrides
                assert f.name in words, f"{section}.{f.name} is missing from `train --help`"
    assert "profile_samples" in words
    # each key with its type and default (the demo's value)
    assert re.search(r"optim\.lr +float = 0\.002\n", keys)
    assert re.search(r"data\.size +int or list\[int\] or null = null\n", keys)
    assert re.search(r"data\.integration +str = count +\(count\|time\)\n", keys)


def test_version_flag_prints_the_installed_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"spikemoe {version('spikemoe')}"
