"""Operation counts and energy per inference: toy nets counted by hand, agreement with
SpikingJelly's op counters on every test_* model, and the dense FLOPs of Spikformer-8-384.

LIF arithmetic used throughout (tau 2, V_th 1, hard reset to 0, decay input):
H[t] = V[t-1] + (X[t] - V[t-1]) / 2. From V = 0 an input of 2 gives H = 1: a spike and a
reset to 0; an input of 0 gives H = 0. So a LIF fed ``2 * S`` (S binary) emits exactly S.
"""
import pytest
import torch
from spikingjelly.activation_based.neuron import BaseNode
from spikingjelly.activation_based.op_counter import (
    DispatchCounterMode,
    MACCounter,
    SynOpCounter,
)
from torch import nn

import spikemoe
from spikemoe.analysis.energy import COST_TABLES, audit, cost_table, layer_energy
from spikemoe.analysis.op_counts import OpRecord, count_operations
from spikemoe.moe import EMSA
from spikemoe.neurons import make_lif

FP32 = COST_TABLES["45nm-fp32"]  # E_MAC 4.6 pJ, E_AC 0.9 pJ


def _by_layer(counter) -> dict[str, OpRecord]:
    return {r.layer if r.kind != "mask" else f"{r.layer}:mask": r for r in counter.layer_records()}


def _energy(rec, convention, **kw):
    return layer_energy(rec, convention, FP32, **kw)


# ---------------------------------------------------------------------------- toy nets


def test_real_valued_conv_first_layer_is_dense_macs_in_both_conventions():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False)
    x = torch.randn(2, 4, 6, 6)  # real-valued pixels
    counter, _ = count_operations(nn.Sequential(conv), x)
    (rec,) = counter.layer_records()
    # out [2, 6, 3, 3] = 108 outputs, each (C_in / groups) k_h k_w = 2 * 3 * 3 = 18 MACs
    assert (rec.layer, rec.kind, rec.calls) == ("0", "conv", 1)
    assert rec.dense_macs == 108 * 18 == 1944
    assert rec.first and not rec.binary and not rec.integer
    for convention in ("paper", "strict"):
        e = _energy(rec, convention)
        assert (e.macs, e.sops) == (1944, 0)
        assert e.energy_pj == pytest.approx(1944 * 4.6)
    (entry,) = audit([rec])
    assert entry["layer"] == "0" and entry["reason"].startswith("first layer")


def test_linear_on_lif_spikes_is_charged_events_times_e_ac():
    torch.manual_seed(0)
    net = nn.Sequential(make_lif(), nn.Linear(5, 3))
    s = torch.tensor([[[1, 0, 1, 0, 0], [0, 1, 1, 1, 0]],
                      [[0, 0, 0, 0, 1], [1, 0, 0, 1, 0]]], dtype=torch.float32)  # [T=2, B=2, 5]
    counter, _ = count_operations(net, 2 * s)  # the LIF emits exactly s (module docstring)
    (rec,) = counter.layer_records()
    # 2 + 3 + 1 + 2 = 8 spikes of 20 inputs, each reaching 3 outputs: 24 accumulates;
    # dense 2*2*5*3 = 60.
    assert rec.layer == "1" and rec.kind == "linear"
    assert (rec.input_nonzero, rec.input_elements) == (8, 20)
    assert rec.input_rate == pytest.approx(8 / 20)
    assert rec.dense_macs == 60 and rec.events == 24
    assert rec.binary and rec.integer
    # The LIF ran before it: this Linear reads spikes, not the model input, so it is not the
    # first layer (charged 60 MACs = 276 pJ if it were).
    assert not rec.first
    for convention in ("paper", "strict"):
        e = _energy(rec, convention)
        assert (e.macs, e.sops) == (0, 24)
        assert e.energy_pj == pytest.approx(24 * 0.9)  # 21.6 pJ
    assert audit([rec]) == []


class _SpikeSumLinear(nn.Module):
    """A Linear fed a spike-sum residual: two spike maps added give counts 0, 1, 2."""

    def __init__(self):
        super().__init__()
        self.lif = make_lif()
        self.fc = nn.Linear(3, 4)

    def forward(self, x):  # x: [T, B, 2, C]
        s = self.lif(x)
        return self.fc(s[:, :, 0] + s[:, :, 1])  # [T, B, C], values in {0, 1, 2}


def test_linear_on_spike_counts_paper_charges_value_weighted_events_strict_dense():
    s = torch.tensor([[[[1, 1, 0], [1, 0, 0]]],    # t=0: counts [2, 1, 0]
                      [[[0, 0, 1], [0, 1, 1]]]],   # t=1: counts [0, 1, 2]
                     dtype=torch.float32)          # [T=2, B=1, 2, C=3]
    counter, _ = count_operations(_SpikeSumLinear(), 2 * s)
    (rec,) = counter.layer_records()
    # counts sum to 6 (4 nonzero of 6 entries); each count n reaches 4 outputs n times:
    # events = 6 * 4 = 24; dense = T*B*C*out = 2*1*3*4 = 24 (equal here by chance of sizes,
    # so check the parts too).
    assert rec.layer == "fc" and not rec.binary and rec.integer and not rec.first
    assert (rec.input_nonzero, rec.input_elements) == (4, 6)
    assert rec.events == 6 * 4 and rec.dense_macs == 2 * 3 * 4
    paper, strict = _energy(rec, "paper"), _energy(rec, "strict")
    assert (paper.macs, paper.sops) == (0, 24) and paper.energy_pj == pytest.approx(24 * 0.9)
    assert (strict.macs, strict.sops) == (24, 0) and strict.energy_pj == pytest.approx(24 * 4.6)
    (entry,) = audit([rec])
    assert entry["reason"].startswith("integer spike counts")

    # Same net with counts up to 2 on 3 of 6 inputs but a wider layer, so events != dense:
    wide = _SpikeSumLinear()
    wide.fc = nn.Linear(3, 10)
    s2 = torch.zeros(2, 1, 2, 3)
    s2[0, 0, :, 0] = 1  # count 2 at (t=0, c=0)
    s2[1, 0, 0, 2] = 1  # count 1 at (t=1, c=2)
    counter, _ = count_operations(wide, 2 * s2)
    (rec,) = counter.layer_records()
    assert rec.events == (2 + 1) * 10 and rec.dense_macs == 2 * 3 * 10
    assert _energy(rec, "paper").sops == 30 and _energy(rec, "strict").macs == 60


class _MeanHead(nn.Module):
    """A Linear on the time-mean of spikes (like Spikformer's head on the token mean)."""

    def __init__(self):
        super().__init__()
        self.lif = make_lif()
        self.fc = nn.Linear(2, 3)

    def forward(self, x):  # x: [T, B, 2]
        return self.fc(self.lif(x).mean(0))  # [B, 2], values in {0, 0.5, 1}


def test_real_valued_activation_is_audited_and_paper_charges_rate_times_dense():
    s = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])  # [T=2, B=1, 2]: means [1, 0.5]
    counter, _ = count_operations(_MeanHead(), 2 * s)
    (rec,) = counter.layer_records()
    # dense = B * 2 * 3 = 6; both inputs nonzero: fr = 1; paper: fr * dense = 6 SOPs.
    assert not rec.integer and not rec.first and rec.input_rate == 1.0
    assert rec.dense_macs == 6 and rec.events == 0  # events only for integer inputs
    assert _energy(rec, "paper").sops == 6 and _energy(rec, "paper").macs == 0
    assert _energy(rec, "strict").macs == 6 and _energy(rec, "strict").sops == 0
    assert audit([rec])[0]["reason"].startswith("real-valued activation")


def test_semm_attention_router_gate_is_its_own_layer_and_masks_count_r_and_o():
    torch.manual_seed(0)
    T, B, N, C, E = 4, 2, 6, 16, 4  # expert width d = C / E = 4
    emsa = EMSA(dim=C, num_experts=E).eval()
    with torch.no_grad():
        emsa.qkv.bn.bias.fill_(1.5)  # make Q, K, V fire (fresh init: ~3%)
        # Router spikes fixed to experts 0 and 3 for every token and step: with zero weights
        # the gate's pre-activation is its bias; 4 -> H = 2 >= 1 (spike, reset), -4 -> never.
        emsa.router.gate.linear.weight.zero_()
        emsa.router.gate.linear.bias.copy_(torch.tensor([4.0, -4.0, -4.0, 4.0]))
    seen = {}
    emsa.attn_lif.register_forward_hook(lambda m, a, out: seen.__setitem__("o", out.clone()))
    emsa.router.lif.register_forward_hook(lambda m, a, out: seen.__setitem__("r", out.clone()))
    x = (torch.rand(T, B, N, C, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    counter, (_, stats) = count_operations(emsa, x)
    recs = _by_layer(counter)
    o, r = seen["o"], seen["r"]  # O [T, B, N, E, d], R [T, B, N, E]
    assert torch.equal(r, torch.tensor([1.0, 0, 0, 1]).expand(T, B, N, E))
    assert o.sum() > 0
    nnz_x = int(x.sum())

    # The router gate Linear: its own record, dense T*B*N*C*E, events nnz(X) * E.
    gate = recs["router.gate.linear"]
    assert gate.kind == "linear" and gate.binary
    assert gate.dense_macs == T * B * N * C * E == 3072
    assert gate.events == nnz_x * E
    assert recs["qkv.linear"].events == nnz_x * sum(emsa.widths)  # separate from the gate

    # R (.) O: one AND per output of O * R[..., None]: T*B*N*E*d = 768; its inputs are O
    # (T*B*N*E*d elements) and R (T*B*N*E), nonzero nnz(O) + 2 experts * T*B*N tokens.
    mask = recs["(model):mask"]
    assert mask.calls == 1 and mask.dense_macs == T * B * N * E * 4 == 768
    assert mask.input_elements == T * B * N * E * 4 + T * B * N * E
    assert mask.input_nonzero == int(o.sum()) + 2 * T * B * N
    for convention in ("paper", "strict"):
        e = _energy(mask, convention)
        assert e.mask_ops == 768 and e.energy_pj == 0  # counted, charged 0

    # W_O sees only the routed experts' outputs: nnz(Y) = nnz(O of experts 0 and 3).
    nnz_y = int(o[..., [0, 3], :].sum())
    assert nnz_y < int(o.sum())  # experts 1, 2 fired too and were masked out
    assert recs["proj.linear"].events == nnz_y * C
    torch.testing.assert_close(stats["expert_rate"], torch.tensor([1.0, 0, 0, 1]))

    # Each activation product is its own record. N (d + d) = 48 > 2 d d = 32, so SSA runs
    # Q (K^T V): K^T V (shared K, V: [T*B, d, N] @ [T*B, N, d], spike x spike, binary) then
    # Q (K^T V) ([T*B*E, N, d] @ [T*B*E, d, d], spikes x integer counts).
    assert recs["(model)#1"].dense_macs == T * B * 4 * N * 4 and recs["(model)#1"].binary
    assert recs["(model)#2"].dense_macs == T * B * E * N * 4 * 4 and not recs["(model)#2"].binary
    assert recs["(model)#2"].integer


def _spikingjelly_counts(model, x, ignore=(nn.BatchNorm1d, nn.BatchNorm2d)):
    mac, syn = MACCounter(extra_ignore_modules=list(ignore)), SynOpCounter()
    with torch.no_grad(), DispatchCounterMode([mac, syn]):
        model(x)
    return mac, syn


def test_conv_on_binary_spikes_with_padding_matches_synop_counter():
    # One spike in the corner of a 4x4 map, 3x3 kernel, padding 1: it lies under the kernel
    # of 4 output positions (the other 5 taps would be padding), times 5 output channels.
    conv = nn.Sequential(nn.Conv2d(1, 5, 3, padding=1, bias=False))
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 1
    counter, _ = count_operations(conv, x)
    assert counter.layer_records()[0].events == 4 * 5  # not 9 * 5
    # Random spikes, stride and groups: equal to SpikingJelly's SynOp count.
    conv = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2))
    x = (torch.rand(3, 4, 7, 7, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    counter, _ = count_operations(conv, x)
    (rec,) = counter.layer_records()
    _, syn = _spikingjelly_counts(conv, x)
    assert rec.binary and rec.events == syn.get_total() > 0


def test_transposed_conv_dense_macs_and_events_match_spikingjelly():
    # Transposed conv weight [C_in, C_out / groups, k, k]: each input element is multiplied by
    # (C_out / groups) k k weights. Input [1, 2, 4, 4] = 32 elements, C_out 3: 32 * 3 * 9 = 864
    # (counting per output, 1*3*7*7 outputs * 3*9, would give 3969).
    up = nn.Sequential(nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, bias=False))
    x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    counter, _ = count_operations(up, x)
    (rec,) = counter.layer_records()
    mac, _ = _spikingjelly_counts(up, x)
    assert rec.dense_macs == 32 * 3 * 9 == mac.get_total()
    spikes = (torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    counter, _ = count_operations(up, spikes)
    _, syn = _spikingjelly_counts(up, spikes)
    assert counter.layer_records()[0].events == syn.get_total() > 0


# ------------------------------------------------------- test_* models vs SpikingJelly


SPIKING_TEST_MODELS = [n for n in spikemoe.list_models("test_*")
                       if n.startswith(("test_spikformer", "test_spike_driven"))]


@pytest.mark.parametrize("name", SPIKING_TEST_MODELS)
def test_test_models_macs_and_synops_agree_with_spikingjelly(name, excite):
    torch.manual_seed(0)
    # excite seed 1: with seed 0 the spike-driven SEMM twin's attention projection sees no spike
    # (every expert masked off), and a silent layer would make its agreement vacuous
    model = excite(spikemoe.create_model(name), seed=1).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (2, 3, 2, 16, 16), generator=g).float()  # event counts 0..3
    attn = model.blocks[0].attn
    seen = {}
    attn.qkv_lif.register_forward_hook(lambda m, a, out: seen.__setitem__("qkv", out.clone()))
    counter, _ = count_operations(model, x)
    records = [r for r in counter.layer_records() if r.kind != "mask"]
    assert [r.layer for r in records if r.first] == ["stem.stages.0.0"]
    assert all(r.input_rate > 0 for r in records)  # every layer sees spikes: not vacuous

    # SpikingJelly, BatchNorm ignored (we fold it; MACCounter would add numel(x) per BN).
    # Neurons need no ignoring: a LIF runs no matmul/conv (checked by the third counter).
    mac, syn = _spikingjelly_counts(model, x)
    mac_no_neurons, _ = _spikingjelly_counts(model, x, (nn.BatchNorm1d, nn.BatchNorm2d, BaseNode))
    assert mac_no_neurons.get_total() == mac.get_total()
    ours_mac = sum(r.dense_macs for r in records if not r.binary)
    # SDSA's column sum ("sum" records) is additions SpikingJelly does not count
    ours_syn = sum(r.events for r in records if r.binary and r.kind != "sum")

    # Per layer (Linear / Conv scopes hold one op each): binary input -> SynOps = events,
    # otherwise dense MACs = MACCounter's.
    root = type(model).__name__
    sj_mac, sj_syn = mac.get_counts(), syn.get_counts()
    for r in records:
        if r.kind in ("linear", "conv"):
            scope = f"{root}.{r.layer}"
            if r.binary:
                assert r.events == sum(sj_syn[scope].values()), r.layer
            else:
                assert r.dense_macs == sum(sj_mac[scope].values()), r.layer

    if model.style == "spike_driven":
        # Every op input but the stem's first conv is binary: totals agree exactly.
        assert ours_mac == mac.get_total()
        assert ours_syn == syn.get_total()
        return
    # Spikformer SSA with N = 16 tokens, d = 8: the cheaper order is Q (K^T V). K^T V is
    # spike x spike (our "attn#1", binary, events = coincident pairs = SpikingJelly's). Q (K^T V)
    # ("attn#2") is spikes x integer counts: we record it as integer (paper: value-weighted
    # events; strict: dense MACs), SpikingJelly counts no MAC when any operand is binary and
    # nnz(Q) * d SynOps. That op is the whole difference:
    mixed = [r for r in records if r.kind == "matmul" and not r.binary]
    assert [r.layer for r in mixed] == ["blocks.0.attn#2"]
    assert counter.ops[("blocks.0.attn#1", "matmul")].binary
    nnz_q = int(seen["qkv"][..., :attn.widths[0]].sum())
    assert ours_mac - mac.get_total() == mixed[0].dense_macs
    assert syn.get_total() - ours_syn == nnz_q * attn.head_dim


# ------------------------------------------------------------ Spikformer-8-384 FLOPs


def test_spikformer_8_384_dense_macs_match_the_analytic_count():
    # ImageNet recipe, 224x224, T = 4 (default), batch 1. ~1.5 s on 2 CPU cores.
    model = spikemoe.create_model("spikformer_8_384").eval()
    T, D, H, L, hidden, K = 4, 384, 12, 8, 1536, 1000
    counter, out = count_operations(model, torch.rand(1, 3, 224, 224))
    assert out.logits.shape == (1, K)
    recs = _by_layer(counter)

    def conv3x3(c_in, c_out, side):  # padding 1, stride 1: one output per input position
        return c_out * side * side * c_in * 9

    # SPS: conv widths 3 -> 48 -> 96 -> 192 -> 384, max-pool /2 after every stage's LIF:
    # the convs run at 224, 112, 56, 28; RPE conv at 14x14 (N = 196 tokens).
    stem = {"stem.stages.0.0": conv3x3(3, 48, 224),     # 65,028,096
            "stem.stages.1.0": conv3x3(48, 96, 112),    # 520,224,768
            "stem.stages.2.0": conv3x3(96, 192, 56),    # 520,224,768
            "stem.stages.3.0": conv3x3(192, 384, 28),   # 520,224,768
            "stem.rpe.0": conv3x3(384, 384, 14)}        # 260,112,384
    N, d = 14 * 14, D // H
    block = {"attn.qkv.linear": N * D * 3 * D,          # 86,704,128
             # N (d + d) = 12544 > 2 d d = 2048: Q (K^T V), each product H N d d = 2,408,448
             "attn#1": H * d * N * d, "attn#2": H * N * d * d,
             "attn.proj.linear": N * D * D,             # 28,901,376
             "mlp.fc1.linear": N * D * hidden,          # 115,605,504
             "mlp.fc2.linear": N * hidden * D}          # 115,605,504
    per_step = {**stem, "head": D * K}                  # head on the token mean: 384,000
    for i in range(L):
        per_step.update({f"blocks.{i}.{k}": v for k, v in block.items()})
    assert sum(per_step.values()) == 4_699_266_048  # 4.70 GMAC per time step
    # Every op runs once per time step (T is folded into the batch): T x per step.
    assert {k: r.dense_macs for k, r in recs.items()} == {k: T * v for k, v in per_step.items()}
    assert sum(r.dense_macs for r in recs.values()) == 18_797_064_192  # 18.80 GMAC, T = 4
    assert [k for k, r in recs.items() if r.first] == ["stem.stages.0.0"]


# ------------------------------------------------------------------------- energy API


def test_unknown_convention_or_table_raises_naming_the_choices():
    rec = OpRecord("fc", "linear", calls=1, dense_macs=10, input_elements=5, input_nonzero=1,
                   events=2)
    with pytest.raises(ValueError, match="literal.*events.*strict"):
        layer_energy(rec, "papers", FP32)
    with pytest.raises(ValueError, match="45nm-fp16.*45nm-fp32.*45nm-int8"):
        cost_table("45nm")
    assert cost_table("45nm-fp32") is FP32


def test_first_layer_once_divides_the_first_layer_by_t_and_samples_divide_counts():
    # Counted over 2 samples at T = 4: first layer 1944 * 2 dense MACs, a spiking layer
    # 21 * 2 events, a mask 100 * 2 ANDs.
    first = OpRecord("stem", "conv", calls=2, dense_macs=3888, input_elements=8,
                     input_nonzero=8, binary=False, integer=False, first=True)
    fc = OpRecord("fc", "linear", calls=2, dense_macs=120, input_elements=40,
                  input_nonzero=14, events=42)
    mask = OpRecord("attn", "mask", calls=2, dense_macs=200)
    for convention in ("paper", "strict"):
        every = _energy(first, convention, samples=2, time_steps=4)
        once = _energy(first, convention, samples=2, time_steps=4, first_layer_once=True)
        assert every.macs == 1944 and once.macs == 1944 / 4 == 486
        assert once.energy_pj == pytest.approx(486 * 4.6)
        for f in (False, True):  # only the first layer is affected by the switch
            assert _energy(fc, convention, samples=2, time_steps=4, first_layer_once=f).sops == 21
            e = _energy(mask, convention, samples=2, time_steps=4, first_layer_once=f)
            assert e.mask_ops == 100 and e.energy_pj == 0
