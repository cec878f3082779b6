"""ViT and V-MoE models: time folding, the input contract, MoE placement, parameter counts
against vmoe's own module shapes, the released model's switches, the sigmoid cross-entropy,
gradients to the router, and `spikemoe train` on test_vmoe."""
import json
import math
import textwrap

import pytest
import torch

import spikemoe
from spikemoe.cli import main as engine_main
from spikemoe.contract import AUX_LOSS
from spikemoe.data import temporary_dataset
from spikemoe.engine.synthetic import synthetic_spec
from spikemoe.layers import TimeFolding
from spikemoe.models.vit import moe_blocks, sigmoid_cross_entropy


def _count(name, **kw):
    with torch.device("meta"):
        return sum(p.numel() for p in spikemoe.create_model(name, **kw).parameters())


def test_time_folding_shapes_and_values():
    frames = torch.arange(3 * 2 * 2 * 1 * 1, dtype=torch.float32).reshape(3, 2, 2, 1, 1)  # [T, B, C, 1, 1]
    # sum: X[b, c] = sum_t I[t, b, c]; e.g. b=0, c=0: I[0,0,0] + I[1,0,0] + I[2,0,0] = 0 + 4 + 8
    summed = TimeFolding("sum", 3)(frames)
    assert summed.shape == (2, 2, 1, 1) and summed[0, 0].item() == 12
    # fold: X[b, t*C + c] = I[t, b, c]; b=1: channels (t0c0, t0c1, t1c0, t1c1, t2c0, t2c1)
    folded = TimeFolding("fold", 3)(frames)
    assert folded.shape == (2, 6, 1, 1)
    assert folded[1].flatten().tolist() == [2, 3, 6, 7, 10, 11]
    image = torch.rand(2, 3, 8, 8)  # a static image
    assert TimeFolding("sum", 3)(image) is image  # passes through
    assert torch.equal(TimeFolding("fold", 3)(image),  # = fold of its T-step repetition
                       TimeFolding("fold", 3)(image.unsqueeze(0).repeat(3, 1, 1, 1, 1)))
    with pytest.raises(ValueError, match="input has T=4.*use time_mode='sum'"):
        TimeFolding("fold", 3)(torch.zeros(4, 2, 2, 8, 8))
    with pytest.raises(ValueError, match="time_mode must be one of"):
        TimeFolding("mean", 3)


@pytest.mark.parametrize("shape", [(2, 16, 16), (2, 3, 3, 16, 16), (2, 3, 2, 15, 16),
                                   (1, 2, 3, 2, 16, 16)])
@pytest.mark.parametrize("name", ["test_vit", "test_vmoe"])
def test_bad_input_shapes_are_rejected_with_both_shapes_named(name, shape):
    with pytest.raises(ValueError) as err:
        spikemoe.create_model(name)(torch.zeros(shape))
    msg = str(err.value)
    assert str(tuple(shape)) in msg and "[T, B, 2, H, W]" in msg and "[B, 2, H, W]" in msg


@pytest.mark.parametrize("name", ["test_vit", "test_vmoe"])
def test_input_contract_output_and_metrics(name):
    torch.manual_seed(0)
    model = spikemoe.create_model(name).eval()
    assert model.input_shape == (2, 2, 16, 16) and model.num_classes == 10 and model.T == 2
    frames = torch.rand(2, 3, 2, 16, 16)  # [T, B, C, H, W]
    out = model(frames)
    assert isinstance(out, spikemoe.ModelOutput) and out.logits.shape == (3, 10)
    assert torch.equal(model(frames).logits, out.logits)  # no state, no noise in eval
    image = torch.rand(4, 2, 16, 16)  # [B, C, H, W]: the same as its T-step repetition (fold)
    torch.testing.assert_close(model(image).logits, model(image.unsqueeze(0).repeat(2, 1, 1, 1, 1)).logits)
    assert model(torch.rand(2, 1, 2, 32, 24)).logits.shape == (1, 10)  # other grid: interpolated
    if name == "test_vit":
        assert out.aux_loss.item() == 0 and out.metrics == {}
        return
    assert out.aux_loss.item() > 0
    assert out.metrics["blocks.1.mlp.load"].shape == (4,)
    assert out.metrics["blocks.1.mlp.importance"].shape == (4,)
    assert out.metrics["blocks.1.mlp.dropped"].shape == ()
    assert not any(k.startswith("blocks.0.") for k in out.metrics)  # block 0 is dense


def test_aux_loss_is_the_sum_over_moe_blocks():
    torch.manual_seed(0)
    model = spikemoe.create_model("test_vmoe", depth=4).eval()  # MoE in blocks 1 and 3
    out = model(torch.rand(2, 2, 2, 16, 16))
    # eval: aux = .005 L_imp per block
    per_block = [0.005 * out.metrics[f"blocks.{i}.mlp.importance_loss"] for i in (1, 3)]
    torch.testing.assert_close(out.aux_loss, sum(per_block))


def test_blocks_return_out_and_metrics_with_the_aux_loss_inside():
    torch.manual_seed(0)
    model = spikemoe.create_model("test_vmoe", depth=4).eval()  # MoE in blocks 1 and 3
    tokens = torch.randn(2, 17, 32)  # [B, 1+N, D]
    auxes = []
    for i, block in enumerate(model.blocks):
        y, metrics = block(tokens)
        assert y.shape == tokens.shape
        assert (AUX_LOSS in metrics) == (i in (1, 3))  # only the MoE blocks have one
        assert all(k.startswith("mlp.") for k in metrics if k != AUX_LOSS)
        auxes += [metrics[AUX_LOSS]] if AUX_LOSS in metrics else []
    # the model sums them into ModelOutput.aux_loss and keeps them out of its metrics
    out = model(torch.rand(2, 2, 2, 16, 16))
    assert out.aux_loss.ndim == 0 and not any(k.endswith(AUX_LOSS) for k in out.metrics)
    assert len(auxes) == 2 and all(a.ndim == 0 and a.item() > 0 for a in auxes)


def test_moe_placement():
    assert moe_blocks(12, "every-2") == [1, 3, 5, 7, 9, 11]
    assert moe_blocks(12, "last-2") == [9, 11]
    assert moe_blocks(8, "last-1") == [7] and moe_blocks(2, "every-2") == [1]
    assert moe_blocks(12, "none") == []
    with pytest.raises(ValueError, match="n must be 1..6"):
        moe_blocks(12, "last-7")
    with pytest.raises(ValueError, match="'last-<n>'"):
        moe_blocks(12, "every-3")
    # vmoe's S has 8 blocks: Last-2 = range(1, 8, 2)[-2:] = (5, 7), Every-2 = (1, 3, 5, 7)
    assert moe_blocks(8, "last-2") == [5, 7] and moe_blocks(8, "every-2") == [1, 3, 5, 7]
    with torch.device("meta"):
        model = spikemoe.create_model("vmoe_s_32_last2")
    assert model.moe_blocks == [5, 7] and len(model.blocks) == 8
    assert len(model.blocks[5].mlp.experts) == 8


def _vmoe_reference_shapes(variant, patch, num_experts=8, moe_layers=(), representation=None,
                           num_classes=1000, image=224):
    """Parameter shapes of vmoe's flax VisionTransformerMoe (google-research/vmoe 942a78b,
    vmoe/nn/vit_moe.py) for vmoe/configs/vmoe_paper/common.py's sizes, by flax name."""
    D, L, M, H = {"S": (512, 8, 2048, 8), "B": (768, 12, 3072, 12)}[variant]
    tokens = (image // patch) ** 2 + 1
    shapes = {"embedding/kernel": (patch, patch, 3, D), "embedding/bias": (D,), "cls": (1, 1, D),
              "Encoder/posembed_input/pos_embedding": (1, tokens, D),
              "Encoder/encoder_norm/scale": (D,), "Encoder/encoder_norm/bias": (D,),
              "head/kernel": (representation or D, num_classes), "head/bias": (num_classes,)}
    if representation:
        shapes |= {"pre_logits/kernel": (D, representation), "pre_logits/bias": (representation,)}
    for i in range(L):
        b = f"Encoder/encoderblock_{i}"
        for ln in ("LayerNorm_0", "LayerNorm_1"):
            shapes |= {f"{b}/{ln}/scale": (D,), f"{b}/{ln}/bias": (D,)}
        for qkv in ("query", "key", "value"):  # DenseGeneral D -> (heads, D / heads)
            shapes |= {f"{b}/SelfAttention/{qkv}/kernel": (D, H, D // H),
                       f"{b}/SelfAttention/{qkv}/bias": (H, D // H)}
        shapes |= {f"{b}/SelfAttention/out/kernel": (H, D // H, D),
                   f"{b}/SelfAttention/out/bias": (D,)}
        e = (num_experts,) if i in moe_layers else ()  # experts stacked on a leading axis
        mlp = f"{b}/Moe/Mlp" if e else f"{b}/Mlp"
        shapes |= {f"{mlp}/Dense_0/kernel": e + (D, M), f"{mlp}/Dense_0/bias": e + (M,),
                   f"{mlp}/Dense_1/kernel": e + (M, D), f"{mlp}/Dense_1/bias": e + (D,)}
        if e:
            shapes[f"{b}/Moe/Router/dense/kernel"] = (D, num_experts)  # no bias
    return sum(math.prod(v) for v in shapes.values())


# (ours, vmoe variant, patch, MoE layers): vmoe's sizes, common.py's MoE placements
TABLE = [("vit_s_32", "S", 32, ()), ("vit_s_16", "S", 16, ()), ("vit_b_32", "B", 32, ()),
         ("vit_b_16", "B", 16, ()), ("vmoe_s_32", "S", 32, (1, 3, 5, 7)),
         ("vmoe_s_32_last2", "S", 32, (5, 7)), ("vmoe_s_16", "S", 16, (1, 3, 5, 7)),
         ("vmoe_b_32", "B", 32, (1, 3, 5, 7, 9, 11)), ("vmoe_b_16", "B", 16, (1, 3, 5, 7, 9, 11))]


@pytest.mark.parametrize("name, variant, patch, layers", TABLE)
def test_parameter_counts_equal_vmoes_modules(name, variant, patch, layers):
    assert _count(name) == _vmoe_reference_shapes(variant, patch, moe_layers=layers)
    # with the released model's pre-logits layer (representation_size = D, vmoe common.py)
    D = {"S": 512, "B": 768}[variant]
    assert _count(name, representation_size=D) == _vmoe_reference_shapes(
        variant, patch, moe_layers=layers, representation=D)


def test_parameter_counts_by_hand():
    # vmoe's ViT-S/32: patch 32*32*3*512 + 512 = 1,573,376; cls 512; position 50 * 512 =
    # 25,600; per block LN 2*1,024 + attention 4 (512^2 + 512) = 1,050,624 + MLP
    # 2 (512 * 2048) + 2048 + 512 = 2,099,712 -> 3,152,384, x 8 = 25,219,072; final LN 1,024;
    # head 512,000 + 1,000 = 513,000. Total 27,332,584.
    assert _count("vit_s_32") == 27_332_584
    # each MoE block adds 7 expert MLPs and a 512 x 8 router: 7 * 2,099,712 + 4,096 = 14,702,080
    assert _count("vmoe_s_32_last2") == 27_332_584 + 2 * 14_702_080 == 56_736_744
    assert _count("vit_b_16") == 86_567_656  # ViT-B/16 (timm: 86,567,656)
    for size in ("2_256_dvs", "4_384_cifar", "s_16", "b_16"):
        assert _count(f"vmoe_{size}") > _count(f"vit_{size}")


def test_released_model_extras_are_switches():
    torch.manual_seed(0)
    plain = spikemoe.create_model("test_vmoe")
    assert isinstance(plain.pre_logits, torch.nn.Identity) and plain.head.bias.abs().sum() == 0
    assert plain.classifier_loss == "softmax_xent"
    model = spikemoe.create_model("test_vmoe", representation_size=24, head_zero_init=True,
                                  head_bias_init="-log(K)", expert_dropout=0.2,
                                  gelu_approximate="tanh", classifier_loss="sigmoid_xent").eval()
    assert model.pre_logits[0].weight.shape == (24, 32) and model.head.weight.shape == (10, 24)
    # zero kernel, bias -log(10): every logit starts at -2.3026, s(-2.3026) = 1/11 per class
    assert model.head.weight.abs().sum() == 0
    torch.testing.assert_close(model.head.bias, torch.full((10,), -math.log(10)))
    logits = model(torch.rand(2, 3, 2, 16, 16)).logits
    torch.testing.assert_close(logits, torch.full((3, 10), -math.log(10)))
    assert model.classifier_loss == "sigmoid_xent"
    expert = model.blocks[1].mlp.experts[0]
    assert expert.drop.p == 0.2 and expert.act.approximate == "tanh"
    assert model.blocks[0].mlp.act.approximate == "tanh"
    assert isinstance(model.blocks[0].mlp.drop, torch.nn.Identity)  # dense MLPs: no dropout
    # dropout acts in training only: two training passes differ, evaluation is deterministic
    x = torch.rand(2, 3, 2, 16, 16)
    model.train()
    y = model.blocks[1].mlp.experts[0](torch.ones(4, 32))
    assert (y == 0).any() or not torch.equal(y, model.blocks[1].mlp.experts[0](torch.ones(4, 32)))
    model.eval()
    assert torch.equal(model(x).logits, model(x).logits)
    with pytest.raises(ValueError, match="head_bias_init"):
        spikemoe.create_model("test_vit", head_bias_init="log(K)")
    with pytest.raises(ValueError, match="classifier_loss"):
        spikemoe.create_model("test_vit", classifier_loss="hinge")


def test_sigmoid_cross_entropy_by_hand():
    # K = 2, logits [0, 0], target class 0: BCE(0, 1) + BCE(0, 0) = log 2 + log 2 = 1.3863
    z = torch.zeros(1, 2)
    assert sigmoid_cross_entropy(z, torch.tensor([0])).item() == pytest.approx(2 * math.log(2))
    # logits [2, -1], soft target [0.5, 0.5]: per class -0.5 log s(z) - 0.5 log(1 - s(z))
    z = torch.tensor([[2.0, -1.0]])
    s = torch.sigmoid(z)[0].tolist()
    expect = sum(-0.5 * math.log(p) - 0.5 * math.log(1 - p) for p in s)
    assert sigmoid_cross_entropy(z, torch.tensor([[0.5, 0.5]])).item() == pytest.approx(expect)
    # averaged over the batch, summed over classes; smoothing 0.2 over K = 2 gives [0.9, 0.1]
    two = sigmoid_cross_entropy(torch.zeros(2, 2), torch.tensor([0, 1]))
    assert two.item() == pytest.approx(2 * math.log(2))
    smooth = sigmoid_cross_entropy(z, torch.tensor([0]), label_smoothing=0.2)
    assert smooth.item() == pytest.approx(sigmoid_cross_entropy(z, torch.tensor([[0.9, 0.1]])).item())


def test_evaluation_routing_defaults_follow_vmoes_configs():
    with torch.device("meta"):
        released = spikemoe.create_model("vmoe_s_32_last2").blocks[5].mlp.router
        every2 = spikemoe.create_model("vmoe_b_16").blocks[1].mlp.router
    # released eval config: capacity factor 4.0, BPR not switched on; elsewhere training's 1.05
    assert (released.capacity_factor_eval, released.batch_priority_eval) == (4.0, False)
    assert (every2.capacity_factor_eval, every2.batch_priority_eval) == (1.05, False)
    assert released.capacity_factor_train == 1.05 and not released.batch_priority_train
    # groups of 8 images of 7 x 7 + 1 = 50 tokens: 400 * 2 * 4.0 / 8 = 400 slots in evaluation,
    # ceil(400 * 2 * 1.05 / 8) = 105 -> 108 in training
    assert released.eval().capacity(400) == 400 and released.train().capacity(400) == 108
    assert released.capacity_rounding == "vmoe"


def test_gradients_reach_the_router_and_every_parameter():
    torch.manual_seed(0)
    model = spikemoe.create_model("test_vmoe").train()
    out = model(torch.rand(2, 4, 2, 16, 16))
    (torch.nn.functional.cross_entropy(out.logits, torch.arange(4)) + out.aux_loss).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert model.blocks[1].mlp.router.gate.weight.grad.abs().sum() > 0
    # through the combine weights alone (no aux loss) the router learns too
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(torch.rand(2, 4, 2, 16, 16)).logits,
                                      torch.arange(4)).backward()
    assert model.blocks[1].mlp.router.gate.weight.grad.abs().sum() > 0


RECIPE = textwrap.dedent("""\
    model: {name: test_vmoe}
    data: {name: tiny-frames, T: 2, batch_size: 8}
    optim: {lr: 2.0e-3}
    schedule: {epochs: 2, warmup_epochs: 1}
    run: {log_every: 2, progress: false, profile_samples: 0, tensorboard: false}
""")


def test_train_command_runs_test_vmoe(tmp_path, capsys):
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    spec = synthetic_spec("tiny-frames", n_train=32, n_test=16, T=2, size=16, num_classes=10)
    with temporary_dataset(spec):
        assert engine_main(["train", str(tmp_path / "recipe.yaml"), f"run.out_dir={tmp_path}",
                            "run.name=run"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 * 4 and summary["final_top1"] is not None
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [e for e in epochs if "train/loss" in e][-1]
    assert last["train/aux_loss"] > 0  # the MoE's aux loss reached the trainer
    assert len(last["train/blocks.1.mlp.load"]) == 4 and 0 <= last["test/blocks.1.mlp.dropped"] <= 1


def test_vmoe_initialisation_switch():
    torch.manual_seed(0)
    model = spikemoe.create_model("test_vmoe", init="vmoe", representation_size=32)
    D = 32
    # xavier-uniform per q / k / v kernel [D, D]: bound sqrt(6 / (D + D)) = sqrt(6 / 64)
    bound = (6 / (2 * D)) ** 0.5
    q, k, v = model.blocks[0].attn.qkv.weight.chunk(3)
    for w in (q, k, v):
        assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
    assert model.blocks[0].attn.qkv.bias.abs().sum() == 0
    fc1 = model.blocks[0].mlp.fc1
    assert 0 < fc1.bias.abs().max() < 1e-5  # normal(1e-6)
    # lecun-normal: truncated at 2 sigma, sigma = sqrt(1 / fan_in) / 0.8796; router fan_in 32
    gate = model.blocks[1].mlp.router.gate.weight
    sigma = (1 / D) ** 0.5 / 0.87962566103423978
    assert gate.abs().max() <= 2 * sigma
    assert model.pre_logits[0].weight.abs().max() <= 2 * sigma
    experts = model.blocks[1].mlp.experts  # still a shared initialisation
    assert torch.equal(experts[0].fc1.weight, experts[3].fc1.weight)
    with pytest.raises(ValueError, match="init must be"):
        spikemoe.create_model("test_vit", init="xavier")
