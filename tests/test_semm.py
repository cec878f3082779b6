"""SEMM: the spiking router, EMSA and EMSP, with hand-checkable cases."""
import pytest
import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.layer.attention import SpikingSelfAttention

import spikemoe
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


def test_emsa_validates_per_expert_under_its_own_name():
    with pytest.raises(ValueError, match="per_expert may only name.*got \\('q', 'x'\\)"):
        EMSA(dim=16, per_expert=("q", "x"))
    with pytest.raises(ValueError, match="per_expert must name at least one"):
        EMSA(dim=16, per_expert=())
    assert EMSA(dim=16, per_expert="k").widths == [4, 16, 4]  # one name is a 1-tuple


@pytest.fixture
def cupy_on_cpu(monkeypatch, tmp_path_factory):
    """backend='cupy' built without CuPy: on CPU tensors the fused kernels run from their
    CPU build (the same CUDA source through a shim), compiled into a temporary folder."""
    from spikemoe import neurons
    from spikemoe.kernels import build_util
    from spikemoe.kernels.cpu_build import load_cpu_kernels

    if build_util.find_compiler("g++") is None:
        pytest.skip("needs g++ to build the kernels for the CPU")
    monkeypatch.setenv("SPIKEMOE_KERNEL_CACHE", str(tmp_path_factory.mktemp("kernels")))
    load_cpu_kernels()
    monkeypatch.setattr(neurons, "_unavailable", lambda backend: None)


def _twin_runs(make, x, fire, call):
    """Build a torch-backend and a cupy-backend module with the same weights, run both on x
    and back-propagate; returns per backend (output, metrics, x.grad, param grads, hooked)."""
    runs = []
    for backend in ("torch", "cupy"):
        torch.manual_seed(0)
        m = make(backend)
        assert m.fused_gate == (backend == "cupy")
        fire(m)
        seen = {}
        neuron_ = m.attn_lif if hasattr(m, "attn_lif") else m.gate_lif
        neuron_.register_forward_hook(
            lambda mod, a, out, seen=seen: seen.__setitem__("s", out.detach()))
        xi = x.clone().requires_grad_(True)
        out, metrics = call(m, xi)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        runs.append((out, metrics, xi.grad, {n: p.grad for n, p in m.named_parameters()},
                     seen["s"]))
    return runs


def test_fused_emsa_gate_equals_unfused(cupy_on_cpu):
    def fire(m):
        with torch.no_grad():
            m.qkv.bn.bias.fill_(1.5)  # experts fire (fresh init fires ~3%)
            m.router.gate.bn.bias.fill_(1.0)  # and the router routes about half the tokens
    x = (torch.rand(4, 2, 9, 32, generator=torch.Generator().manual_seed(1)) < 0.5).float() * 2
    ref, fused = _twin_runs(lambda b: EMSA(dim=32, num_experts=4, backend=b), x, fire,
                            lambda m, xi: m(xi))
    assert fused[0].sum() > 0 and 0 < ref[1]["expert_rate"].mean() < 1
    torch.testing.assert_close(fused[0], ref[0], atol=0, rtol=0)  # spikes: identical
    for k in ref[1]:
        torch.testing.assert_close(fused[1][k], ref[1][k])
    torch.testing.assert_close(fused[2], ref[2], atol=1e-5, rtol=1e-5)
    for name, g in ref[3].items():
        torch.testing.assert_close(fused[3][name], g, atol=1e-5, rtol=1e-5, msg=name)
    torch.testing.assert_close(fused[4], ref[4])  # hooks on attn_lif see its own spikes


def test_fused_emsp_gate_equals_unfused(cupy_on_cpu):
    def fire(m):
        with torch.no_grad():
            m.gate[1].bias.fill_(1.0)
    x = (torch.rand(3, 2, 6, 12, generator=torch.Generator().manual_seed(2)) < 0.5).float() * 3
    ref, fused = _twin_runs(lambda b: EMSP(dim=12, backend=b), x, fire,
                            lambda m, xi: m(xi, grid=(2, 3)))
    assert fused[4].sum() > 0  # the gate fires
    torch.testing.assert_close(fused[0], ref[0], atol=0, rtol=0)
    for k in ref[1]:
        torch.testing.assert_close(fused[1][k], ref[1][k])
    torch.testing.assert_close(fused[2], ref[2], atol=1e-5, rtol=1e-5)
    for name, g in ref[3].items():
        torch.testing.assert_close(fused[3][name], g, atol=1e-5, rtol=1e-5, msg=name)
    torch.testing.assert_close(fused[4], ref[4])  # hooks on gate_lif: G, expert axis 2


@pytest.mark.parametrize("name", ["test_spikformer_semm", "test_spike_driven_semm"])
def test_models_on_the_cupy_backend_equal_the_default_backend(cupy_on_cpu, name):
    # Every LIF fused, EMSA/EMSP gates fused where they apply: same logits, same gradients.
    import spikemoe
    from spikemoe.neurons import FusedLIF

    results = []
    for backend in ("auto", "cupy"):
        torch.manual_seed(0)
        model = spikemoe.create_model(name, backend=backend)
        fused = [m for m in model.modules() if isinstance(m, FusedLIF)]
        assert bool(fused) == (backend == "cupy")
        x = torch.rand(2, *model.input_shape[1:], generator=torch.Generator().manual_seed(3))
        out = model(x)
        out.logits.sum().backward()
        results.append((out.logits.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    for g_fused, g_ref in zip(results[1][1], results[0][1]):
        if g_ref is None:
            assert g_fused is None
        else:
            torch.testing.assert_close(g_fused, g_ref, atol=1e-5, rtol=1e-4)


# --- Issue 12 item 4: STEP's SEMM choices as switches (moe/emsa.py, moe/emsp.py, sizes.py) ---

def test_expert_vth_one_fires_fewer_spikes_than_half():

    low, high = EMSA(32, 4, backend="torch"), EMSA(32, 4, backend="torch", expert_vth=1.0)
    assert float(high.attn_lif.v_threshold) == 1.0 and float(low.attn_lif.v_threshold) == 0.5
    o = torch.rand(2, 3, 16, 4, 8, generator=torch.Generator().manual_seed(0)) * 1.5  # Q K^T V s
    counts = []
    for emsa in (low, high):
        functional.reset_net(emsa)
        spikes = emsa.attn_lif(o)
        assert set(spikes.unique().tolist()) <= {0.0, 1.0}
        counts.append(spikes.sum().item())
    assert 0 < counts[1] < counts[0]


def test_expert_scale_false_drops_the_scale():
    assert EMSA(32, 4, scale=0.125, expert_scale=False).scale == 1.0
    assert EMSA(32, 4, scale=0.125).scale == 0.125


def test_kv_bn_false_removes_the_k_and_v_batchnorm_parameters():
    with_bn, without = EMSA(32, 4), EMSA(32, 4, kv_bn=False)
    wq, wk, wv = with_bn.widths
    assert without.qkv.bn.num_features == wq and with_bn.qkv.bn.num_features == wq + wk + wv
    removed = sum(p.numel() for p in with_bn.parameters()) - sum(p.numel() for p in without.parameters())
    assert removed == 2 * (wk + wv)
    x = (torch.rand(2, 3, 16, 32) < 0.3).float()
    assert without(x)[0].shape == x.shape


def test_emsp_hidden_rules():
    assert EMSP(384, "cifar").hidden == 4 * 384 and EMSP(384, "cifar").fc2.linear.in_features == 2 * 384
    assert EMSP(512, "imagenet").hidden == 16 * (512 // 3) == 2720
    assert EMSP(512, "ratio4").hidden == EMSP(512).hidden == default_emsp_hidden(512) == 2730
    with pytest.raises(ValueError, match="rule"):
        EMSP(64, "bogus")


def test_expert_dim_96_gives_query_width_96_per_expert():
    emsa = EMSA(512, 4, expert_dim=96)
    assert emsa.head_dim == 96 and emsa.widths[0] == 4 * 96
    assert EMSA(512, 4, expert_dim="C/E").head_dim == 128


@pytest.mark.parametrize("name, want", [
    ("spikformer_semm_2_256_dvs", dict(expert_vth=0.5, expert_scale=True, kv_bn=True, d=64)),
    ("spikformer_semm_4_384_cifar", dict(expert_vth=1.0, expert_scale=True, kv_bn=True, d=96,
                                         h=4 * 384)),
    ("spikformer_semm_8_512", dict(expert_vth=1.0, expert_scale=False, kv_bn=False, d=96,
                                   h=16 * (512 // 3))),
])
def test_recipe_defaults_follow_their_source(name, want):
    model = spikemoe.create_model(name)
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    assert float(attn.attn_lif.v_threshold) == want["expert_vth"]
    assert attn.expert_scale is want["expert_scale"] and attn.kv_bn is want["kv_bn"]
    assert attn.head_dim == want["d"]
    if "h" in want:
        assert mlp.hidden == want["h"]


def test_switch_overrides_thread_through_the_factory():
    model = spikemoe.create_model("test_spikformer_semm", expert_vth=1.0, expert_scale=False,
                                  kv_bn=False, expert_dim=6, emsp_hidden="cifar")
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    assert float(attn.attn_lif.v_threshold) == 1.0 and attn.scale == 1.0 and not attn.kv_bn
    assert attn.head_dim == 6 and mlp.hidden == 4 * 32
    with pytest.raises(ValueError, match="model.expert_vth"):
        spikemoe.create_model("test_spikformer", expert_vth=1.0)
    with pytest.raises(ValueError, match="model.expert_scale"):
        spikemoe.create_model("test_spike_driven_semm", expert_scale=False)
    with pytest.raises(ValueError, match="model.emsp_hidden"):
        spikemoe.create_model("test_spikformer_semm", emsp_hidden="bogus")
