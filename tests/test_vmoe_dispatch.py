"""Dispatch by sorted bins equals a per-token loop and the dense one-hot einsum, dropped
tokens included; the MoE layer's grouping; only routed tokens' expert matmuls are counted."""
import pytest
import torch
from torch import nn

import spikemoe
from spikemoe.analysis import count_operations
from spikemoe.contract import AUX_LOSS
from spikemoe.moe import (
    VMoEMLP,
    assign_slots,
    dispatch_combine,
    einsum_dispatch_combine,
    sort_into_bins,
)


def _experts(E=3, D=4):
    torch.manual_seed(1)
    return nn.ModuleList(nn.Sequential(nn.Linear(D, 5), nn.GELU(), nn.Linear(5, D)) for _ in range(E))


def _naive(x, expert_index, combine, kept, experts):
    """y[s] = sum over kept choices j of w[s, j] * Expert_e(x[s]), one token at a time."""
    y = torch.zeros_like(x)
    for s in range(x.shape[0]):
        for j in range(expert_index.shape[1]):
            if kept[s, j]:
                e = int(expert_index[s, j])
                y[s] += combine[s, j] * experts[e](x[s : s + 1])[0]
    return y


def test_sorted_bins_by_hand():
    # tokens 0..2, k = 2: (e, kept) = t0 (2, y) (0, y) | t1 (0, y) (1, n) | t2 (2, n) (1, y)
    expert = torch.tensor([[2, 0], [0, 1], [2, 1]])
    kept = torch.tensor([[True, True], [True, False], [False, True]])
    w = torch.tensor([[0.5, 0.2], [0.6, 0.3], [0.4, 0.35]])
    bins = sort_into_bins(expert, w, kept, 3)
    # expert 0: t0, t1 | expert 1: t2 | expert 2: t0 (token order inside each bin)
    assert bins.token.tolist() == [0, 1, 2, 0] and bins.counts == [2, 1, 1]
    torch.testing.assert_close(bins.weight, torch.tensor([0.2, 0.6, 0.35, 0.5]))


@pytest.mark.parametrize("capacity", [1, 2, 8])
@pytest.mark.parametrize("bpr", [False, True])
def test_dispatch_equals_a_per_token_loop_and_the_dense_einsum(capacity, bpr):
    torch.manual_seed(0)
    S, E, k = 10, 3, 2
    x = torch.randn(S, 4)
    gates = torch.randn(1, S, E).softmax(-1)
    expert, combine, slot, kept = (t[0] for t in assign_slots(gates, k, capacity, bpr))
    experts = _experts(E)
    with torch.no_grad():
        y = dispatch_combine(x, sort_into_bins(expert, combine, kept, E), experts)
        expected = _naive(x, expert, combine, kept, experts)
        dense = einsum_dispatch_combine(x, expert, combine, slot, kept, capacity, experts)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(dense, expected)
    dropped = ~kept.any(-1)
    if capacity == 1:  # 3 experts x 1 slot: at most 3 assignments, so most tokens are dropped
        assert dropped.sum() >= S - 3
    assert (y[dropped] == 0).all()  # a dropped token gets zero from the MoE


def test_every_token_dropped_gives_zeros_and_gradients_match_the_loop():
    x = torch.randn(3, 4, requires_grad=True)
    expert = torch.tensor([[0, 1], [1, 2], [2, 0]])
    kept = torch.zeros(3, 2, dtype=torch.bool)
    w = torch.full((3, 2), 0.4)
    experts = _experts()
    y = dispatch_combine(x, sort_into_bins(expert, w, kept, 3), experts)
    assert torch.equal(y, torch.zeros(3, 4))
    y.sum().backward()  # idle experts stay in the graph (DDP needs every parameter used)
    assert all(p.grad is not None and (p.grad == 0).all() for p in experts.parameters())
    experts.zero_grad(set_to_none=True)
    x.grad = None
    kept = torch.tensor([[True, False], [True, True], [False, True]])
    w = torch.tensor([[0.5, 0.2], [0.6, 0.3], [0.4, 0.35]], requires_grad=True)
    dispatch_combine(x, sort_into_bins(expert, w, kept, 3), experts).pow(2).sum().backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    _naive(x, expert, w, kept, experts).pow(2).sum().backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, w.grad)  # the router learns through the combine weights
    assert gw[0, 1] == 0 and gw[2, 0] == 0  # dropped choices get no gradient


def test_layer_routes_groups_of_images_and_a_smaller_last_group():
    torch.manual_seed(0)
    layer = VMoEMLP(8, 16, num_experts=4, k=2, group_images=2).eval()
    seen = []
    layer.router.register_forward_hook(lambda m, a, out: seen.append((a[0].shape, out.capacity)))
    y, metrics = layer(torch.randn(5, 3, 8))  # 5 images of 3 tokens
    aux = metrics.pop(AUX_LOSS)  # the block contract: the aux loss rides in the metrics
    # 2 groups of 2 images (6 tokens): capacity ceil(6*2*1.05/4) = ceil(3.15) = 4 -> 4;
    # then 1 image (3 tokens): ceil(1.575) = 2 -> 4
    assert seen == [((2, 6, 8), 4), ((1, 3, 8), 4)]
    assert y.shape == (5, 3, 8) and aux.ndim == 0
    assert metrics["load"].shape == (4,) and metrics["dropped"].item() == 0
    # experts start as copies of one another (shared initialisation)
    for e in layer.experts[1:]:
        assert all(torch.equal(p, q) for p, q in zip(e.parameters(), layer.experts[0].parameters()))
    assert not any(torch.equal(p, q) for p, q in zip(
        VMoEMLP(8, 16, 4, shared_init=False).experts[1].parameters(),
        VMoEMLP(8, 16, 4, shared_init=False).experts[0].parameters()) if p.ndim == 2)


def _expert_macs(counter):
    return sum(r.dense_macs for r in counter.layer_records() if ".experts." in r.layer)


def test_only_routed_tokens_expert_matmuls_are_counted():
    torch.manual_seed(0)
    x = torch.rand(2, 4, 2, 16, 16)  # [T=2, B=4, 2, 16, 16]: 4 images of 1 + 16 tokens
    D, H = 32, 128
    per_token = 2 * D * H  # fc1 (D x H) + fc2 (H x D) multiply-adds per routed token
    counts = {}
    for c in (1.05, 0.1):
        model = spikemoe.create_model("test_vmoe", capacity_factor_eval=c).eval()
        counter, out = count_operations(model, x)
        # kept assignments = sum_e load_e * tokens (load: kept assignments per token)
        kept = round(out.metrics["blocks.1.mlp.load"].sum().item() * 4 * 17)
        assert _expert_macs(counter) == kept * per_token
        counts[c] = (kept, _expert_macs(counter), counter)
    # C = 1.05: groups of 2 images = 34 tokens, capacity ceil(34*2*1.05/4) = 18 -> 20 per
    # expert: every one of the 2 * 68 = 136 assignments fits only if no expert gets > 20 of a
    # group's 68; C = 0.1: capacity ceil(1.7) = 2 -> 4, at most 4 experts x 4 x 2 groups = 32
    assert counts[0.1][0] <= 32 < counts[1.05][0]
    assert counts[0.1][1] < counts[1.05][1] / 3
    # everything else (attention, dense MLP, router, head) is the same in both
    other = [{(r.layer, r.kind): r.dense_macs for r in cnt.layer_records() if ".experts." not in r.layer}
             for _, _, cnt in counts.values()]
    assert other[0] == other[1]
