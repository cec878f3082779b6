"""Damaged run files and bad output locations: named, before any work, with what to do.

- ``metrics.jsonl``: a torn LAST line (a killed run) is dropped with a note; a damaged line
  elsewhere is an error naming the file and the line.
- ``spikemoe report`` on a killed run (no summary.json) says so and reads metrics.jsonl.
- ``spikemoe profile --out`` that is a file, under a file, or not writable fails before the
  profile is computed; so do ``report --out/--csv`` into a folder.
"""
from __future__ import annotations

import json
import os

import pytest
import yaml

import spikemoe.cli.profile as commands
from spikemoe.analysis import RunFileError, read_json_file, read_jsonl
from spikemoe.analysis.report import gather_run
from spikemoe.cli import main

EPOCH1 = {"kind": "epoch", "step": 4, "epoch": 1, "test/top1": 40.0, "best/top1": 40.0}
EPOCH2 = {"kind": "epoch", "step": 8, "epoch": 2, "test/top1": 35.0, "best/top1": 40.0}


def _lines(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_torn_last_line_is_dropped_with_a_note(tmp_path):
    path = tmp_path / "metrics.jsonl"
    # a run killed mid-write: the last record stops after '"epoch": 3, '
    path.write_text(_lines(EPOCH1, EPOCH2) + '{"kind": "epoch", "step": 12, "epoch": 3, ')
    log = read_jsonl(path)
    assert [r["epoch"] for r in log.records] == [1, 2] and log.torn_line == 3
    assert str(path) in log.note and "line 3" in log.note
    assert read_jsonl(path, kind="epoch").records == [EPOCH1, EPOCH2]
    whole = tmp_path / "whole.jsonl"
    whole.write_text(_lines(EPOCH1) + "\n")  # a trailing blank line is not damage
    assert read_jsonl(whole).torn_line is None and read_jsonl(whole).note is None


def test_damaged_middle_line_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_lines(EPOCH1) + '{"kind": "epoch" "step": 8}\n' + _lines(EPOCH2))
    with pytest.raises(RunFileError) as e:
        read_jsonl(path)
    msg = str(e.value)
    assert f"{path}, line 2 of 3" in msg and "Expecting ',' delimiter" in msg
    assert "not the last line" in msg
    bad = tmp_path / "list.jsonl"
    bad.write_text("[1, 2]\n{}\n")
    with pytest.raises(RunFileError, match="line 1: expected a JSON object"):
        read_jsonl(bad)


def test_cut_json_file_is_named(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text('{"best_top1": 40.0, "final_top1"')
    with pytest.raises(RunFileError) as e:
        read_json_file(path, "Run it again.")
    assert str(path) in str(e.value) and "cut short" in str(e.value)
    assert str(e.value).endswith("Run it again.")


def _killed_run(tmp_path, metrics: str):
    run = tmp_path / "killed"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"name": "test_spikformer"}, "data": {"name": "digits-dvs", "T": 2}}))
    (run / "metrics.jsonl").write_text(metrics)
    return run


def test_report_on_a_killed_run_with_a_torn_log(tmp_path, capsys):
    run = _killed_run(tmp_path, _lines(EPOCH1, EPOCH2) + '{"kind": "step", "st')
    row = gather_run(run)
    assert row["best_top1"] == 40.0 and row["final_top1"] == 35.0  # from the log, epoch 2
    assert row["warnings"] == ("metrics.jsonl: torn last line; "
                               "INCOMPLETE: no summary.json, 2 epoch(s) logged")
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "**metrics.jsonl: torn last line" in out
    assert f"{run / 'metrics.jsonl'}: last line (line 3) is cut short" in out


def test_report_on_a_damaged_log_fails_naming_file_and_line(tmp_path, capsys):
    run = _killed_run(tmp_path, _lines(EPOCH1) + "{oops\n" + _lines(EPOCH2))
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'metrics.jsonl'}, line 2 of 3" in err and "Traceback" not in err


def test_report_output_checked_before_reading_runs(tmp_path, capsys):
    assert main(["report", str(tmp_path / "not-read"), "--csv", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--csv {tmp_path} is a folder" in err and "not a run directory" not in err
    assert main(["report", str(tmp_path / "x"), "--out", str(tmp_path / "no" / "t.md")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture
def never_profile(monkeypatch):
    """Any attempt to compute a profile fails the test: the output check must come first."""
    def boom(*a, **k):
        raise AssertionError("the profile was computed before the output was checked")
    monkeypatch.setattr(commands, "profile_registered", boom)
    monkeypatch.setattr(commands, "profile_checkpoint", boom)


def test_profile_out_that_is_a_file_fails_before_computing(tmp_path, capsys, never_profile):
    f = tmp_path / "results.txt"
    f.write_text("keep me")
    assert main(["profile", "--model", "test_spikformer", "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"--out {f} is an existing file, not a folder" in err and "Nothing was computed" in err
    assert f.read_text() == "keep me"
    assert main(["profile", "--model", "test_spikformer", "--out", str(f / "sub")]) == 2
    assert f"{f} is a file" in capsys.readouterr().err


def test_profile_out_not_writable_fails_before_computing(tmp_path, capsys, never_profile,
                                                         monkeypatch):
    def refused(*a, **k):  # what the OS says in a folder we may not write (root may write anywhere)
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(commands.tempfile, "mkstemp", refused)
    assert main(["profile", "--model", "test_spikformer", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write in {tmp_path} (Permission denied)" in err and "Traceback" not in err
    assert not (tmp_path / "p").exists()  # nothing created


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs a non-root user: root may write into a read-only folder")
def test_profile_out_in_a_read_only_folder_for_real(tmp_path, capsys, never_profile):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["profile", "--model", "test_spikformer", "--out", str(ro / "p")]) == 2
        assert f"cannot write in {ro}" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)
