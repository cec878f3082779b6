"""V-MoE's router by hand: capacity arithmetic, slot order with and without Batch Priority
Routing, the importance and load losses, no noise at evaluation, raw combine weights."""
import math

import pytest
import torch

from spikemoe.moe import NoisyTopKRouter, assign_slots, capacity_per_group
from spikemoe.moe.vmoe_router import cv_squared, importance_loss, load_loss


@pytest.mark.parametrize("S, k, E, C, expected", [
    (16, 2, 8, 1.05, 8),     # 16*2*1.05/8 = 4.2 -> ceil 5 -> next multiple of 4: 8
    (16, 2, 8, 1.0, 4),      # 4.0 -> 4 -> 4
    (16, 2, 8, 0.1, 4),      # 0.4 -> 1 -> 4
    (100, 2, 8, 1.25, 32),   # 31.25 -> 32 -> 32
    (8 * 197, 2, 8, 1.05, 416),  # 8 ViT-S/16 images: 1576*2*1.05/8 = 413.7 -> 414 -> 416
    (34, 2, 4, 1.05, 20),    # test_vmoe, 2 images of 17 tokens: 17.85 -> 18 -> 20
])
def test_capacity_is_ceil_of_skc_over_e_rounded_up_to_a_multiple_of_4(S, k, E, C, expected):
    assert capacity_per_group(S, k, E, C) == expected


def test_capacity_rounds_as_vmoe_float_error_included_or_by_decimals():
    # vmoe's compute_capacity: ceil((S k) C / E) in floats. 200 * 1.1 / 5 = 44.00000000000001
    # -> ceil 45 -> next multiple of 4: 48 (vmoe's value); rounded to 9 decimals: 44 -> 44
    assert 200 * 1.1 / 5 > 44
    assert capacity_per_group(100, 2, 5, 1.1) == 48
    assert capacity_per_group(100, 2, 5, 1.1, rounding="decimal") == 44
    # 50*2*1.1/2 = 55.00000000000001: vmoe 56, by decimals 55 (no multiple-of-4 padding)
    assert capacity_per_group(50, 2, 2, 1.1, multiple_of=1) == 56
    assert capacity_per_group(50, 2, 2, 1.1, multiple_of=1, rounding="decimal") == 55
    router = NoisyTopKRouter(4, 5, 2, capacity_factor_eval=1.1).eval()
    assert router.capacity(100) == 48
    with pytest.raises(ValueError, match="capacity_factor must be > 0"):
        capacity_per_group(16, 2, 8, 0.0)
    with pytest.raises(ValueError, match="rounding must be one of"):
        capacity_per_group(16, 2, 8, 1.0, rounding="up")


def test_training_and_evaluation_capacity_factors_are_separate():
    router = NoisyTopKRouter(4, 8, 2, capacity_factor_train=1.05, capacity_factor_eval=0.5)
    assert router.train().capacity(16) == 8  # 4.2 -> 5 -> 8
    assert router.eval().capacity(64) == 8  # 64*2*0.5/8 = 8 -> 8


# Four tokens, three experts, k = 2, capacity 1 slot per expert.
#   token  gates             1st choice   2nd choice
#   t0     [.5, .3, .2]      e0 (.5)      e1 (.3)
#   t1     [.1, .7, .2]      e1 (.7)      e2 (.2)
#   t2     [.6, .1, .3]      e0 (.6)      e2 (.3)
#   t3     [.15, .25, .6]    e2 (.6)      e1 (.25)
GATES = torch.tensor([[[.5, .3, .2], [.1, .7, .2], [.6, .1, .3], [.15, .25, .6]]])


def test_vanilla_order_places_first_choices_in_token_order_then_second_choices():
    # Priority order: t0-e0, t1-e1, t2-e0, t3-e2 | t0-e1, t1-e2, t2-e2, t3-e1.
    # Slots (count of earlier assignments to the same expert):
    #   t0-e0 0, t1-e1 0, t2-e0 1, t3-e2 0 | t0-e1 1, t1-e2 1, t2-e2 2, t3-e1 2
    expert, combine, slot, kept = assign_slots(GATES, k=2, capacity=1, batch_priority=False)
    assert expert[0].tolist() == [[0, 1], [1, 2], [0, 2], [2, 1]]
    assert slot[0].tolist() == [[0, 1], [0, 1], [1, 2], [0, 2]]
    # capacity 1: only slot 0 survives; t2 loses both choices (its e0 went to t0 first)
    assert kept[0].tolist() == [[True, False], [True, False], [False, False], [True, False]]
    torch.testing.assert_close(combine[0], torch.tensor([[.5, .3], [.7, .2], [.6, .3], [.6, .25]]))


def test_batch_priority_routing_serves_the_most_confident_tokens_first():
    # BPR sorts tokens by their largest gate: t1 (.7), t2 (.6), t3 (.6, tie: token order), t0 (.5).
    # Priority order: t1-e1, t2-e0, t3-e2, t0-e0 | t1-e2, t2-e2, t3-e1, t0-e1.
    # Slots: t1-e1 0, t2-e0 0, t3-e2 0, t0-e0 1 | t1-e2 1, t2-e2 2, t3-e1 1, t0-e1 2
    expert, _, slot, kept = assign_slots(GATES, k=2, capacity=1, batch_priority=True)
    assert expert[0].tolist() == [[0, 1], [1, 2], [0, 2], [2, 1]]  # choices do not change
    assert slot[0].tolist() == [[1, 2], [0, 1], [0, 2], [0, 1]]  # back in token order
    # now t0, the least confident token, is the one dropped entirely, not t2
    assert kept[0].tolist() == [[False, False], [True, False], [True, False], [True, False]]
    # capacity 2 keeps every slot < 2: t2-e2 (slot 2) and t0-e1 (slot 2) are dropped
    _, _, _, kept2 = assign_slots(GATES, k=2, capacity=2, batch_priority=True)
    assert kept2[0].tolist() == [[True, False], [True, True], [True, False], [True, True]]


def test_groups_are_routed_independently():
    two = torch.cat([GATES, GATES.flip(1)])  # [2, 4, 3]: the second group in reverse order
    _, _, slot, _ = assign_slots(two, k=2, capacity=1, batch_priority=False)
    assert slot[0].tolist() == [[0, 1], [0, 1], [1, 2], [0, 2]]  # unchanged by group 1
    # reversed: t3, t2, t1, t0 -> first choices e2 0, e0 0, e1 0, e0 1 | e1 1, e2 1, e2 2, e1 2
    assert slot[1].tolist() == [[0, 1], [0, 1], [0, 2], [1, 2]]


def test_importance_loss_by_hand():
    # logits [[0, 0], [ln 3, 0]] -> softmax rows [.5, .5] and [.75, .25]
    # Imp = [1.25, .75]: mean 1, population std .25 -> (std/mean)^2 = .0625
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0]]])
    torch.testing.assert_close(importance_loss(logits), torch.tensor([0.0625]))
    assert cv_squared(torch.tensor([2.0, 2.0, 2.0])).item() == 0  # balanced: no loss


def test_load_loss_by_hand():
    # k = 1, sigma = 1. One token: clean logits [1, 0], noisy [1.2, -.3] -> threshold 1.2.
    # p = Phi((logit - 1.2) / 1) = [Phi(-.2), Phi(-1.2)] = [.420740, .115070]
    # load = p (one token); (std/mean)^2 = ((p0 - p1) / (p0 + p1))^2 = (.305670/.535810)^2 = .325450
    loss = load_loss(torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[1.2, -0.3]]]), 1.0, 1)
    assert loss.item() == pytest.approx(0.325450, abs=1e-5)
    # k = 2, sigma = .5, E = 3: clean [1, 0, 0], noisy [1.1, .2, -.4] -> 2nd largest .2
    # p = Phi(([1, 0, 0] - .2) / .5) = [Phi(1.6), Phi(-.4), Phi(-.4)] = [.945201, .344578, .344578]
    # mean .544786; var = (.400415^2 + 2 * .200208^2) / 3 = .080166 -> cv^2 = .080166/.296792 = .270110
    loss = load_loss(torch.tensor([[[1.0, 0.0, 0.0]]]), torch.tensor([[[1.1, 0.2, -0.4]]]), 0.5, 2)
    assert loss.item() == pytest.approx(0.270110, abs=1e-5)


def _router(E=3, D=2, **kw):
    router = NoisyTopKRouter(D, E, 2, **kw)
    with torch.no_grad():  # logits = X W^T with W rows [1, 0], [0, 1], [1, 1]
        router.gate.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    return router


def test_no_noise_at_evaluation_and_combine_weights_are_raw_softmax_values():
    router = _router().eval()
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]]])  # [G=1, S=3, D=2]
    out = router(x)
    # logits = [[1, 0, 1], [0, 2, 2], [.5, .5, 1]]: exactly X W^T, no noise
    gates = torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 2.0], [0.5, 0.5, 1.0]]).softmax(-1)
    torch.testing.assert_close(out.combine[0], gates.topk(2).values)
    # not renormalised: each token's two weights sum to less than 1
    # e.g. token 0: e^1 / (2 e^1 + e^0) = .4223 each, sum .8446
    assert out.combine[0, 0].sum().item() == pytest.approx(2 * math.e / (2 * math.e + 1))
    assert (out.combine.sum(-1) < 1).all()
    again = router(x)
    assert torch.equal(again.combine, out.combine) and torch.equal(again.slot, out.slot)
    # eval: the load loss is undefined without noise and counted 0; aux = .005 L_imp
    assert out.metrics["load_loss"].item() == 0
    assert out.aux_loss.item() == pytest.approx(0.005 * out.metrics["importance_loss"].item())


def test_training_adds_gaussian_noise_of_std_one_over_e_and_both_losses():
    # E = k = 2, clean logits 0: gates = softmax(eps), eps ~ N(0, sigma^2), sigma = 1/E = .5.
    # log(g_top / g_second) = |eps_0 - eps_1|, and eps_0 - eps_1 ~ N(0, 2 sigma^2): its RMS is
    # sqrt(2) * .5 = .7071.
    torch.manual_seed(0)
    router = NoisyTopKRouter(2, 2, 2).train()
    with torch.no_grad():
        router.gate.weight.zero_()
    out = router(torch.randn(1, 20000, 2))
    log_ratio = (out.combine[..., 0] / out.combine[..., 1]).log()
    assert log_ratio.pow(2).mean().sqrt().item() == pytest.approx(0.7071, rel=0.02)
    assert router(torch.randn(1, 20000, 2)).combine.ne(out.combine).any()  # fresh noise
    m = out.metrics
    assert m["load_loss"].item() >= 0 and m["importance_loss"].item() == pytest.approx(0, abs=1e-12)
    assert out.aux_loss.item() == pytest.approx(
        0.005 * m["importance_loss"].item() + 0.005 * m["load_loss"].item(), rel=1e-6)
    # the same router in evaluation: no noise, every gate exactly 1/2
    assert torch.equal(router.eval()(torch.randn(1, 8, 2)).combine, torch.full((1, 8, 2), 0.5))


def test_router_statistics_are_values_not_module_state():
    router = _router().eval()
    before = set(vars(router))
    out = router(torch.tensor([[[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]]]))
    assert set(vars(router)) == before
    m = out.metrics
    assert m["load"].shape == (3,) and m["importance"].shape == (3,) and m["dropped"].shape == ()
    # 3 tokens, k = 2, capacity ceil(3*2*1.05/3) = 3 -> 4: nothing dropped, 2 choices per token
    assert out.capacity == 4 and m["dropped"].item() == 0
    assert m["load"].sum().item() == pytest.approx(2.0)
    assert m["importance"].sum().item() == pytest.approx(1.0)
    assert not any(v.requires_grad for v in m.values())
