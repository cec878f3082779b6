"""SDT / STT routing parts by hand: surprise and gate arithmetic, the detached causal moving
average, per-sequence top-k in time order, threshold selection, the causal routers, and
running a block on the selected tokens of each sequence only."""
import math

import pytest
import torch
from torch import nn

from spikemoe.layers.causal_transformer import DecoderBlock
from spikemoe.moe.surprise import (
    SurpriseGate,
    causal_moving_average,
    change_surprise,
    static_surprise,
)
from spikemoe.moe.token_selection import (
    DepthRouter,
    TimescaleRouter,
    gate_regulariser,
    router_agreement,
    router_loss,
    run_selected,
    selected_indices,
    threshold_mask,
    topk_mask,
)


def _sigmoid(z):
    return 1 / (1 + math.exp(-z))


def test_surprise_and_gate_match_hand_arithmetic():
    # One sequence, two tokens, d = 2.
    dx = torch.tensor([[[2.0, 0.0], [0.0, 4.0]]])      # actual residuals
    dx_hat = torch.tensor([[[1.0, 0.0], [0.0, 4.0]]])  # predictions
    # D_st = ||dx||^2 / d = [(4 + 0)/2, (0 + 16)/2] = [2, 8]
    assert static_surprise(dx).tolist() == [[2.0, 8.0]]
    # D_ch = ||dx - dx_hat||^2 / d = [(1 + 0)/2, 0] = [0.5, 0]
    assert change_surprise(dx, dx_hat).tolist() == [[0.5, 0.0]]
    const = dict(beta_schedule="constant", beta_ce_start=1.0, beta_cu_start=1.0)
    out = SurpriseGate(**const)(dx, dx_hat)  # o_ce = 1.025, m_cu = 1.1, betas 1
    log_o = math.log(1.025)  # 0.0246926
    # CE = D_st - (D_ch - log o_ce) = [2 - 0.5 + 0.0247, 8 - 0 + 0.0247] = [1.5247, 8.0247]
    ce = [2 - (0.5 - log_o), 8 - (0 - log_o)]
    # MA = [2, (2 + 8)/2] = [2, 5];  CU = D_st - 1.1 MA = [2 - 2.2, 8 - 5.5] = [-0.2, 2.5]
    cu = [-0.2, 2.5]
    torch.testing.assert_close(out.ce, torch.tensor([ce]))
    torch.testing.assert_close(out.cu, torch.tensor([cu]))
    # g = s(CE) + s(CU) - s(CE) s(CU):  token 0: 0.8212 + 0.4502 - 0.3697 = 0.9017
    g = [_sigmoid(a) + _sigmoid(b) - _sigmoid(a) * _sigmoid(b) for a, b in zip(ce, cu)]
    torch.testing.assert_close(out.g, torch.tensor([g]))
    assert abs(g[0] - 0.9017) < 1e-4
    # betas scale CE and CU inside the sigmoids: b_ce = 2 gives s(2 CE)
    g2 = SurpriseGate(beta_schedule="constant", beta_ce_start=2.0, beta_cu_start=0.5)(
        dx, dx_hat).g[0, 0].item()
    a, b = _sigmoid(2 * ce[0]), _sigmoid(0.5 * cu[0])
    assert g2 == pytest.approx(a + b - a * b, abs=1e-6)
    # the CE-only gate of the reference since 027d970: g = s(b_ce CE)
    g3 = SurpriseGate(**const, gate_mode="ce")(dx, dx_hat).g
    torch.testing.assert_close(g3, torch.tensor([[_sigmoid(c) for c in ce]]))


def test_moving_average_is_causal_windowed_and_detached():
    d = torch.tensor([[2.0, 4.0, 8.0, 6.0]])
    # W = 2: [2, (2+4)/2, (4+8)/2, (8+6)/2]; W = 100: running means [2, 3, 14/3, 5]
    assert causal_moving_average(d, 2).tolist() == [[2.0, 3.0, 6.0, 7.0]]
    torch.testing.assert_close(causal_moving_average(d, 100), torch.tensor([[2, 3, 14 / 3, 5]]))
    # streaming: the history of earlier tokens gives the same MA as the whole sequence
    gate = SurpriseGate(window=3)
    dx = torch.randn(1, 5, 4, generator=torch.Generator().manual_seed(0))
    full = gate(dx, torch.zeros_like(dx)).g
    hist = static_surprise(dx[:, :3])[:, 1:]  # the last W - 1 = 2 values
    torch.testing.assert_close(gate(dx[:, 3:4], torch.zeros(1, 1, 4), hist).g, full[:, 3:4])
    # detached: g_1 depends on dx_0 only through MA(D_st), so no gradient reaches dx_0
    dx = torch.tensor([[[2.0, 0.0], [0.0, 4.0]]], requires_grad=True)
    SurpriseGate()(dx, torch.zeros(1, 2, 2)).g[0, 1].backward()
    assert dx.grad[0, 0].abs().sum() == 0 and dx.grad[0, 1].abs().sum() > 0
    # and the learnable m_cu and o_ce do receive gradients
    gate = SurpriseGate()
    gate(dx.detach(), torch.zeros(1, 2, 2)).g.sum().backward()
    assert gate.m_cu.grad != 0 and gate.o_ce.grad != 0


def test_topk_is_per_sequence_in_time_order():
    scores = torch.tensor([[0.7, 0.1, 0.9, 0.2, 0.8, 0.3],
                           [0.0, 0.6, 0.5, 0.4, 0.1, 0.9]])
    mask = topk_mask(scores, 0.5)  # k = floor(0.5 * 6) = 3 per sequence
    assert mask.tolist() == [[True, False, True, False, True, False],
                             [False, True, True, False, False, True]]
    idx, valid = selected_indices(mask)
    # row 0 by score is 2 (.9), 4 (.8), 0 (.7); kept in TIME order: 0, 2, 4
    assert idx.tolist() == [[0, 2, 4], [1, 2, 5]] and valid.all()
    assert topk_mask(scores[:, :5], 0.5).sum(1).tolist() == [2, 2]  # floor(2.5) = 2
    assert topk_mask(torch.ones(1, 4), 0.5).tolist() == [[True, True, False, False]]  # ties: earlier
    # one token: floor(0.5) = 0, the reference's max(1, .) keeps it; the bare floor runs none
    assert topk_mask(scores[:, :1], 0.5).tolist() == [[True], [True]]
    assert not topk_mask(scores[:, :1], 0.5, min_one=False).any()
    assert topk_mask(scores[:, :3], 0.0).sum(1).tolist() == [1, 1]  # max(1, 0) = 1
    with pytest.raises(ValueError, match="gamma must be in"):
        topk_mask(scores, 1.5)


def test_threshold_selection_pads_per_sequence_and_regularises_the_mean_gate():
    g = torch.tensor([[0.8, 0.5, 0.75, 0.9], [0.1, 0.2, 0.76, 0.3]])
    mask = threshold_mask(g)  # g >= 0.75
    assert mask.tolist() == [[True, False, True, True], [False, False, True, False]]
    idx, valid = selected_indices(mask)
    # row 1 has one token; padding (valid False) follows it and points at unselected tokens
    assert idx[0].tolist() == [0, 2, 3] and valid.tolist() == [[True] * 3, [True, False, False]]
    assert idx[1, 0] == 2 and not mask[1, idx[1, 1:]].any()
    # mean gate = (0.8 + 0.5 + 0.75 + 0.9 + 0.1 + 0.2 + 0.76 + 0.3) / 8 = 4.31 / 8
    assert gate_regulariser(g).item() == pytest.approx(4.31 / 8)


class _AddOne(nn.Module):
    """A fake block: records what it was given, returns x + 1."""

    def forward(self, x, positions, key_valid=None, cache=None):
        self.seen = (x.clone(), positions.clone(), key_valid.clone())
        return x + 1


def test_run_selected_updates_only_the_selected_tokens_by_g():
    x = torch.arange(8.0).view(2, 4, 1)  # sequence 0: 0 1 2 3, sequence 1: 4 5 6 7
    mask = torch.tensor([[False, True, False, True], [True, False, False, False]])
    g = torch.full((2, 4), 0.5)
    block = _AddOne()
    out = run_selected(block, x, torch.arange(4).expand(2, 4), mask, g)
    # x_t + g (Block(x)_t - x_t) = x_t + 0.5 on selected tokens, x_t elsewhere
    assert out.squeeze(-1).tolist() == [[0, 1.5, 2, 3.5], [4.5, 5, 6, 7]]
    xs, pos, valid = block.seen
    # the block saw each sequence's own selected tokens, time order, original positions
    assert xs.squeeze(-1)[0].tolist() == [1, 3] and pos.tolist()[0] == [1, 3]
    assert xs.squeeze(-1)[1, 0] == 4 and pos[1, 0] == 0 and valid.tolist() == [[1, 1], [1, 0]]
    assert torch.equal(run_selected(block, x, torch.arange(4).expand(2, 4),
                                    torch.zeros(2, 4, dtype=torch.bool)), x)  # none: no run


def test_selected_attention_reads_neither_later_tokens_nor_other_sequences():
    # The reference-code bug: packing the batch's selected tokens into one sequence in
    # score order. Here a selected token's output must not change when a LATER selected
    # token of its sequence, or any token of another sequence, changes.
    torch.manual_seed(0)
    block = DecoderBlock(16, 2, 32).eval()
    x = torch.randn(2, 6, 16)
    pos = torch.arange(6).expand(2, 6)
    scores = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.3, 0.7], [0.9, 0.1, 0.8, 0.2, 0.7, 0.3]])
    mask = topk_mask(scores, 0.5)  # row 0: tokens 1, 3, 5 (score order 1, 3, 5)
    base = run_selected(block, x, pos, mask)
    y = x.clone()
    y[0, 5] += 10  # a later selected token of sequence 0
    y[1] += 10  # all of sequence 1
    out = run_selected(block, y, pos, mask)
    torch.testing.assert_close(out[0, :5], base[0, :5])
    # and the selected tokens attend among themselves: token 3 ignores unselected token 2
    y = x.clone()
    y[0, 2] += 10
    torch.testing.assert_close(run_selected(block, y, pos, mask)[0, 3], base[0, 3])


@pytest.mark.parametrize("router_cls", [DepthRouter, TimescaleRouter])
def test_causal_routers_never_read_the_future(router_cls):
    torch.manual_seed(0)
    router = router_cls(8)
    x = torch.randn(2, 6, 8)
    base = router(x)
    for t in range(5):
        y = x.clone()
        y[:, t + 1:] = torch.randn(2, 5 - t, 8)
        torch.testing.assert_close(router(y)[:, :t + 1], base[:, :t + 1])
    # streaming one token (with the previous token given, for the router that reads it)
    # equals the full sequence
    prev = {"prev": x[:, 2:3]} if router_cls is TimescaleRouter else {}
    torch.testing.assert_close(router(x[:, 3:4], **prev), base[:, 3:4])


def test_timescale_router_reads_the_previous_token_and_learns_by_bce():
    router = TimescaleRouter(2)
    with torch.no_grad():
        router.linear.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 2.0]]))  # x_t[0] + 2 x_{t-1}[1]
    x = torch.tensor([[[1.0, 3.0], [0.5, 0.0]]], requires_grad=True)
    # t = 0: 1 + 2 * 0 (x_{-1} = 0) = 1;  t = 1: 0.5 + 2 * 3 = 6.5
    logits = router(x)
    assert logits.tolist() == [[1.0, 6.5]]
    teacher = torch.tensor([[True, False]])
    # BCE = mean(-ln s(1), -ln(1 - s(6.5))) = mean(0.3133, 6.5015) = 3.4074
    loss = router_loss(logits, teacher)
    assert loss.item() == pytest.approx((math.log1p(math.exp(-1)) + math.log1p(math.exp(6.5))) / 2)
    loss.backward()
    assert x.grad is None or x.grad.abs().sum() == 0  # routers read the DETACHED stream
    assert router.linear.weight.grad.abs().sum() > 0
    assert router_agreement(logits, teacher).item() == 0.5  # token 0 agrees, token 1 does not
