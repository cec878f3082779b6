"""SDT / STT against the reference code (fredericowieser/Dynamic-Transformers b401af0): the
beta ramp of the surprise gate (by hand, its state resumed exactly, the gate near-binary at
the end), the SDT causal router's input, and STT's mean-g regulariser in both modes."""
import math

import pytest
import torch

import spikemoe
from spikemoe.moe.surprise import SurpriseGate, beta_at, kl_change_surprise
from spikemoe.moe.token_selection import DepthRouter


def test_beta_ramp_matches_the_reference_schedule_by_hand():
    # start 0.1, end 100, 100 warm-up steps, ramp over 800 steps (a 900-step run)
    ramp = dict(start=0.1, end=100.0, warmup_steps=100, ramp_steps=800)
    assert beta_at(0, **ramp) == 0.1 and beta_at(100, **ramp) == 0.1  # warm-up: s <= 100
    # s = 500: 0.1 + (500 - 100) / 800 * (100 - 0.1) = 0.1 + 0.5 * 99.9 = 50.05
    assert beta_at(500, **ramp) == pytest.approx(50.05)
    assert beta_at(900, **ramp) == 100.0 and beta_at(5000, **ramp) == 100.0  # held at the end
    assert beta_at(500, **ramp, schedule="constant") == 0.1
    with pytest.raises(ValueError, match="beta_schedule"):
        SurpriseGate(beta_schedule="cosine")
    with pytest.raises(ValueError, match="gate_mode"):
        SurpriseGate(gate_mode="and")


def test_the_schedule_advances_per_training_forward_only():
    gate = SurpriseGate(beta_warmup_steps=1, beta_ramp_steps=2)  # 0.1, 0.1, 50.05, 100, 100
    dx = torch.ones(1, 3, 4)
    seen = []
    for _ in range(4):
        seen.append(gate.betas()[0])
        gate(dx, dx)
    assert seen == pytest.approx([0.1, 0.1, 50.05, 100.0]) and int(gate.step) == 4
    gate.eval()
    gate(dx, dx)
    gate(dx, dx)
    assert int(gate.step) == 4  # evaluation reads the schedule, never advances it
    assert "step" in gate.state_dict()


def _train(model, steps, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for x, y in batches[:steps]:
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out.logits, y) + out.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return opt


@pytest.mark.parametrize("name", ["test_subjective_depth", "test_subjective_timescale"])
def test_a_resumed_model_continues_the_ramp_exactly(name):
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(4, 3, 2, 16, 16, generator=gen), torch.tensor([0, 1, 2]))
               for _ in range(6)]
    kw = dict(beta_warmup_steps=1, beta_ramp_steps=4)
    torch.manual_seed(0)
    model = spikemoe.create_model(name, **kw)
    _train(model, 3, batches)
    steps = {k: int(v) for k, v in model.state_dict().items() if k.endswith("gate.step")}
    assert steps and set(steps.values()) == {3}  # one step per training forward, every gate
    resumed = spikemoe.create_model(name, **kw)
    resumed.load_state_dict(model.state_dict())
    for m in (model, resumed):  # the next three steps, from the same weights and step
        _train(m, 3, batches[3:])
    x = batches[0][0]
    torch.testing.assert_close(model.eval()(x).logits, resumed.eval()(x).logits, rtol=0, atol=0)
    assert _betas(model) == _betas(resumed) == [(100.0, 100.0)]  # step 6 > 1 + 4
    # a model that did not resume its step restarts the ramp at 0.1
    fresh = spikemoe.create_model(name, **kw)
    fresh.load_state_dict({k: v for k, v in model.state_dict().items()
                           if not k.endswith("gate.step")}, strict=False)
    assert _betas(fresh) == [(0.1, 0.1)]


def _betas(model):
    return [m.betas() for m in model.modules() if isinstance(m, SurpriseGate)]


def test_the_gate_becomes_near_binary_at_the_end_of_the_ramp():
    # 4 tokens, d = 4: dx = 1 everywhere, so D_st = 1, MA = 1, CU = 1 - 1.1 = -0.1.
    # D_ch = ||dx - dx_hat||^2 / d = 0.9 for tokens 0, 2 and 1.1 for tokens 1, 3:
    # CE = D_st - D_ch + log 1.025 = 0.1247 | -0.0753.
    dx = torch.ones(1, 4, 4)
    err = torch.tensor([0.9, 1.1, 0.9, 1.1]).sqrt()[None, :, None]  # [1, 4, 1]
    dx_hat = dx - err
    gate = SurpriseGate(beta_warmup_steps=0, beta_ramp_steps=10).eval()
    s = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    # fixed beta 1 (before issue 12): s(CE) + s(CU) - s(CE) s(CU) = 0.754 | 0.728
    const = SurpriseGate(beta_schedule="constant", beta_ce_start=1.0, beta_cu_start=1.0).eval()
    g1 = const(dx, dx_hat).g[0]
    expect = [s(ce) + s(-0.1) - s(ce) * s(-0.1) for ce in (0.1247, -0.0753)]
    torch.testing.assert_close(g1[:2], torch.tensor(expect), atol=1e-4, rtol=0)
    assert g1.max() - g1.min() < 0.03  # every token near 0.74: threshold 0.75 is a coin toss
    # the ramp's start, beta 0.1: even flatter, every g within 0.003 of 0.75
    g0 = gate(dx, dx_hat).g[0]
    assert (g0 - 0.75).abs().max() < 0.003
    # after the ramp, beta 100: s(12.47) + s(-10) - ... = 1 - 4e-6 | s(-7.53) + s(-10) = 6e-4
    gate.step.fill_(10)
    g100 = gate(dx, dx_hat).g[0]
    assert (g100[[0, 2]] > 0.999).all() and (g100[[1, 3]] < 0.001).all()


def test_sdt_causal_router_reads_the_pair_input_detached():
    torch.manual_seed(0)
    frames = torch.rand(4, 3, 2, 16, 16)
    for router_input in ("pair_input", "decision_output"):
        model = spikemoe.create_model("test_subjective_depth", router_input=router_input)
        seen = {}
        router = next(m for m in model.modules() if isinstance(m, DepthRouter))
        router.register_forward_hook(lambda m, args, out, seen=seen: seen.update(router=args[0]))
        model.layers[0].register_forward_hook(
            lambda m, args, out, seen=seen: seen.update(pair=args[0], decision=out[0]))
        model.train()(frames)
        expected = seen["pair"] if router_input == "pair_input" else seen["decision"]
        assert torch.equal(seen["router"], expected)
        assert not torch.equal(seen["pair"], seen["decision"])
    # the router's BCE trains the router only: no gradient reaches the residual stream
    model = spikemoe.create_model("test_subjective_depth").train()
    model.router_weight, model.prior_weight = 1.0, 0.0
    out = model(frames)
    out.aux_loss.backward()
    touched = {n for n, p in model.named_parameters()
               if p.grad is not None and p.grad.abs().sum() > 0}
    assert touched == {n for n, _ in model.named_parameters() if n.startswith("layers.1.router")}


@pytest.mark.parametrize("selection", ["topk", "threshold"])
def test_stt_adds_the_mean_gate_regulariser_in_both_modes(selection):
    frames = torch.rand(4, 3, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    aux = {}
    for always in (True, False):
        for w in (0.0, 1.0):
            torch.manual_seed(0)
            model = spikemoe.create_model("test_subjective_timescale", selection=selection,
                                          gate_reg_always=always, gate_reg_weight=w).train()
            out = model(frames)
            aux[always, w] = (out.aux_loss.item(), out.metrics["layers.1.gate_mean"].item())
    # aux(w = 1) - aux(w = 0) = 1 * mean(g) of the one routed layer
    assert aux[True, 1.0][0] - aux[True, 0.0][0] == pytest.approx(aux[True, 1.0][1], abs=1e-5)
    reg_without_always = aux[False, 1.0][0] - aux[False, 0.0][0]
    if selection == "topk":
        assert reg_without_always == 0.0  # the switch: threshold selection only
    else:
        assert reg_without_always == pytest.approx(aux[False, 1.0][1], abs=1e-5)


def test_kl_change_surprise_by_hand_and_the_references_later_gate():
    # d = 2: dx = [2, 0], mu = [1, 0]; log_var = 0: 0.5 mean([0 + (1 + 1), 0 + (0 + 1)]) = 0.75
    dx, mu = torch.tensor([[[2.0, 0.0]]]), torch.tensor([[[1.0, 0.0]]])
    assert kl_change_surprise(dx, mu, torch.zeros(1, 1, 2)).item() == pytest.approx(0.75)
    # sigma^2 = 2: 0.5 mean([log 2 + 2/2, log 2 + 1/2]) = 0.5 (log 2 + 0.75) = 0.7216
    lv = torch.full((1, 1, 2), math.log(2.0))
    assert kl_change_surprise(dx, mu, lv).item() == pytest.approx(0.5 * (math.log(2) + 0.75))
    gate = SurpriseGate(change_surprise="kl", beta_schedule="constant", beta_ce_start=1.0)
    with pytest.raises(ValueError, match="log_var"):
        gate(dx, mu)
    out = gate(dx, mu, log_var=torch.zeros(1, 1, 2))
    assert out.d_ch.item() == pytest.approx(0.75)
    # gate_mode="ce": g = s(CE), CE = D_st - (D_ch - log o_ce) = 2 - 0.75 + log 1.025
    ce_only = SurpriseGate(change_surprise="kl", gate_mode="ce", beta_schedule="constant",
                           beta_ce_start=1.0)
    g = ce_only(dx, mu, log_var=torch.zeros(1, 1, 2)).g.item()
    assert g == pytest.approx(1 / (1 + math.exp(-(2 - 0.75 + math.log(1.025)))))


@pytest.mark.parametrize("name", ["test_subjective_depth", "test_subjective_timescale"])
def test_the_references_head_formulation_trains(name):
    torch.manual_seed(0)
    model = spikemoe.create_model(name, gate_mode="ce", change_surprise="kl").train()
    out = model(torch.rand(4, 3, 2, 16, 16))
    (torch.nn.functional.cross_entropy(out.logits, torch.arange(3)) + out.aux_loss).backward()
    heads = [n for n, _ in model.named_parameters() if "_head.proj" in n]
    assert heads  # the prior / TPN predicts a log-variance
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in heads)


def test_topk_ranks_by_the_unsaturated_score_not_by_position():
    """At beta 100, g is exactly 1.0 in float32 for CE = 0.2, 0.9 and 0.5 alike; ranking by
    ``score = -log(1 - g)`` keeps the order of CE. d = 1, dx = 1: D_st = 1, CU = 1 - 1.1 < 0;
    D_ch = (1 - dx_hat)^2 = 1 + log(1.025) - CE, so CE = [0.2, 0.9, 0.5, 0.3]."""
    from spikemoe.moe.token_selection import topk_mask

    ce = torch.tensor([0.2, 0.9, 0.5, 0.3])
    d_ch = 1 + math.log(1.025) - ce
    dx = torch.ones(1, 4, 1)
    dx_hat = dx - d_ch.sqrt()[None, :, None]
    gate = SurpriseGate(beta_warmup_steps=0, beta_ramp_steps=1).eval()
    gate.step.fill_(1)  # beta 100
    out = gate(dx, dx_hat)
    torch.testing.assert_close(out.ce[0], ce, atol=1e-5, rtol=0)
    assert (out.g[0] == 1.0).all()  # saturated: a top-k on g could only pick by position
    assert topk_mask(out.score, 0.5, True)[0].tolist() == [False, True, True, False]
    # the score is -log(1 - g) where g is representable: same order as g
    mid = SurpriseGate(beta_schedule="constant", beta_ce_start=1.0, beta_cu_start=1.0).eval()
    o = mid(dx, dx_hat)
    torch.testing.assert_close(o.score, -torch.log1p(-o.g), atol=1e-5, rtol=1e-5)
