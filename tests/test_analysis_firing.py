"""FiringRateMonitor: running sums equal rates from stored spikes; router statistics by
hand; hooks removed on exit (also on error); state that does not grow with batches.

A LIF fed ``2 * S`` (S binary) emits exactly S: from V = 0, H = 2 / 2 = 1 fires and
resets to 0; H = 0 / 2 = 0 stays silent (tau 2, V_th 1, hard reset).
"""
import pytest
import torch
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

import spikemoe
from spikemoe.analysis.firing_rates import FiringRateMonitor
from spikemoe.contract import mark_router_neuron
from spikemoe.moe import router_statistics
from spikemoe.neurons import make_lif


def _batches(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 4, (2, b, 2, 16, 16), generator=g).float() for b in sizes]


def test_rates_over_batches_equal_rates_from_stored_spikes(excite):
    model = excite(spikemoe.create_model("test_spikformer_semm")).eval()
    stored: dict[str, list[torch.Tensor]] = {}
    for name, m in model.named_modules():
        if isinstance(m, BaseNode):
            m.register_forward_hook(
                lambda mod, a, out, name=name: stored.setdefault(name, []).append(out.clone()))
    with torch.no_grad(), FiringRateMonitor(model) as mon:
        for x in _batches([3, 1, 2]):  # batch sizes differ: sums must weight by elements
            model(x)
    res = mon.result()
    assert set(res.layers) == set(stored) and len(stored) > 10
    total_spikes = total_elements = 0
    for name, outs in stored.items():
        s = torch.cat(outs, dim=1)  # [T, sum(B), ...]
        per_step = s.flatten(1).mean(1, dtype=torch.float64)  # [T]
        layer = res.layers[name]
        assert layer["rate_per_step"] == pytest.approx(per_step.tolist(), abs=1e-12), name
        assert layer["rate"] == pytest.approx(float(s.double().mean()), abs=1e-12), name
        assert layer["spikes"] == float(s.sum()) and layer["elements"] == s.numel()
        total_spikes, total_elements = total_spikes + float(s.sum()), total_elements + s.numel()
    assert res.mean_rate() == pytest.approx(total_spikes / total_elements)
    assert 0 < res.mean_rate() < 1  # the excited net fires: the comparison is not vacuous

    # The two router neurons (EMSA's router LIF, expert axis -1; EMSP's gate, axis 2) get
    # router statistics equal to router_statistics on the stored spikes, experts last.
    routers = {"blocks.0.attn.router.lif": -1, "blocks.0.mlp.gate_lif": 2}
    assert set(res.routers) == set(routers)
    assert [n for n, v in res.layers.items() if v["router"]] == list(routers)
    for name, axis in routers.items():
        r = torch.cat([o.movedim(axis, -1).flatten(2, -2) for o in stored[name]], dim=1)
        ref = router_statistics(r)  # r: [T, B, tokens, E]
        got = res.routers[name]
        assert got["num_experts"] == r.shape[-1]
        assert any(0 < a < 1 for a in got["expert_rate"])  # routing depends on the token
        torch.testing.assert_close(torch.tensor(got["expert_rate_per_step"], dtype=torch.float64),
                                   ref["expert_rate_per_step"].double())
        torch.testing.assert_close(torch.tensor(got["expert_rate"], dtype=torch.float64), ref["expert_rate"].double())
        assert got["routed_to_none"] == pytest.approx(float(ref["routed_to_none"]))
        usage = r.sum(dim=(0, 1, 2)).double() / r.sum()
        torch.testing.assert_close(torch.tensor(got["expert_usage"], dtype=torch.float64), usage)


def _router_net(axis):
    return nn.Sequential(mark_router_neuron(make_lif(), expert_axis=axis))


@pytest.mark.parametrize("axis", [-1, 2])
def test_router_statistics_by_hand_over_two_batches(axis):
    # Batch 1: T=2, B=1, N=2 tokens, E=3 experts (as in test_semm):
    r1 = torch.tensor([[[[1, 0, 0], [0, 0, 0]]],    # t=0: token 0 -> expert 0; token 1 -> none
                       [[[1, 1, 0], [0, 0, 1]]]],   # t=1: token 0 -> 0, 1; token 1 -> 2
                      dtype=torch.float32)
    # Batch 2: one token.
    r2 = torch.tensor([[[[0, 1, 0]]],               # t=0: -> expert 1
                       [[[1, 1, 0]]]],              # t=1: -> experts 0, 1
                      dtype=torch.float32)
    net = _router_net(axis)
    # axis 2: the experts are channels of a [T, B, E, N] map (EMSP's gate layout)
    layout = (lambda r: r) if axis == -1 else (lambda r: r.movedim(-1, 2))
    with FiringRateMonitor(net) as mon:
        for r in (r1, r2):
            net(2 * layout(r))
    got = mon.result().routers["0"]
    # Spikes per expert: t=0 [1, 0, 0] + [0, 1, 0] = [1, 1, 0];
    #                    t=1 [1, 1, 1] + [1, 1, 0] = [2, 2, 1]; tokens per step 2 + 1 = 3.
    torch.testing.assert_close(torch.tensor(got["expert_rate_per_step"], dtype=torch.float64),
                               torch.tensor([[1, 1, 0], [2, 2, 1]], dtype=torch.float64) / 3)
    assert got["expert_rate"] == pytest.approx([3 / 6, 3 / 6, 1 / 6])  # over 6 (t, token) pairs
    assert got["expert_usage"] == pytest.approx([3 / 7, 3 / 7, 1 / 7])  # of 7 routing spikes
    assert got["routed_to_none"] == pytest.approx(1 / 6)  # only (t=0, batch 1, token 1)
    layer = mon.result().layers["0"]
    # 7 spikes of 2 steps x 3 tokens x 3 experts = 18; per step 2/9 and 5/9.
    assert layer["rate"] == pytest.approx(7 / 18) and layer["router"]
    assert layer["rate_per_step"] == pytest.approx([2 / 9, 5 / 9])


def test_runs_with_more_time_steps_extend_the_per_step_sums():
    net = _router_net(-1)
    with FiringRateMonitor(net) as mon:
        net(2 * torch.ones(2, 1, 1, 2))  # T=2: all fire
        net(torch.zeros(3, 1, 1, 2))     # T=3: silent
    layer = mon.result().layers["0"]
    # steps 0, 1: 2 spikes of 4 elements; step 2 seen only by the second run: 0 of 2.
    assert layer["rate_per_step"] == pytest.approx([0.5, 0.5, 0.0])
    assert layer["rate"] == pytest.approx(4 / 10)
    # per step: 1 token of each run; both experts fire in the first run only.
    assert mon.result().routers["0"]["expert_rate_per_step"] == [[0.5, 0.5], [0.5, 0.5],
                                                                 [0.0, 0.0]]


def _hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_are_removed_on_exit_also_when_the_block_raises():
    model = spikemoe.create_model("test_spike_driven_semm").eval()
    x = _batches([1])[0]
    before = _hook_count(model)
    mon = FiringRateMonitor(model)
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad(), mon:
        assert _hook_count(model) == before + len(mon.neurons) > before
        model(x)
        raise RuntimeError("boom")
    assert _hook_count(model) == before
    seen = mon.result()
    with torch.no_grad():
        model(x)  # not recorded any more
    assert mon.result() == seen and mon.result().mean_rate() == seen.mean_rate()
    with torch.no_grad(), mon:  # and a normal exit removes them too
        model(x)
    assert _hook_count(model) == before


def _state_size(mon):
    """Tensors (count, total numel) the monitor keeps between batches."""
    tensors = [t for acc in (*mon._sums.values(), *mon._routers.values())
               for t in vars(acc).values() if torch.is_tensor(t)]
    return len(tensors), sum(t.numel() for t in tensors)


def test_monitor_state_does_not_grow_with_the_number_of_batches(excite):
    model = excite(spikemoe.create_model("test_spikformer_semm")).eval()
    sizes = {}
    for n in (2, 20):
        with torch.no_grad(), FiringRateMonitor(model) as mon:
            for x in _batches([1] * n):
                model(x)
        sizes[n] = _state_size(mon)
        elements = mon.result().layers["blocks.0.attn.router.lif"]["elements"]
        assert elements == n * 2 * 16 * 4  # T=2, 16 tokens, 4 experts per batch: it did count
    # Per neuron layer 2 tensors of [T]; per router 3 more ([T, E], [T], [T]).
    assert sizes[2] == sizes[20]
    n_layers, n_routers = len(mon.neurons), len(mon._routers)
    assert sizes[20][0] == 2 * n_layers + 3 * n_routers
