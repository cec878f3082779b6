"""Modular Networks (Kirsch et al. 2018): the E-step's choice, the controller loss, gradients
of chosen modules only, index-based dispatch, stored choices in the state dict, and the
equal-compute baselines."""
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikemoe
from spikemoe.analysis.firing_rates import FiringRateMonitor
from spikemoe.analysis.op_counts import count_operations
from spikemoe.contract import ExampleChoices, model_facts
from spikemoe.models.modular import RoutedModel
from spikemoe.moe.modular_em import ModularEM
from spikemoe.moe.modular_layer import ModularLayer, Routing, dispatch_chosen


class Toy(ModularEM, RoutedModel):
    """One modular layer of M=3 Linear(3 -> 3 classes) modules, K=1, on one-hot inputs.

    Module m outputs logits 40 e_m (weight 0): log p(y | a=m) = 0 if y == m else -40 (to
    1e-16). The controller prefers module pref[i] for input e_i with logit 30:
    log p(a = pref) = 0, log p(a = other) = -30 (to 1e-13), and a sample is pref[i]."""

    def __init__(self, pref=(2, 2, 1)):
        super().__init__()
        self.layer = ModularLayer([nn.Linear(3, 3) for _ in range(3)], 3, k=1)
        with torch.no_grad():
            for m, module in enumerate(self.layer.experts):
                module.weight.zero_()
                module.bias.copy_(40.0 * F.one_hot(torch.tensor(m), 3).float())
            self.layer.controller.weight.zero_()
            self.layer.controller.bias.zero_()
            for i, p in enumerate(pref):
                self.layer.controller.weight[p, i] = 30.0
        self.samples = 3

    def route(self, x, routing):
        return self.layer(x, x.unsqueeze(1), routing)  # features [B, 1, 3]


def test_e_step_keeps_the_best_candidate_and_never_loses_the_stored_one():
    torch.manual_seed(0)
    model = Toy().train()
    model.attach_examples(3, seed=0)
    index = torch.arange(3)
    model.store_choices(index, torch.tensor([[0], [1], [1]]))
    x, y = torch.eye(3), torch.tensor([0, 2, 1])
    chosen, metrics = model.e_step(x, y, index)
    # example 0 (y=0): stored 0 scores 0 - 30 = -30; sample 2 scores -40 + 0 = -40: keep 0
    # example 1 (y=2): stored 1 scores -40 - 30 = -70; sample 2 scores 0 + 0 = 0: take 2
    # example 2 (y=1): stored 1 scores 0 + 0; the sample is 1 too: a tie keeps the stored
    assert chosen.tolist() == [[0], [2], [1]]
    assert metrics["changed"].item() == pytest.approx(1 / 3)
    assert metrics["score_gain"].item() == pytest.approx(70 / 3, abs=1e-4)
    model.store_choices(index, chosen)
    assert model.layer.stored.view(-1).tolist() == [0, 2, 1]
    # a second E-step cannot move any example: every stored choice already wins
    again, metrics = model.e_step(x, y, index)
    assert again.tolist() == chosen.tolist() and metrics["changed"].item() == 0


def test_e_step_leaves_batchnorm_running_statistics_alone():
    torch.manual_seed(0)
    model = spikemoe.create_model("test_modular_spikformer", samples=2).train()
    model.attach_examples(4, seed=1)
    bn = model.blocks[0].mlp.experts[0].mlp.fc1.bn
    before = bn.running_mean.clone(), int(bn.num_batches_tracked)
    model.e_step(torch.rand(2, 3, 2, 16, 16), torch.tensor([1, 2, 3]), torch.tensor([0, 2, 3]))
    assert torch.equal(bn.running_mean, before[0]) and int(bn.num_batches_tracked) == before[1]


def test_controller_loss_is_the_cross_entropy_to_the_stored_choice():
    torch.manual_seed(0)
    model = Toy()
    nn.init.normal_(model.layer.controller.weight)
    model.attach_examples(5, seed=3)
    index = torch.tensor([4, 0, 2])
    x = torch.rand(3, 3)
    out = model.train()(x, index=index)
    stored = model.layer.stored[index, 0, 0].long()  # [B]
    expected = F.cross_entropy(model.layer.controller(x), stored)
    assert out.aux_loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # a language model divides by its N targets per example (the task loss is a per-token mean)
    lm = spikemoe.create_model("test_modular_lm").train()
    lm.attach_examples(2, seed=0)
    ids = torch.randint(0, 256, (2, 8))
    out = lm(ids, index=torch.tensor([1, 0]))
    h = lm.embed(ids)
    h = h + lm.attn(lm.norm1(h), torch.arange(8).expand(2, 8))
    logits = lm.mlp.controller(lm.norm2(h)).view(2, 8, 2, 4)  # [B, N, K, M]
    stored = lm.mlp.stored[torch.tensor([1, 0])].long()  # [B, N, K]
    summed = F.cross_entropy(logits.reshape(-1, 4), stored.reshape(-1), reduction="sum")
    assert out.aux_loss.item() == pytest.approx(summed.item() / 2 / 8, rel=1e-5)
    # evaluation: the controller's mode, no stored choice, no controller loss
    assert lm.eval()(ids).aux_loss.item() == 0


def test_only_chosen_modules_get_gradients():
    torch.manual_seed(0)
    model = Toy()
    model.attach_examples(4, seed=0)
    model.store_choices(torch.arange(4), torch.tensor([[0], [2], [2], [0]]))
    out = model.train()(torch.rand(4, 3), index=torch.arange(4))
    (F.cross_entropy(out.logits, torch.tensor([0, 1, 2, 0])) + out.aux_loss).backward()
    experts = model.layer.experts
    assert experts[1].weight.grad is None and experts[1].bias.grad is None  # never chosen
    assert experts[0].weight.grad.abs().sum() > 0 and experts[2].bias.grad.abs().sum() > 0
    assert model.layer.controller.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("weighted", [False, True])
def test_index_dispatch_equals_all_modules_masked_to_the_choice(weighted):
    torch.manual_seed(0)
    experts = nn.ModuleList(nn.Linear(4, 2) for _ in range(3))
    rows = torch.rand(5, 4)
    choice = torch.tensor([[0, 0], [1, 2], [2, 0], [1, 1], [2, 2]])  # repeats count once
    weights = torch.rand(5, 2) if weighted else None
    out = dispatch_chosen(experts, rows, choice, weights)
    naive = torch.zeros(5, 2)
    for m, f in enumerate(experts):  # all M modules on all rows, masked
        hit = (choice == m).float()  # [R, K]
        gate = (hit * weights).sum(1) if weighted else hit.amax(1)  # [R]
        naive += gate[:, None] * f(rows)
    assert torch.allclose(out, naive, atol=1e-6)


def test_stored_choices_round_trip_through_the_state_dict_into_a_fresh_model():
    torch.manual_seed(0)
    model = spikemoe.create_model("test_modular")
    model.attach_examples(6, seed=7)
    model.store_choices(torch.tensor([1, 5]), torch.tensor([[2, 0], [1, 1]]))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = spikemoe.create_model("test_modular")  # evaluation: never attached
    assert fresh.layers[0].stored is None
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    for a, b in zip(model.em_layers(), fresh.em_layers(), strict=True):
        assert torch.equal(a.stored, b.stored) and a.stored.shape == (6, 1, 1)
    assert [int(fresh.layers[i].stored[5, 0, 0]) for i in (0, 1)] == [1, 1]
    # attach_examples is reproducible from the seed, and in 0..M-1
    first, again = spikemoe.create_model("test_modular"), spikemoe.create_model("test_modular")
    first.attach_examples(6, seed=7)
    again.attach_examples(6, seed=7)
    assert torch.equal(first.layers[0].stored, again.layers[0].stored)
    assert 0 <= int(first.layers[0].stored.min()) and int(first.layers[0].stored.max()) <= 2
    # an unattached model's state dict loads into another fresh one
    spikemoe.create_model("test_modular").load_state_dict(
        spikemoe.create_model("test_modular").state_dict())


def test_inference_uses_the_controllers_mode_deterministically():
    torch.manual_seed(0)
    model = spikemoe.create_model("test_modular").eval()
    x = torch.rand(2, 3, 2, 8, 8)
    a, b = model(x), model(x)
    assert torch.equal(a.logits, b.logits)
    routing = Routing("mode")
    model.route(x, routing)
    given = [r.choice for r in routing.records]
    assert torch.equal(model.route(x, Routing("given", given=given))[0], a.logits)


def test_baselines_match_the_em_models_chosen_module_macs():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 2, 8, 8)  # [T, B, C, H, W]: one example

    def macs(name, kinds=("conv",)):
        counter, _ = count_operations(spikemoe.create_model(name).eval(), x)
        return sum(r.dense_macs for r in counter.layer_records() if r.kind in kinds)

    # layer 1: 8x8 output, 4 filters, 2 in-channels, 3x3 = 4608; layer 2 (4x4): 16*4*4*9 = 2304
    assert macs("test_modular") == macs("test_modular_dense") == macs("test_modular_topk") \
        == 8 * 8 * 4 * 2 * 9 + 4 * 4 * 4 * 4 * 9
    # the EM model's extra: its two controllers (dense layers on the flattened input)
    assert macs("test_modular", ("linear",)) - macs("test_modular_dense", ("linear",)) \
        == 2 * 8 * 8 * 3 + 4 * 4 * 4 * 3


def test_usage_is_a_router_output_for_measurement_and_a_metric():
    torch.manual_seed(0)
    model = spikemoe.create_model("test_modular").eval()
    with FiringRateMonitor(model) as mon:
        out = model(torch.rand(2, 3, 2, 8, 8))
    rates = mon.result()
    assert set(rates.routers) == {"layers.0.usage_probe", "layers.1.usage_probe"}
    assert rates.layers == [] or all("usage_probe" not in str(r) for r in rates.layers)
    # an ANN modular net stays an ANN for the energy count: every multiply-add a MAC
    from spikemoe.analysis import profile_model

    result = profile_model(model, [(torch.rand(3, 2, 8, 8), 0)], spread_samples=1)
    assert not result.spiking and result.energy["events"].sops == 0
    assert result.energy["events"].macs > 0
    usage = out.metrics["layers.0.usage"]  # K = 1: one module per example, fractions sum to 1
    assert usage.shape == (3,) and usage.sum().item() == pytest.approx(1.0)
    assert 1 <= out.metrics["layers.0.batch_selection_entropy_exp"].item() <= 3
    assert 1 <= out.metrics["layers.0.selection_entropy_exp"].item() <= 3


def test_facts_and_baselines_declare_em_only_where_trained_by_em():
    with torch.device("meta"):
        em, dense = spikemoe.create_model("modular_digits"), spikemoe.create_model(
            "modular_digits_dense")
    assert isinstance(em, ExampleChoices) and not isinstance(dense, ExampleChoices)
    assert model_facts(em).e_step_every == 10 and model_facts(em).m_step_on_e_step is False
    assert em.samples == 10 and model_facts(dense).e_step_every is None
    assert model_facts(em).input_shape == (4, 2, 32, 32)
    # only chosen modules get gradients: DDP must look for unused parameters (not the dense twin)
    with torch.device("meta"):
        topk = spikemoe.create_model("modular_digits_topk")
    assert model_facts(em).sparse_updates and model_facts(topk).sparse_updates
    assert not model_facts(dense).sparse_updates
    with pytest.raises(ValueError, match="model.samples must be an integer >= 1"):
        spikemoe.create_model("test_modular", samples=0)
    with pytest.raises(ValueError, match=r"mixup_alpha=0"):
        Toy().e_step(torch.eye(3), torch.rand(3, 3), torch.arange(3))


def test_reference_cifar_net_shapes_and_parameters():
    with torch.device("meta"):
        model = spikemoe.create_model("modular_cifar")
    convs = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    # 5 modules per layer: (3*9*8 + 8) then 3 x (8*9*8 + 8)
    assert convs == 5 * (3 * 9 * 8 + 8) + 3 * 5 * (8 * 9 * 8 + 8)
    assert model.head.in_features == 8 * 2 * 2  # 32 -> 16 -> 8 -> 4 -> 2
    assert math.prod(model.input_shape) == 3 * 32 * 32
