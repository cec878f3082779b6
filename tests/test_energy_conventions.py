"""The three counting conventions, SDSA's column sum as additions, the first layer charged once
for a static image and T times for frames, the SSA product order switch, and the Spikformer
papers' first-layer constant. Every count here is done by hand in the comments."""
import pytest
import torch
from torch import nn

from spikemoe.analysis import profile_model
from spikemoe.analysis.energy import COST_TABLES, layer_energy
from spikemoe.analysis.op_counts import count_operations
from spikemoe.analysis.rate_energy import spikformer_energy_mj
from spikemoe.contract import ModelOutput, SpikeMoEModel
from spikemoe.layers.attention import HeadwiseSpikingAttention
from spikemoe.layers.kernels import sdsa_column_sum, ssa_product_order
from spikemoe.neurons import make_lif

FP32 = COST_TABLES["45nm-fp32"]


class _SpikeSum(nn.Module):
    """A Linear fed two spike maps added: counts 0, 1, 2 (a spike-sum residual)."""

    def __init__(self):
        super().__init__()
        self.lif, self.fc = make_lif(backend="torch"), nn.Linear(3, 4)

    def forward(self, x):  # [T, B, 2, C]; a LIF fed 2 * S emits exactly S
        s = self.lif(x)
        return self.fc(s[:, :, 0] + s[:, :, 1])


def test_literal_counts_nonzero_inputs_events_weights_by_value_strict_charges_macs():
    s = torch.tensor([[[[1, 1, 0], [1, 0, 0]]], [[[0, 0, 1], [0, 1, 1]]]], dtype=torch.float32)
    (rec,) = count_operations(_SpikeSum(), 2 * s)[0].layer_records()
    # counts [2, 1, 0] and [0, 1, 2]: 4 nonzero of 6, values summing to 6; dense 2*3*4 = 24
    lit, ev, st = (layer_energy(rec, c, FP32) for c in ("literal", "events", "strict"))
    assert rec.literal_rate == pytest.approx(4 / 6)
    assert (lit.macs, lit.sops) == (0, pytest.approx(16))  # 4/6 * 24
    assert (ev.macs, ev.sops) == (0, 24)  # 6 spikes x 4 outputs
    assert (st.macs, st.sops) == (24, 0)
    assert layer_energy(rec, "paper", FP32) == ev  # the older name


class _SDSA(nn.Module):
    def __init__(self):
        super().__init__()
        self.lif = make_lif(backend="torch")

    def forward(self, x):  # x: [2, T*B, H, N, d] -> K, V spikes
        k, v = self.lif(x).unbind(0)
        return sdsa_column_sum(k, v)


def test_sdsa_column_sum_is_charged_one_ac_per_nonzero_entry_in_every_convention():
    k = torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.float32)  # [N=3, d=2]
    v = torch.tensor([[1, 1], [0, 1], [0, 1]], dtype=torch.float32)
    x = 2 * torch.stack([k, v])[:, None, None]  # [2, 1, 1, 3, 2]
    counter, out = count_operations(_SDSA(), x)
    # K (.) V = [[1, 0], [0, 1], [0, 1]]: 3 nonzero of 6 -> column sums [1, 2]
    assert out.flatten().tolist() == [1, 2]
    recs = {r.kind: r for r in counter.layer_records()}
    assert set(recs) == {"mask", "sum"}
    assert (recs["sum"].events, recs["sum"].dense_macs) == (3, 6)
    for c in ("literal", "events", "strict"):
        e = layer_energy(recs["sum"], c, FP32)
        assert (e.macs, e.sops) == (0, 3) and e.energy_pj == pytest.approx(2.7)
        assert layer_energy(recs["mask"], c, FP32).energy_pj == 0


class _Conv(SpikeMoEModel):
    """T = 2: a static [B, 1, 2, 2] image is repeated; frames [T, B, 1, 2, 2] pass as they are."""

    T, num_classes = 2, 2

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)

    def forward(self, x):
        if x.dim() == 4:
            x = x.unsqueeze(0).expand(2, *x.shape)
        y = self.conv(x.flatten(0, 1))  # [T*B, 2, 2, 2]: 8 outputs x 1 MAC per sample-step
        return ModelOutput(y.reshape(2, -1, 8).mean(0), y.new_zeros(()), {})


@pytest.mark.parametrize("sample, mode, macs", [
    (torch.rand(1, 2, 2), "auto", 8),          # static image: the 2 steps are identical
    (torch.rand(2, 1, 2, 2), "auto", 16),      # event frames: charged T = 2 times
    (torch.rand(1, 2, 2), "T-times", 16),
    (torch.rand(2, 1, 2, 2), "once", 8),
])
def test_first_layer_is_charged_once_for_a_static_image_and_t_times_for_frames(sample, mode,
                                                                               macs):
    p = profile_model(_Conv(), [(sample, 0)], first_layer_once=mode, spread_samples=1)
    assert p.first_layer == mode and p.first_layer_once == (macs == 8)
    for c in ("literal", "events", "strict"):
        assert p.energy[c].macs == macs


def test_ssa_product_order_changes_the_counted_operations_not_the_value():
    torch.manual_seed(0)
    attn = HeadwiseSpikingAttention(8, 1, kernel="ssa", backend="torch").eval()
    x = (torch.rand(1, 1, 4, 8) > 0.5).float()  # [T, B, N=4, C=8], one head of d = 8
    dense, outs = {}, {}
    for order in ("q(kv)", "(qk)v"):
        with ssa_product_order(order):
            counter, (outs[order], _) = count_operations(attn, x)
        dense[order] = [r.dense_macs for r in counter.layer_records() if r.kind == "matmul"]
    assert dense["q(kv)"] == [8 * 4 * 8, 4 * 8 * 8]  # K^T V, then Q (K^T V): N d^2 each
    assert dense["(qk)v"] == [4 * 8 * 4, 4 * 4 * 8]  # Q K^T, then (Q K^T) V: N^2 d each
    assert torch.equal(outs["q(kv)"], outs["(qk)v"])
    with pytest.raises(ValueError, match="q\\(kv\\)"):
        with ssa_product_order("qkv"):
            pass


@pytest.mark.parametrize("sops_g, published_mj", [(6.82, 7.734), (11.09, 11.577), (22.09, 21.477)])
def test_spikformer_rule_reproduces_the_published_imagenet_energies(sops_g, published_mj):
    # Spikformer (ICLR 2023) Table 3, 8-384 / 8-512 / 8-768: 0.9 pJ x SOPs + 4.6 pJ x the T = 4
    # MACs of a 3 -> 64 3x3 conv at 224^2 (346,816,512 -> 1.5953 mJ), the same for every width.
    # SOPs are published to 0.01 G, so the energy is known to 0.9 pJ x 0.005 G = 0.0045 mJ.
    assert spikformer_energy_mj(sops_g * 1e9) == pytest.approx(published_mj, abs=0.0045)
