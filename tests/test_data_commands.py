"""``spikemoe data inspect | verify | prepare`` through ``add_data_parser``, on the real recordings
and on dataset copies with known defects."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from spikemoe.cli.data import add_data_parser
from spikemoe.data import list_datasets
from spikemoe.data.events import as_events
from spikemoe.data.writers import write_aedat4

REAL = Path(__file__).resolve().parent / "fixtures" / "real"  # shipped in the repo


def run(*argv):
    parser = argparse.ArgumentParser(prog="spikemoe")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *map(str, argv)])
    return args.func(args)


def test_inspect_real_aedat4_json(capsys):
    assert run("inspect", REAL / "sample.aedat4", "--json") == 0
    s = json.loads(capsys.readouterr().out)
    assert s["events"] == 111954 and (s["width"], s["height"]) == (320, 240)
    assert s["x_range"] == [0, 319] and s["y_range"] == [0, 239]
    assert s["on"] + s["off"] == 111954 and 0.48 < s["on_fraction"] < 0.50
    assert abs(s["duration_s"] - 0.59) < 0.01


def test_inspect_real_nmnist_text(capsys):
    assert run("inspect", REAL / "sample_nmnist.bin") == 0
    out = capsys.readouterr().out
    assert "events      4325" in out and "34 x 34" in out and "311175 us" in out


def test_inspect_errors_reach_the_cli_as_user_errors(tmp_path):
    (tmp_path / "x.aedat4").write_bytes(b"#!AER-DAT4.0\r\n garbage")
    with pytest.raises(ValueError, match="x.aedat4"):  # CorruptEventFileError is a ValueError
        run("inspect", tmp_path / "x.aedat4")
    with pytest.raises(ValueError, match="unknown event file extension"):
        run("inspect", tmp_path / "x.txt")


def _copy(root, per_class, truncate=None):
    rng = np.random.default_rng(0)
    for c, n in per_class.items():
        (root / "CIFAR10DVS" / c).mkdir(parents=True)
        for i in range(n):
            xy = rng.integers(0, 128, (2, 20))
            ev = as_events(np.arange(20), xy[0], xy[1], np.ones(20))
            path = write_aedat4(root / "CIFAR10DVS" / c / f"cifar10_{c}_{i}.aedat4", ev)
            if (c, i) == truncate:
                path.write_bytes(path.read_bytes()[:200])


def test_verify_says_exactly_what_is_missing_or_wrong(tmp_path, capsys):
    _copy(tmp_path, {"cat": 3, "kitten": 1}, truncate=("cat", 1))
    assert run("verify", "cifar10-dvs", "--root", tmp_path, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    problems = "\n".join(report["problems"])
    assert "unknown class folder 'kitten'" in problems and "airplane, automobile" in problems
    assert "class cat has 3 .aedat4 files, expected 1000 (997 missing)" in problems
    assert "class airplane has 0" in problems and "corrupt" not in problems  # not deep
    assert run("verify", "cifar10-dvs", "--root", tmp_path, "--deep") == 1
    assert "cifar10_cat_1.aedat4: the AEDAT 4.0 decoder failed" in capsys.readouterr().out


def test_verify_deep_lists_the_corrupt_file(tmp_path, capsys):
    _copy(tmp_path, {"cat": 2}, truncate=("cat", 1))
    run("verify", "cifar10-dvs", "--root", tmp_path, "--deep", "--json")
    problems = json.loads(capsys.readouterr().out)["problems"]
    bad = tmp_path / "CIFAR10DVS" / "cat" / "cifar10_cat_1.aedat4"
    expected = f"corrupt: {bad}: the AEDAT 4.0 decoder failed: failed to fill whole buffer"
    assert [p for p in problems if p.startswith("corrupt")] == [expected]


def test_verify_deep_lists_files_of_another_sensor_size(tmp_path, capsys):
    # Two 320 x 240 recordings in a 128 x 128 dataset: they decode, so only --deep's sensor
    # check finds them before prepare / training rejects every one of them.
    _copy(tmp_path, {"cat": 3})
    big = [tmp_path / "CIFAR10DVS" / "cat" / f"cifar10_cat_{i}.aedat4" for i in (0, 2)]
    for path in big:
        ev = as_events(np.arange(3), [0, 319, 200], [0, 239, 100], [1, 0, 1])
        write_aedat4(path, ev, width=320, height=240)
    assert run("verify", "cifar10-dvs", "--root", tmp_path, "--deep", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    wrong = [p for p in report["problems"] if p.startswith("wrong sensor")]
    assert wrong == [f"wrong sensor: {p} is a 320 x 240 recording (W x H; x up to 319, y up to "
                     "239), cifar10-dvs is 128 x 128: not a file of this dataset's release; "
                     "replace it with the original" for p in big]
    assert "2 of another sensor size than 128 x 128" in report["notes"][-1]
    assert not any("cifar10_cat_1" in p for p in report["problems"])  # the 128 x 128 one is fine


def test_verify_missing_root_and_embedded_dataset(tmp_path, capsys):
    assert run("verify", "n-mnist", "--root", tmp_path / "none") == 1
    assert f"root {tmp_path / 'none'} does not exist" in capsys.readouterr().out
    (tmp_path / "NMNIST" / "Train").mkdir(parents=True)
    assert run("verify", "n-mnist", "--root", tmp_path) == 1
    out = capsys.readouterr().out
    assert "missing the test folder" in out
    assert "train: class 0 has 0 .bin files, expected 5923" in out
    assert run("verify", "digits-dvs") == 0
    assert "1797 digits" in capsys.readouterr().out
    assert set(list_datasets()) >= {"digits-dvs", "cifar10-dvs", "dvs128-gesture", "n-mnist",
                                    "cifar10", "cifar100", "imagenet"}


def test_prepare_stops_on_problems_and_builds_both_splits_when_allowed(tmp_path, capsys):
    _copy(tmp_path, {"cat": 10})
    assert run("prepare", "cifar10-dvs", "--root", tmp_path, "--T", 4,
               "--cache-dir", tmp_path / "c") == 1
    assert "stopped: fix the problems above" in capsys.readouterr().out
    assert run("prepare", "cifar10-dvs", "--root", tmp_path, "--T", 4, "--size", 16,
               "--cache-dir", tmp_path / "c", "--allow-incomplete") == 0
    out = capsys.readouterr().out
    assert "train: 9 samples" in out and "test: 1 samples" in out
    folder = next((tmp_path / "c" / "cifar10-dvs").iterdir())
    assert len(list(folder.glob("*.npy"))) == 10 and (folder / "params.json").is_file()
