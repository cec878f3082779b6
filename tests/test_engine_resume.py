"""Exact resume: a run stopped (or SIGKILLed) mid-epoch and resumed ends bit-identical, on CPU,
to one never stopped: weights, optimiser, EMA, schedule and the logged epoch metrics.

Tiny: the 28k-parameter test_spikformer_semm on 64 synthetic [T=2, 2, 16, 16] samples, batch
8 (8 steps per epoch), 3 epochs, with MixUp/CutMix, EMA and clipping on so that every random
stream and every piece of state matters."""
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from spikemoe.engine import Trainer, load_checkpoint, load_config, read_metrics
from spikemoe.engine.synthetic import synthetic_bundle

RECIPE = textwrap.dedent("""\
    model: {name: test_spikformer_semm, num_classes: 4}
    data: {batch_size: 8}
    optim: {lr: 3.0e-3, ema_decay: 0.9, clip_grad: 1.0}
    schedule: {epochs: 3, warmup_epochs: 1}
    augment: {mixup_alpha: 0.5, cutmix_alpha: 1.0, prob: 0.8}
    run: {log_every: 3, progress: false, tensorboard: false}
""")
STEPS_PER_EPOCH, TOTAL = 8, 24


def _cfg(tmp_path: Path, *overrides: str):
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    return load_config(tmp_path / "recipe.yaml", [f"run.out_dir={tmp_path}", *overrides])


def _state(trainer: Trainer) -> dict:
    return {"model": trainer.model.state_dict(), "ema": trainer.ema.state_dict(),
            "opt": trainer.optimizer.state_dict()["state"]}


def _assert_identical(a: dict, b: dict) -> None:
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    for i in a["opt"]:
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(a["opt"][i][k], b["opt"][i][k]), f"optimizer state {i}.{k} differs"


def _epochs(run_dir: Path) -> list[dict]:
    skip = ("samples_per_s", "epoch_time_s")  # wall-clock numbers
    return [{k: v for k, v in r.items() if k not in skip}
            for r in read_metrics(run_dir / "metrics.jsonl", "epoch")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    trainer = Trainer(_cfg(tmp, "run.name=ref"), data=synthetic_bundle())
    summary = trainer.fit()
    return _state(trainer), _epochs(tmp / "ref"), summary


@pytest.mark.parametrize("stop_at", [11, 16])  # mid-epoch 2, and the end of epoch 2
def test_stop_and_resume_is_bit_identical(tmp_path, uninterrupted, stop_at):
    ref_state, ref_epochs, ref_summary = uninterrupted
    first = Trainer(_cfg(tmp_path, "run.name=r", f"run.stop_after_steps={stop_at}"),
                    data=synthetic_bundle())
    assert first.fit()["stopped"]
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert (ckpt["step"], ckpt["epoch"]) == (stop_at, 1)
    resumed = Trainer(_cfg(tmp_path, "run.name=r", f"resume={tmp_path / 'r'}"),
                      data=synthetic_bundle())
    assert resumed.step == stop_at
    summary = resumed.fit()
    _assert_identical(_state(resumed), ref_state)
    assert _epochs(tmp_path / "r") == ref_epochs  # the killed epoch's metrics included
    assert summary["final_top1"] == ref_summary["final_top1"] and summary["steps"] == TOTAL
    steps = [r["step"] for r in read_metrics(tmp_path / "r" / "metrics.jsonl", "step")]
    assert steps == sorted(set(steps))  # no record logged twice across the restart


CHILD = textwrap.dedent("""\
    import sys
    from spikemoe.engine import Trainer, load_config
    from spikemoe.engine.synthetic import synthetic_bundle
    cfg = load_config(sys.argv[1], sys.argv[2:])
    Trainer(cfg, data=synthetic_bundle(delay_s=0.01)).fit()  # 80 ms of loading per step
""")


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, uninterrupted, kill_once_written):
    ref_state, ref_epochs, _ = uninterrupted
    _cfg(tmp_path)  # writes recipe.yaml
    (tmp_path / "child.py").write_text(CHILD)
    last = tmp_path / "k" / "checkpoints" / "last.pt"
    kill_once_written([sys.executable, str(tmp_path / "child.py"), str(tmp_path / "recipe.yaml"),
                       f"run.out_dir={tmp_path}", "run.name=k", "run.save_every_steps=3"], last)
    step = load_checkpoint(last)["step"]
    assert 0 < step < TOTAL and step % STEPS_PER_EPOCH != 0, f"checkpoint at step {step}"
    resumed = Trainer(_cfg(tmp_path, "run.name=k", f"resume={tmp_path / 'k'}"),
                      data=synthetic_bundle())
    assert resumed.step == step
    resumed.fit()
    _assert_identical(_state(resumed), ref_state)
    assert _epochs(tmp_path / "k") == ref_epochs
