"""Multi-view fusion (moe/fusion.py, models/fusion.py, analysis/training_plots.py): the gate's
weights by hand, the gradient-sensitive agreement by hand, staged view dropout, a dropped view
giving the other view's path bit for bit, test-time noise, dict collation, the gradient
cosine measurement, and the epoch plot."""
import copy
import json
import math

import pytest
import torch
from torch import nn

import spikemoe
from spikemoe.analysis.training_plots import metric_series, plot_metrics
from spikemoe.data import collate_time_major
from spikemoe.models.fusion import FusionClassifier, shuffle_noise
from spikemoe.moe.fusion import GradientSensitiveFusion, StagedViewDropout


def _toy_gate(sensitive: bool = False, momentum: float = 0.5) -> GradientSensitiveFusion:
    fusion = GradientSensitiveFusion(2, 2, gradient_sensitive=sensitive,
                                     agreement_momentum=momentum)
    with torch.no_grad():  # G_1(x) = x[0], G_2(x) = x[1], b = (0.5, -0.5)
        fusion.gates[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        fusion.gates[1].weight.copy_(torch.tensor([[0.0, 1.0]]))
        fusion.bias.copy_(torch.tensor([0.5, -0.5]))
    return fusion


def test_weights_are_softmax_of_gate_scores_plus_bias():
    x1, x2 = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]])
    y, metrics = _toy_gate()([x1, x2])
    # s = (1 + 0.5, 4 - 0.5) = (1.5, 3.5): w = (1, e^2) / (1 + e^2) = (0.11920, 0.88080)
    w1 = 1 / (1 + math.e ** 2)
    torch.testing.assert_close(metrics["weights"], torch.tensor([w1, 1 - w1]))
    assert metrics["weights"].sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(y, torch.tensor([[w1 * 1 + (1 - w1) * 3, w1 * 2 + (1 - w1) * 4]]))


def test_a_dropped_view_has_weight_zero_and_the_sample_is_the_other_view_exactly():
    x1, x2 = torch.randn(3, 2), torch.randn(3, 2)
    keep = torch.tensor([[True, True], [True, False], [False, True]])
    y, metrics = _toy_gate()([x1, x2], keep)
    assert torch.equal(y[1], x1[1]) and torch.equal(y[2], x2[2])  # w = 1.0 exactly, + 0
    full, _ = _toy_gate()([x1, x2])
    assert torch.equal(y[0], full[0])


def test_gradient_sensitive_agreement_by_hand_down_weights_the_conflicting_view():
    fusion = GradientSensitiveFusion(2, 2, agreement_momentum=0.5).train()  # zero gates: w = 1/2
    x1, x2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    y, metrics = fusion([x1, x2])
    assert metrics["weights"].tolist() == [0.5, 0.5] and metrics["agreement"].tolist() == [0, 0]
    (y * torch.tensor([1.0, -1.0])).sum().backward()  # g = dL/dy = (1, -1): -g = (-1, 1)
    # cos(-g, x1) = -1/sqrt2 (view 1 conflicts), cos(-g, x2) = +1/sqrt2; a = 0.5 * 0 + 0.5 * cos
    a = 0.5 / math.sqrt(2)
    torch.testing.assert_close(fusion.agreement, torch.tensor([-a, a]))
    _, metrics = fusion([x1, x2])  # scores now (-a, +a): w1 = 1 / (1 + e^{2a}) < 1/2
    torch.testing.assert_close(metrics["weights"][0], torch.tensor(1 / (1 + math.exp(2 * a))))
    plain = GradientSensitiveFusion(2, 2, gradient_sensitive=False).train()
    plain([x1, x2])[0].sum().backward()
    assert plain.agreement.tolist() == [0, 0]  # off: nothing measured, nothing added
    fusion.eval()
    before = fusion.agreement.clone()
    fusion([x1.requires_grad_(), x2])[0].sum().backward()
    assert torch.equal(fusion.agreement, before)  # evaluation never updates it


def test_staged_view_dropout_follows_its_stages():
    torch.manual_seed(0)
    drop = StagedViewDropout(2, ((0, (0.5, 0.5)), (1, (0.0, 0.25))), samples_per_epoch=4).train()
    keep = drop(4, torch.device("cpu"))
    assert keep.sum(1).tolist() == [1, 1, 1, 1]  # p sums to 1: exactly one view dropped each
    assert int(drop.seen) == 4 and drop.probabilities() == (0.0, 0.25)  # epoch 4 // 4 = 1
    keep = torch.cat([drop(1000, torch.device("cpu")) for _ in range(4)])
    assert keep[:, 0].all() and 0.2 < 1 - keep[:, 1].float().mean() < 0.3
    assert drop.eval()(3, torch.device("cpu")).all()  # evaluation: nothing dropped
    with pytest.raises(ValueError, match="summing to <= 1"):
        StagedViewDropout(2, ((0, (0.6, 0.6)),))


def _batch(B: int = 3, T: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"events": torch.randint(0, 3, (T, B, 2, 32, 32), generator=g).float(),
            "image": torch.rand(B, 1, 32, 32, generator=g)}


@pytest.mark.parametrize("view", ["events", "image"])
def test_dropping_a_view_at_test_time_is_the_single_view_model_bit_for_bit(view):
    torch.manual_seed(0)
    fused = spikemoe.create_model("test_fusion_gate").train()
    x = _batch()
    fused(x)  # one training forward: BN statistics move off their initial values
    fused.eval()
    alone = spikemoe.create_model(f"test_fusion_{view}").eval()
    missing = alone.load_state_dict(fused.state_dict(), strict=False).missing_keys
    assert missing == []  # every weight of the single-view path comes from the fused model
    fused.test_view = view
    out = fused(x)
    assert torch.equal(out.logits, alone(x).logits)
    assert out.metrics["fusion.weights"].tolist() == ([1.0, 0.0] if view == "events" else [0.0, 1.0])
    fused.test_view = "both"
    assert not torch.equal(fused(x).logits, out.logits)


def test_test_view_noise_is_deterministic_and_keeps_each_samples_values():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(24.0).reshape(2, 3, 4)  # [T=2, B=3, 4]: batch axis 1
    noisy = shuffle_noise(x, 1, g)
    for b in range(3):
        assert torch.equal(noisy[:, b].flatten().sort().values, x[:, b].flatten())
    assert not torch.equal(noisy, x)
    model = spikemoe.create_model("test_fusion_gate", test_view="events+noise_image").eval()
    batch = _batch()
    assert torch.equal(model(batch).logits, model(batch).logits)
    model.test_view = "both"
    assert not torch.equal(model(batch).logits, model.eval()(
        {**batch, "image": shuffle_noise(batch["image"], 0, torch.Generator().manual_seed(1))}).logits)
    with pytest.raises(ValueError, match="test_view must be one of"):
        model.test_view = "image+noise_image"


def test_collate_batches_each_view_by_its_own_rule():
    items = [({"events": torch.full((3, 2, 4, 4), float(i)), "image": torch.full((1, 4, 4), 10.0 + i)},
              i) for i in range(5)]
    x, y = collate_time_major(items)
    assert x["events"].shape == (3, 5, 2, 4, 4) and x["events"].is_contiguous()
    assert torch.equal(x["events"][:, 2], torch.full((3, 2, 4, 4), 2.0))  # item 2 at every step
    assert x["image"].shape == (5, 1, 4, 4) and x["image"][4, 0, 0, 0] == 14.0
    assert y.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="differ in views"):
        collate_time_major([items[0], ({"events": torch.zeros(3, 2, 4, 4)}, 0)])
    with pytest.raises(ValueError, match=r"view 'image'.*item 1 is \[1, 2, 2\]"):
        collate_time_major([items[0], ({"events": torch.zeros(3, 2, 4, 4),
                                         "image": torch.zeros(1, 2, 2)}, 0)])


def _twin_views() -> FusionClassifier:
    enc = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.BatchNorm1d(8))
    return FusionClassifier(encoders={"a": enc, "b": copy.deepcopy(enc)}, dim=8, hidden=6,
                            num_classes=3, T=1)


def test_measure_epoch_gives_cosine_one_for_identical_views_and_leaves_the_model_as_found():
    torch.manual_seed(0)
    model = _twin_views().train()
    x = torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 0, 1])
    model({"a": x, "b": x}).logits.sum().backward()  # grads to keep; BN stats and agreement move
    params = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    rng = torch.get_rng_state()
    m = model.measure_epoch({"a": x, "b": x}, y)
    # same input through identical encoders: each view alone gives the same shared gradient
    assert m["grad_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert m["grad_norm.a"] == pytest.approx(m["grad_norm.b"]) and m["grad_norm.a"] > 0
    assert model.training and model.test_view == "both"
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, grads[k]) for k, p in model.named_parameters() if k in grads)
    assert torch.equal(torch.get_rng_state(), rng)
    other = model.measure_epoch({"a": x, "b": -x}, y)  # different inputs: a different cosine
    assert other["grad_cosine"] < 0.999


def test_registered_fusion_models_declare_dict_inputs_and_match_parameters():
    gate = spikemoe.create_model("fusion_gate_digits")
    concat = spikemoe.create_model("fusion_concat_digits")
    assert gate.input_shape is None and gate.num_classes == 10 and gate.T == 4
    assert gate.facts().epoch_measurements and not spikemoe.create_model(
        "test_fusion_events").facts().epoch_measurements
    n_gate, n_cat = (sum(p.numel() for p in m.parameters()) for m in (gate, concat))
    assert abs(n_cat - n_gate) / n_gate < 0.005  # concat's shared width is matched to the gate
    with pytest.raises(ValueError, match=r"takes a dict with the views \['events', 'image'\]"):
        gate(torch.zeros(4, 2, 2, 32, 32))


def test_plot_metrics_reads_epoch_records(tmp_path):
    lines = [{"kind": "step", "step": 1, "loss": 2.0},
             {"kind": "epoch", "step": 2, "epoch": 1, "train/fusion.weights": [0.5, 0.5]},
             {"kind": "epoch", "step": 4, "epoch": 2, "train/fusion.weights": [0.25, 0.75],
              "measure/grad_cosine": -0.1}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n{\"kind\": \"ep")  # torn line
    records = [r for r in lines if r["kind"] == "epoch"]
    assert metric_series(records, "train/fusion.weights") == ([1, 2], [[0.5, 0.5], [0.25, 0.75]])
    assert metric_series(records, "measure/grad_cosine") == ([2], [[-0.1]])
    with pytest.raises(KeyError, match="train/fusion.weights"):
        metric_series(records, "test/top1")
    out = plot_metrics(path, "train/fusion.weights", tmp_path / "w.png", labels=["events", "image"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_measures_a_two_view_model_with_both_views_counted():
    """``profile_model`` takes dict samples: the spiking events view is charged as SOPs, the
    ANN image view as MACs, and the frames view makes the first layer count T times."""
    from spikemoe.analysis import profile_model

    torch.manual_seed(0)
    model = spikemoe.create_model("test_fusion_gate")
    x = _batch(B=2)
    samples = [({k: v[:, i] if v.dim() == 5 else v[i] for k, v in x.items()}, i)
               for i in range(2)]
    result = profile_model(model, samples, spread_samples=1)
    events = result.energy["events"]
    assert result.samples == 2 and result.time_steps == 2 and result.spiking
    assert events.macs > 0 and events.sops > 0  # the image encoder's MACs, the spikes' SOPs
    image_only = profile_model(spikemoe.create_model("test_fusion_image"),
                               [({"image": s["image"]}, y) for s, y in samples], spread_samples=1)
    assert image_only.energy["events"].sops == 0 and not image_only.spiking
