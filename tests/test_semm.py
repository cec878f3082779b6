"""SEMM: the spiking router, EMSA and EMSP, with hand-checkable cases."""
import pytest
import torch
from spikingjelly.activation_based.layer.attention import SpikingSelfAttention

from spikemoe.layers import HeadwiseSpikingAttention
from spikemoe.moe import EMSA, EMSP, SpikingRouter, default_emsp_hidden, router_statistics


def _binary(t):
    return bool(((t == 0) | (t == 1)).all())


def test_router_statistics_by_hand():
    # T=2, B=1, N=2 tokens, E=3 experts.
    r = torch.tensor([[[[1, 0, 0], [0, 0, 0]]],   # t=0: token 0 -> expert 0; token 1 -> none
                      [[[1, 1, 0], [0, 0, 1]]]],  # t=1: token 0 -> experts 0, 1; token 1 -> 2
                     dtype=torch.float32)
    s = router_statistics(r)
    # expert 0 fires for 2 of 4 (t, token) pairs, expert 1 for 1, expert 2 for 1.
    torch.testing.assert_close(s["expert_rate"], torch.tensor([0.5, 0.25, 0.25]))
    torch.testing.assert_close(s["expert_rate_per_step"],
                               torch.tensor([[0.5, 0.0, 0.0], [0.5, 0.5, 0.5]]))
    assert s["routed_to_none"].item() == pytest.approx(0.25)  # 1 of 4 pairs has no expert


def test_router_emits_one_binary_spike_per_token_per_expert():
    router = SpikingRouter(dim=8, num_experts=4)
    r, stats = router(torch.randn(3, 2, 5, 8) * 3)
    assert r.shape == (3, 2, 5, 4) and _binary(r)
    assert stats["expert_rate"].shape == (4,)


class _FixedRouter(torch.nn.Module):
    """Stands in for the router with spikes fixed by the test."""

    def __init__(self, spikes):
        super().__init__()
        self.spikes = spikes

    def forward(self, x):
        r = self.spikes.expand(*x.shape[:-1], -1)
        return r, router_statistics(r)


def _capture_input(module):
    seen = {}
    module.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    return seen


@pytest.mark.parametrize("kernel", ["ssa", "sdsa"])
def test_emsa_router_spikes_select_expert_channel_slots(kernel):
    torch.manual_seed(0)
    emsa = EMSA(dim=32, num_experts=4, kernel=kernel, membrane_shortcut=kernel == "sdsa")
    with torch.no_grad():  # raise Q, K, V firing from ~3% (fresh init) so experts do fire
        emsa.qkv.bn.bias.fill_(1.5)
    x = (torch.rand(4, 3, 16, 32) < 0.5).float() * 2
    seen = _capture_input(emsa.proj.linear)
    emsa.router = _FixedRouter(torch.tensor([1.0, 0.0, 0.0, 1.0]))  # experts 0 and 3 only
    _, stats = emsa(x)
    y = seen["x"]  # Y = sum_i R_i (.) P_i(O_i): [T*B*N, E*d] with d = 8
    assert y.shape == (4 * 3 * 16, 32) and _binary(y)
    assert y[:, 8:24].sum() == 0  # experts 1 and 2 were not routed to
    assert y[:, :8].sum() > 0 and y[:, 24:].sum() > 0  # experts 0 and 3 did fire
    torch.testing.assert_close(stats["expert_rate"], torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert stats["routed_to_none"] == 0
    emsa.router = _FixedRouter(torch.zeros(4))  # no expert: the branch input to W_O is zero
    emsa(x)
    assert seen["x"].sum() == 0


def test_emsa_defaults_share_k_and_v_and_count_parameters():
    C, E = 32, 4
    emsa = EMSA(dim=C)
    d = C // E
    assert emsa.widths == [E * d, d, d]  # per-expert Q; one shared K and V of expert width
    # Q C*E*d + K C*d + V C*d (+ biases) + BN; W_O E*d*C (+ bias) + BN; router C*E (+ bias) + BN.
    expected = (C * (E * d + 2 * d) + (E * d + 2 * d) + 2 * (E * d + 2 * d)
                + E * d * C + C + 2 * C + C * E + E + 2 * E)
    assert sum(p.numel() for p in emsa.parameters()) == expected


def test_emsa_with_ssa_sized_experts_and_router_always_on_equals_plain_ssa():
    torch.manual_seed(0)
    emsa = EMSA(dim=16, num_experts=4, per_expert=("q", "k", "v")).eval()
    ssa = HeadwiseSpikingAttention(dim=16, num_heads=4).eval()
    ssa.load_state_dict({k: v for k, v in emsa.state_dict().items() if not k.startswith("router")})
    emsa.router = _FixedRouter(torch.ones(4))
    x = (torch.rand(3, 2, 9, 16) < 0.4).float()
    torch.testing.assert_close(emsa(x)[0], ssa(x)[0])


def test_ssa_equals_spikingjelly_spiking_self_attention():
    # Same weights in both; SpikingJelly's layout is [T, B, C, N], ours [T, B, N, C].
    torch.manual_seed(0)
    C, H = 16, 4
    ours = HeadwiseSpikingAttention(dim=C, num_heads=H, kernel="ssa").eval()
    ref = SpikingSelfAttention(dim=C, num_heads=H).eval()
    with torch.no_grad():
        ours.qkv.linear.weight.copy_(ref.qkv_conv_bn[0].weight.squeeze(-1))
        ours.qkv.linear.bias.zero_()
        ours.proj.linear.weight.copy_(ref.proj_conv_bn[0].weight.squeeze(-1))
        ours.proj.linear.bias.zero_()
        for mine, theirs in ((ours.qkv.bn, ref.qkv_conv_bn[1]), (ours.proj.bn, ref.proj_conv_bn[1])):
            mine.weight.copy_(torch.rand_like(mine.weight) * 4 + 1)  # make every stage fire
            mine.bias.copy_(torch.rand_like(mine.bias))
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
    x = (torch.rand(4, 2, 24, C) < 0.5).float()
    out = ours(x)[0]
    assert out.sum() > 0
    torch.testing.assert_close(out, ref(x.transpose(2, 3)).transpose(2, 3))


def test_emsp_gate_and_product_are_binary_and_route_per_channel():
    torch.manual_seed(0)
    emsp = EMSP(dim=12)
    assert emsp.hidden == default_emsp_hidden(12) == 64  # 2 round(8 * 12 / 3)
    seen_gate = {}
    emsp.gate_lif.register_forward_hook(lambda m, a, out: seen_gate.__setitem__("g", out))
    seen_y = _capture_input(emsp.fc2.linear)
    x = (torch.rand(2, 3, 6, 12) < 0.5).float() * 3
    out, stats = emsp(x, grid=(2, 3))
    g = seen_gate["g"]  # [T, B, h/2, H, W]
    assert g.shape == (2, 3, 32, 2, 3) and _binary(g)
    assert _binary(seen_y["x"])  # Y = G (.) Z2
    assert out.shape == x.shape
    assert stats["expert_rate"].shape == (32,)
    expected_rate = g.float().mean(dim=(0, 1, 3, 4))
    torch.testing.assert_close(stats["expert_rate"], expected_rate)
    with pytest.raises(ValueError, match="token grid"):
        emsp(x, grid=(4, 4))


def test_emsp_default_width_matches_a_ratio_four_mlp():
    # fc1 + fc2 weights = C h + (h / 2) C = 1.5 h C ~ 8 C^2 (the ratio-4 MLP's count).
    for C in (256, 384, 512, 768):
        h = default_emsp_hidden(C)
        assert abs(1.5 * h * C - 8 * C * C) / (8 * C * C) < 0.002
