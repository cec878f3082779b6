"""ViT and V-MoE models: time folding, the input contract, MoE placement, published
parameter counts, gradients to the router, and `spikemoe train` on test_vmoe."""
import json
import textwrap

import pytest
import torch

import spikemoe
from spikemoe.engine.commands import main as engine_main
from spikemoe.engine.synthetic import synthetic_bundle
from spikemoe.layers import TimeFolding
from spikemoe.models.vit import moe_blocks


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


def test_moe_placement():
    assert moe_blocks(12, "every-2") == [1, 3, 5, 7, 9, 11]
    assert moe_blocks(12, "last-2") == [9, 11]
    assert moe_blocks(8, "last-1") == [7] and moe_blocks(2, "every-2") == [1]
    assert moe_blocks(12, "none") == []
    with pytest.raises(ValueError, match="n must be 1..6"):
        moe_blocks(12, "last-7")
    with pytest.raises(ValueError, match="'last-<n>'"):
        moe_blocks(12, "every-3")
    with torch.device("meta"):
        model = spikemoe.create_model("vmoe_s_32_last2")
    assert model.moe_blocks == [9, 11] and len(model.blocks[9].mlp.experts) == 8


def test_parameter_counts_match_published_vits_and_moe_adds_experts():
    # ViT-S/16 22.05M and ViT-B/16 86.57M (timm: 22,050,664 and 86,567,656), 224 px, 1000 classes
    assert _count("vit_s_16") == 22_050_664
    assert _count("vit_b_16") == 86_567_656
    # V-MoE-S/16 Every-2: 6 MoE blocks, each 7 more MLPs (2*384*1536 + 1536 + 384 = 1,181,568)
    # and a router (384 x 8 = 3,072): 22,050,664 + 6 * (7 * 1,181,568 + 3,072) = 71,694,952
    assert _count("vmoe_s_16") == 71_694_952
    for size in ("2_256_dvs", "4_384_cifar", "s_16", "b_16"):
        assert _count(f"vmoe_{size}") > _count(f"vit_{size}")


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
    data: {name: digits-dvs, T: 2, batch_size: 8}
    optim: {lr: 2.0e-3}
    schedule: {epochs: 2, warmup_epochs: 1}
    run: {log_every: 2, progress: false, profile_samples: 0, tensorboard: false}
""")


def test_train_command_runs_test_vmoe(tmp_path, capsys, monkeypatch):
    data = synthetic_bundle(n_train=32, n_test=16, T=2, size=16, num_classes=10)
    monkeypatch.setattr("spikemoe.engine.trainer.build_datasets", lambda cfg: data)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    assert engine_main(["train", str(tmp_path / "recipe.yaml"), f"run.out_dir={tmp_path}",
                        "run.name=run"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 * 4 and summary["final_top1"] is not None
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [e for e in epochs if "train/loss" in e][-1]
    assert last["train/aux_loss"] > 0  # the MoE's aux loss reached the trainer
    assert len(last["train/blocks.1.mlp.load"]) == 4 and 0 <= last["test/blocks.1.mlp.dropped"] <= 1
