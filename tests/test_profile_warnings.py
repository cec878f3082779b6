"""A network that fires no spike is said to be dead: in ``profile_model``'s result, at the top
of ``spikemoe profile``'s output, in ``profile.json`` / ``profile.md`` and in ``spikemoe report``.
A network that fires (the ``excite`` fixture) gets no warning anywhere."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml

from spikemoe import create_model
from spikemoe.analysis import firing_warnings, profile_model
from spikemoe.analysis.profile_files import profile_to_dir
from spikemoe.analysis.report import gather_run, runs_csv, runs_markdown
from spikemoe.cli import main


@pytest.fixture(scope="module")
def samples():
    from spikemoe.data import create_dataset

    # the session's private frame cache (conftest), shared with the CLI runs below
    ds = create_dataset("digits-dvs", "test", T=2, size=16, augment=False)
    return [ds[i] for i in range(3)]  # [2, 2, 16, 16] event frames each


def _run_dir(tmp_path, name: str, profile):
    """A finished run directory as `spikemoe train` leaves it, with ``profile`` (a
    ``ProfileResult``) as its profile."""
    run = tmp_path / name
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"name": "test_spikformer_semm"}, "data": {"name": "digits-dvs", "T": 2}}))
    (run / "summary.json").write_text(json.dumps(
        {"model": "test_spikformer_semm", "data": "digits-dvs", "best_top1": 50.0,
         "final_top1": 40.0, "stopped": False, "steps": 10, "epochs": 1}))
    profile_to_dir(dataclasses.replace(profile, model="test_spikformer_semm", data="digits-dvs",
                                       params=1, weights="test"), run / "profile")
    return run


def test_warnings_from_spike_counts_by_hand():
    # execution order a -> b -> c; a (the first spiking layer) and c fire nothing
    layers = {"a": {"spikes": 0.0}, "b": {"spikes": 3.0}, "c": {"spikes": 0.0}}
    ws = firing_warnings(layers, samples=2)
    assert [(w.code, w.layers) for w in ws] == [("stem_silent", ["a"]), ("silent_layers", ["c"])]
    assert "no spike passes the stem" in ws[0].message and "over 2 sample(s)" in ws[0].message
    assert "1 of 3 spiking layers" in ws[1].message
    dead = firing_warnings({"a": {"spikes": 0.0}, "b": {"spikes": 0.0}})
    assert [(w.code, w.layers) for w in dead] == [("no_spikes", ["a", "b"])]
    assert firing_warnings({"a": {"spikes": 1.0}}) == []
    assert firing_warnings({}) == []  # no spiking neurons (an ANN): nothing to say


def test_dead_network_is_warned_everywhere(tmp_path, samples, capsys):
    """The untrained Spikformer-SEMM (weights std 0.02) fires 0 in every LIF."""
    torch.manual_seed(0)
    p = profile_model(create_model("test_spikformer_semm"), samples)
    assert p.firing.mean_rate == 0
    assert [w.code for w in p.warnings] == ["no_spikes"]
    assert p.firing.silent_layers == list(p.firing.layers) and len(p.firing.layers) == 12

    run = _run_dir(tmp_path, "dead", p)
    stored = json.loads((run / "profile" / "profile.json").read_text())
    assert stored["warnings"] == [w.to_dict() for w in p.warnings]
    md = (run / "profile" / "profile.md").read_text().splitlines()
    assert md[2].startswith("> **Warning (no_spikes)**: no spiking neuron fired over 3 sample(s)")
    assert "| stem.lifs.0 | 0.0000 **silent** |" in "\n".join(md)

    row = gather_run(run)
    assert row["warnings"] == "NO SPIKES (dead network)" and row["warning_codes"] == ["no_spikes"]
    table = runs_markdown([row])
    cells = table.splitlines()[2].split(" | ")
    assert cells[-1] == "**NO SPIKES (dead network)** |"
    assert sum(c.endswith("(!)") for c in cells) == 5  # SOPs, 3 energies, firing rate
    assert "no spiking neuron fired" in table  # the full sentence under the table
    assert "NO SPIKES" in runs_csv([row]).splitlines()[1]

    # the CLI: the warning is the first line printed, before the energy
    assert main(["profile", "--model", "test_spikformer_semm", "--samples", "2",
                 "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("WARNING (no_spikes): no spiking neuron fired over 2 sample(s)")
    assert "mJ per inference" in out[1]
    assert main(["report", str(run)]) == 0
    assert "NO SPIKES" in capsys.readouterr().out


def test_silent_stem_is_named_when_later_layers_fire_from_biases(samples, excite):
    torch.manual_seed(0)
    model = excite(create_model("test_spikformer_semm"))
    first, second = model.stem.stages[0][1], model.stem.stages[1][1]  # the BNs before lifs.0, .1
    with torch.no_grad():
        first.weight.zero_()
        first.bias.fill_(-1.0)  # every input to stem.lifs.0 is -1: it can never fire
        second.bias.fill_(3.0)  # stem.lifs.1 fires from its bias alone, whatever the input
    p = profile_model(model, samples)
    codes = [w.code for w in p.warnings]
    assert codes[0] == "stem_silent" and p.warnings[0].layers == ["stem.lifs.0"]
    assert "no_spikes" not in codes and p.firing.mean_rate > 0


def test_firing_network_gets_no_warning(tmp_path, samples, excite, capsys):
    torch.manual_seed(0)
    p = profile_model(excite(create_model("test_spikformer_semm")), samples)
    assert p.warnings == [] and p.firing.silent_layers == []
    assert all(v["spikes"] > 0 for v in p.firing.layers.values())
    run = _run_dir(tmp_path, "alive", p)
    assert json.loads((run / "profile" / "profile.json").read_text())["warnings"] == []
    assert "Warning" not in (run / "profile" / "profile.md").read_text()
    row = gather_run(run)
    assert row["warnings"] == "" and row["notes"] == []
    table = runs_markdown([row])
    assert "(!)" not in table and "Warnings" not in table


def test_report_derives_warnings_for_a_profile_written_before_the_field(tmp_path, samples):
    torch.manual_seed(0)
    p = profile_model(create_model("test_spikformer_semm"), samples)
    run = _run_dir(tmp_path, "old", p)
    stored = json.loads((run / "profile" / "profile.json").read_text())
    del stored["warnings"]  # a profile.json from an older spikemoe
    (run / "profile" / "profile.json").write_text(json.dumps(stored))
    row = gather_run(run)
    assert row["warning_codes"] == ["no_spikes"]
