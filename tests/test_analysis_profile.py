"""``spikemoe profile`` and ``spikemoe report`` end to end, on the embedded digits-dvs data."""
from __future__ import annotations

import csv
import io
import json

import pytest

from spikemoe.cli import main


def _json_line(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_profile_model_writes_json_table_and_three_plots(tmp_path, capsys):
    out = tmp_path / "prof"
    assert main(["profile", "--model", "test_spikformer_semm", "--samples", "3",
                 "--out", str(out), "--json"]) == 0
    brief = _json_line(capsys.readouterr().out)
    assert brief["samples"] == 3 and brief["data"] == "digits-dvs"
    assert sorted(p.name for p in out.iterdir()) == [
        "energy_layers.png", "firing_rates.png", "profile.json", "profile.md", "router_rates.png"]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    p = json.loads((out / "profile.json").read_text())
    assert p["model"] == "test_spikformer_semm" and p["params"] == 28_491 and p["T"] == 2
    assert sorted(p["energy"]) == ["events", "literal", "strict"]
    assert p["energy_aliases"] == {"paper": "events"} and p["first_layer"] == "auto"
    assert p["first_layer_once"] is False  # event frames [T, B, ...]: charged T times
    for convention in ("literal", "events", "strict"):
        e = p["energy"][convention]
        # two paths to the same mean: each sample alone under its own counter (the spread
        # pass, all 3 samples here) and the 3 samples in one batch under one counter
        s = e["per_sample_mJ"]
        assert s["spread_samples"] == 3
        assert s["spread_mean"] == pytest.approx(s["mean"], rel=1e-9)
        assert e["mJ"] == s["mean"] == pytest.approx(sum(r["energy_pj"] for r in e["layers"]) * 1e-9)
        assert s["min"] <= s["spread_mean"] <= s["max"]
    # the first layer reads event counts: MACs in both conventions, flagged by the audit
    first = [r for r in p["energy"]["events"]["layers"] if r["first"]]
    assert len(first) == 1 and first[0]["macs"] == first[0]["dense_macs"] > 0
    assert any(a["layer"] == first[0]["layer"] for a in p["audit"])
    # every spiking neuron is monitored, with one rate per time step; routers have 4 experts
    assert len(p["firing"]["layers"]) >= 8
    assert all(len(v["rate_per_step"]) == 2 for v in p["firing"]["layers"].values())
    assert p["routers"]["blocks.0.attn.router.lif"]["num_experts"] == 4
    md = (out / "profile.md").read_text()
    assert "## Energy per layer (events)" in md and "## Spike-driven audit" in md


def test_profile_refuses_ambiguous_or_unsuitable_requests(tmp_path, capsys):
    assert main(["profile", "--out", str(tmp_path)]) == 2
    assert "either a CHECKPOINT" in capsys.readouterr().err
    assert main(["profile", "--model", "spikformer_4_384_cifar", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "[4, 3, 32, 32]" in err and "--data" in err
    assert main(["profile", "--model", "test_spikformer", "--samples", "0",
                 "--out", str(tmp_path)]) == 2


def test_train_ends_with_a_profile_and_report_gathers_the_run(tmp_path, capsys):
    """A short real run on digits-dvs: ``spikemoe train`` profiles its best checkpoint, and
    ``spikemoe report`` puts accuracy and energy in one row."""
    assert main(["train", "model.name=test_spikformer_semm", "model.T=2", "data.T=2",
                 "data.size=16", "schedule.epochs=1", "schedule.warmup_epochs=0",
                 "data.batch_size=64", "run.profile_samples=4", "run.progress=false",
                 "run.tensorboard=false", f"run.out_dir={tmp_path}", "run.name=r"]) == 0
    run = tmp_path / "r"
    summary = json.loads((run / "summary.json").read_text())
    prof = json.loads((run / "profile" / "profile.json").read_text())
    assert prof["samples"] == 4 and prof["weights"].startswith(str(run / "checkpoints"))
    assert len(list((run / "profile").glob("*.png"))) == 3
    capsys.readouterr()

    csv_path = tmp_path / "runs.csv"
    assert main(["report", str(run), "--csv", str(csv_path)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| run | model | data | T | params |")
    row = next(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert row["model"] == "test_spikformer_semm" and row["data"] == "digits-dvs"
    assert row["T"] == "2" and row["params"] == "28491"
    assert float(row["best_top1"]) == pytest.approx(summary["best_top1"])
    assert float(row["energy_events_mJ"]) == pytest.approx(
        prof["energy"]["events"]["per_sample_mJ"]["mean"])
    assert float(row["energy_strict_mJ"]) >= float(row["energy_events_mJ"])
    assert float(row["energy_literal_mJ"]) == pytest.approx(
        prof["energy"]["literal"]["per_sample_mJ"]["mean"])

    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_a_model_without_spiking_neurons_is_charged_macs_in_both_conventions():
    """An ANN's sparse ReLU output is not spikes: every multiply-add is a MAC."""
    import torch
    from torch import nn

    from spikemoe.analysis import profile_model

    torch.manual_seed(0)
    ann = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3))
    samples = [(torch.rand(2, 4, 4), i % 3) for i in range(5)]  # static [C, H, W] samples
    p = profile_model(ann, samples, batch_size=2, spread_samples=2)
    assert p.samples == 5 and not p.spiking and p.firing.layers == {}
    for c in ("literal", "events", "paper", "strict"):
        e = p.energy[c]
        assert e.sops == 0 and e.macs == 32 * 8 + 8 * 3  # per inference
        assert e.mj == pytest.approx((32 * 8 + 8 * 3) * 4.6e-9)


def test_profile_a_byte_level_language_model_on_the_stdlib_corpus(tmp_path, capsys):
    """An LM's input is ``[N]`` byte ids: the profile reads stdlib-bytes windows of N bytes,
    charges MACs (no spiking neurons) and skips top-1 (its targets are per token)."""
    assert main(["profile", "--model", "causal_transformer_lm_small", "--samples", "2",
                 "--out", str(tmp_path), "--json"]) == 0
    brief = _json_line(capsys.readouterr().out)
    p = json.loads((tmp_path / "profile.json").read_text())
    assert brief["data"] == "stdlib-bytes" and p["samples"] == 2 and not p["spiking"]
    assert p["energy"]["events"]["sops"] == 0 and p["energy"]["events"]["macs"] > 0
    assert p["energy"]["events"]["mJ"] == p["energy"]["strict"]["mJ"] == p["energy"]["literal"]["mJ"]
    assert "accuracy" not in p and p["audit"] == []


def _digits(n: int):
    from spikemoe.data import create_dataset

    ds = create_dataset("digits-dvs", "test", T=2, size=16, augment=False)
    return [ds[i] for i in range(n)]


def test_routed_sequence_models_are_counted_one_sequence_at_a_time():
    """SDT pads each batch's selected tokens to the longest selection: profiled per sequence,
    the routed layer's counted MACs are exactly the sum over sequences run alone."""
    import torch

    from spikemoe import create_model
    from spikemoe.analysis import count_operations, profile_model

    torch.manual_seed(0)
    model = create_model("test_subjective_depth").eval()
    samples = _digits(6)
    p = profile_model(model, samples, batch_size=32)
    assert p.batch_size == 1 and p.energy["events"].per_inference.spread_samples == 6
    alone = 0
    for x, _ in samples:
        counter, _ = count_operations(model, x.unsqueeze(1))  # [T, 1, 2, 16, 16]
        alone += sum(r.dense_macs for r in counter.layer_records() if r.layer.startswith("layers.1."))
    routed = sum(r["dense_macs"] for r in p.ops.layers() if r["layer"].startswith("layers.1."))
    assert routed * 6 == pytest.approx(alone) and alone > 0


def test_vmoe_is_counted_per_routing_group_and_its_spread_brackets_the_mean():
    import torch

    from spikemoe import create_model
    from spikemoe.analysis import profile_model
    from spikemoe.contract import model_facts

    torch.manual_seed(0)
    model = create_model("test_vmoe").eval()
    p = profile_model(model, _digits(8), batch_size=32)
    group = model_facts(model).measurement_batch
    assert p.batch_size == group and "routing group" in p.spread_unit
    s = p.energy["events"].per_inference
    assert s.spread_samples == 8 // group
    assert s.min <= s.mean * (1 + 1e-12) and s.mean <= s.max * (1 + 1e-12)


def test_plots_leave_pyplot_and_the_process_backend_alone(tmp_path):
    """A notebook's backend and open figures are not touched: plots are bare ``Figure`` s."""
    import sys

    import matplotlib
    import torch
    from torch import nn

    from spikemoe.analysis import profile_model
    from spikemoe.analysis.plots import plot_profile

    backend = matplotlib.rcParams._get_backend_or_none()
    had_pyplot = "matplotlib.pyplot" in sys.modules
    figures = sys.modules["matplotlib.pyplot"].get_fignums() if had_pyplot else None
    ann = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    p = profile_model(ann, [(torch.rand(2, 2, 2), 1)])
    paths = plot_profile(p, tmp_path)
    assert [f.name for f in paths] == ["firing_rates.png", "router_rates.png", "energy_layers.png"]
    assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in paths)
    assert matplotlib.rcParams._get_backend_or_none() == backend
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot
    if had_pyplot:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == figures
