"""Spikingformer: structure and parameter counts against the published ones, the test twin's
contract, and the published ImageNet 8-512 energy reproduced from the per-layer firing rates
its repository publishes (no forward pass over data)."""
import json

import pytest
import torch

import spikemoe
from spikemoe.analysis.rate_energy import energy_from_rates, operation_table
from spikemoe.cli import main

# Input firing rates (percent) of Spikingformer-8-512 on ImageNet val, transcribed from
# zhouchenlin2096/Spikingformer, imagenet/energy_consumption_logs/
# energy_consumption_of_Spikingformer-8-512_log.txt ("Info of Conv/Linear layers": the 4th
# number of each layer; "Firing rate of Q/K/V inputs in each block").
STEM = [100.0, 25.8312565, 15.3364436, 13.1065373, 12.9557331]  # proj_conv .. rpe_conv
BLOCKS = [  # q/k/v_conv input (shared), proj_conv, fc1_conv, fc2_conv
    (17.6595751, 29.7803004, 26.7676900, 3.28870974),
    (33.7953024, 30.9584658, 33.0194005, 2.96453710),
    (34.2222987, 31.4189673, 34.7303054, 2.55983278),
    (34.4263662, 29.0892771, 34.6611222, 1.92913754),
    (34.3272679, 20.9885448, 36.0386227, 1.42090094),
    (35.9286898, 16.5693003, 35.9497969, 0.952562647),
    (34.2288006, 10.6833842, 32.2695614, 0.568941609),
    (31.7671993, 9.47712146, 29.9233030, 1.37684836),
]
QKV = [(0.17230188630104062, 0.03626344770312309, 0.06957707978010177),
       (0.11627475060462952, 0.040295450145006184, 0.07173207724809647),
       (0.10669307922124864, 0.044414592387676234, 0.07524623577594756),
       (0.08188644799470902, 0.05000199048876763, 0.0768778057050705),
       (0.06365273276925086, 0.04325467040181161, 0.07054187965631485),
       (0.07711239219903945, 0.0311313860142231, 0.07321582739830017),
       (0.07023756886482238, 0.024202287513613703, 0.07348622434139251),
       (0.09727698216676713, 0.02812242347121239, 0.07954712931871415)]
# The same log's totals and a few per-layer ACs / MACs
LOG_MACS, LOG_ACS, LOG_MJ = 0.347329512e9, 6.51754094076244e9, 7.463502601886196
LOG_LAYER_ACS = {"stem.convs.1.0": 955595335.05072, "stem.convs.4.0": 239640649.6176,
                 "blocks.0.attn.proj.linear": 61324280.75375191,
                 "blocks.0.mlp.fc1.linear": 220482576.19735593,
                 "blocks.0.mlp.fc2.linear": 27049144.073178384,
                 "blocks.0.attn.qkv.linear": 3 * 36294116.91444}  # q, k, v convs


def _rates() -> dict:
    layers = {f"stem.convs.{i}.0": r / 100 for i, r in enumerate(STEM)}
    for b, (qkv, proj, fc1, fc2) in enumerate(BLOCKS):
        layers |= {f"blocks.{b}.attn.qkv.linear": qkv / 100,
                   f"blocks.{b}.attn.proj.linear": proj / 100,
                   f"blocks.{b}.mlp.fc1.linear": fc1 / 100, f"blocks.{b}.mlp.fc2.linear": fc2 / 100}
    layers["head"] = 1.0
    return {"layers": layers,
            "attention": {f"blocks.{b}.attn": dict(zip("qkv", f)) for b, f in enumerate(QKV)}}


def _meta_table(name: str):
    with torch.device("meta"):
        model = spikemoe.create_model(name, backend="torch")
        return operation_table(model, torch.empty(1, 3, 224, 224), model.T)


@pytest.mark.parametrize("name, ours, published", [
    ("spikingformer_8_384", 16_816_024, 16.81e6),
    ("spikingformer_8_512", 29_689_384, 29.68e6),
    ("spikingformer_8_768", 66_338_632, 66.34e6),
])
def test_parameter_counts_match_the_published_ones(name, ours, published):
    with torch.device("meta"):
        model = spikemoe.create_model(name)
    n = sum(p.numel() for p in model.parameters())
    assert n == ours and abs(n - published) / published < 1e-3
    # the official logs' counts (29,705,768; 66,363,208) add two unused LayerNorms per block
    official = {"spikingformer_8_512": 29_705_768, "spikingformer_8_768": 66_363_208}
    if name in official:
        d = model.head.in_features
        assert n + 8 * 2 * 2 * d == official[name]


def test_test_twins_follow_the_model_contract():
    for name in ("test_spikingformer", "test_spikingformer_semm"):
        model = spikemoe.create_model(name, backend="torch").eval()
        frames = torch.rand(2, 3, 2, 16, 16)  # [T, B, C, H, W]
        a, b = model(frames), model(frames)
        assert a.logits.shape == (3, 10) and torch.equal(a.logits, b.logits)
        assert model(torch.rand(3, 2, 16, 16)).logits.shape == (3, 10)  # static image
        with pytest.raises(ValueError, match="accepts"):
            model(torch.rand(3, 16, 16))


def test_pre_activation_residual_every_linear_but_the_first_conv_reads_binary_spikes():
    from spikemoe.analysis.op_counts import count_operations

    model = spikemoe.create_model("test_spikingformer", backend="torch").eval()
    with torch.no_grad():
        for m in model.modules():  # large weights so that every LIF fires
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.normal_(0, 1)
    counter, _ = count_operations(model, torch.rand(2, 1, 2, 16, 16))
    non_binary = [r.layer for r in counter.layer_records()
                  if r.kind in ("linear", "conv") and not r.binary]
    # the first conv reads the frames; the head reads the mean of the membrane stream
    assert non_binary == ["stem.convs.0.0", "head"]


def test_spikingformer_8_512_energy_from_its_published_rates():
    table = _meta_table("spikingformer_8_512")
    e = energy_from_rates(table, _rates(), "spikingformer")
    assert e.mj == pytest.approx(7.46, rel=5e-3)  # the published figure, within 0.5%
    assert e.mj == pytest.approx(LOG_MJ, rel=1e-8)  # the log's unrounded total
    assert e.macs == LOG_MACS  # first conv (T = 4 copies) + head (once, bias included)
    assert e.acs == pytest.approx(LOG_ACS, rel=1e-8)
    acs = {x.layer: x.acs for x in e.layers}
    for layer, logged in LOG_LAYER_ACS.items():
        assert acs[layer] == pytest.approx(logged, rel=1e-7), layer
    # SSA, block 0: T H N d^2 (fr_Q + min(fr_K, fr_V)) = 4 * 8 * 196 * 64^2 * (0.1723 + 0.0363)
    ssa = sum(x.acs for x in e.layers if x.layer.startswith("blocks.0.attn: "))
    assert ssa == pytest.approx(4 * 8 * 196 * 64 ** 2 * (QKV[0][0] + QKV[0][1]))
    # the other product order charges N^2 d per product instead of N d^2
    swapped = energy_from_rates(table, _rates(), "spikingformer", ssa_order="(qk)v")
    assert swapped.mj > e.mj


def test_energy_command_prices_rates_and_names_missing_layers(tmp_path, capsys):
    rates = _rates()
    path = tmp_path / "rates.json"
    path.write_text(json.dumps(rates))
    assert main(["energy", "spikingformer_8_512", "--rates", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rule"] == "spikingformer" and out["mJ"] == pytest.approx(LOG_MJ, rel=1e-8)
    del rates["layers"]["head"]
    path.write_text(json.dumps(rates))
    assert main(["energy", "spikingformer_8_512", "--rates", str(path)]) == 2
    assert "no rate for 1 layer(s): head" in capsys.readouterr().err
    assert main(["energy", "test_spikingformer", "--template"]) == 0
    template = json.loads(capsys.readouterr().out)
    assert template["layers"]["stem.convs.0.0"] == 1.0 and "blocks.0.attn" in template["attention"]
