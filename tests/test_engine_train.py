"""End to end through the commands: ``train`` learns and leaves a complete run directory,
``evaluate`` reads it back and reproduces the logged accuracy; the loss is the model contract's
(task + aux, or TET) for any model, spiking or not."""
import json
import textwrap

import pytest
import torch

from spikemoe.cli import main as engine_main
from spikemoe.data import temporary_dataset
from spikemoe.engine import Trainer, load_config, read_metrics
from spikemoe.engine.losses import TETLoss
from spikemoe.engine.synthetic import TinyANN, synthetic_bundle, synthetic_spec
from spikemoe.models import register_model, unregister_model

RECIPE = textwrap.dedent("""\
    model: {name: tiny_ann, num_classes: 10}
    data: {name: tiny-frames, batch_size: 8}
    optim: {lr: 1.0e-2, ema_decay: 0.8}
    schedule: {epochs: 3, warmup_epochs: 1}
    augment: {mixup_alpha: 0.2, prob: 0.5, off_epoch: 2}
    run: {log_every: 4, progress: false, profile_samples: 0}
""")


@pytest.fixture
def tiny_world():
    """``tiny_ann`` as a registered model and ``tiny-frames`` (synthetic) as a registered
    dataset, for the length of a test: the commands find both through the registries."""
    register_model(TinyANN, name="tiny_ann")
    try:
        with temporary_dataset(synthetic_spec("tiny-frames", n_train=160, n_test=40,
                                              num_classes=10)):
            yield
    finally:
        unregister_model("tiny_ann")


def test_train_command_learns_and_leaves_a_complete_run_directory(tmp_path, capsys, tiny_world):
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    assert engine_main(["train", str(tmp_path / "recipe.yaml"), f"run.out_dir={tmp_path}",
                        "run.name=run"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = tmp_path / "run"
    assert summary["run_dir"] == str(run) and summary["steps"] == 3 * 20
    assert summary["final_top1"] >= 90 and summary["best_top1"] >= summary["final_top1"]
    for name in ("config.yaml", "metrics.jsonl", "train.log", "summary.json",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert load_config(run / "config.yaml").model.name == "tiny_ann"
    epochs = read_metrics(run / "metrics.jsonl", "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    for key in ("train/loss", "train/top1", "train/aux_loss", "test/loss", "test/top1",
                "lr", "samples_per_s", "best/top1", "best/epoch", "train/hidden_rate",
                "test/top1_ema"):
        assert key in epochs[-1], key
    assert epochs[-1]["test/top5"] >= epochs[-1]["test/top1"]
    assert epochs[-1]["train/aux_loss"] > 0  # the model's aux loss reached the trainer
    assert len(epochs[-1]["train/logit_norm"]) == 10  # per-class metric kept as a list
    best = max(epochs, key=lambda e: e["test/top1"])
    assert (summary["best_top1"], summary["best_epoch"]) == (best["test/top1"], best["epoch"])
    assert "epoch 3/3: train loss" in (run / "train.log").read_text()

    # evaluate reads the run back: best.pt of the run directory, same accuracy as logged
    assert engine_main(["evaluate", str(run), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["checkpoint"].endswith("best.pt") and r["epoch"] == best["epoch"]
    assert r["top1"] == pytest.approx(best["test/top1"]) and r["n"] == 40
    assert engine_main(["evaluate", str(run / "checkpoints" / "last.pt"), "--ema"]) == 0
    assert f"top-1 {epochs[-1]['test/top1_ema']:.2f}%" in capsys.readouterr().out
    # --set: a model keyword that does not change the weights (the aux term's scale) runs the
    # same network (same accuracy) and is recorded; one the model lacks is refused by name
    assert engine_main(["evaluate", str(run), "--json", "--set", "aux_scale=0.5"]) == 0
    r2 = json.loads(capsys.readouterr().out)
    assert r2["model_overrides"] == {"aux_scale": 0.5} and r2["top1"] == r["top1"]
    assert engine_main(["evaluate", str(run), "--set", "no_such_key=1"]) == 2
    assert "no_such_key" in capsys.readouterr().err
    # a dataset with other classes than the model's
    assert engine_main(["evaluate", str(run), "--data", "dvs128-gesture"]) == 2
    assert "10 output classes but dvs128-gesture has 11" in capsys.readouterr().err


def test_loss_is_tet_plus_aux_for_a_spiking_model(tmp_path):
    cfg = load_config(None, ["model.name=test_spikformer_semm", "model.num_classes=4",
                             "optim.tet=true", "optim.tet_lambda=0.25", "optim.aux_weight=2.0",
                             "data.batch_size=8", f"run.out_dir={tmp_path}", "run.progress=false"])
    trainer = Trainer(cfg, data=synthetic_bundle())
    x, y = next(iter(trainer.train_loader))
    loss, out = trainer.forward_backward(x, y, epoch=0)
    captured = []
    handle = trainer.model.head.register_forward_hook(lambda m, a, o: captured.append(o))
    again = trainer.model(x)  # the model resets its state: the same logits again
    handle.remove()
    assert torch.equal(again.logits, out.logits) and captured[0].shape == (2, 8, 4)
    expected = TETLoss(0.1, lamb=0.25, means=1.0)(captured[0], y) + 2.0 * again.aux_loss
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(p.grad is not None for p in trainer.model.parameters() if p.requires_grad)
    trainer.close()
