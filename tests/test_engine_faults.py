"""Faults: a NaN loss stops with its step and keeps the last good checkpoint; wrong resumes
and bad input end in one readable paragraph, not a traceback."""
import math
import textwrap

import pytest
import torch
from torch import nn

from spikemoe.cli import main as engine_main
from spikemoe.engine import (
    CheckpointError,
    NonFiniteLossError,
    Trainer,
    load_checkpoint,
    load_config,
    read_metrics,
)
from spikemoe.engine.synthetic import TinyANN, synthetic_bundle

RECIPE = textwrap.dedent("""\
    model: {name: test_spikformer_semm, num_classes: 4}
    data: {batch_size: 8}
    schedule: {epochs: 2, warmup_epochs: 0}
    run: {log_every: 4, save_every_steps: 2, progress: false, tensorboard: false}
""")


def _cfg(tmp_path, *overrides):
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    return load_config(tmp_path / "recipe.yaml", [f"run.out_dir={tmp_path}", "run.name=r", *overrides])


class NaNAtCall(nn.Module):
    """Wraps a model; its ``at``-th training forward returns a NaN auxiliary loss."""

    def __init__(self, inner: nn.Module, at: int) -> None:
        super().__init__()
        self.inner, self.at, self.calls, self.num_classes = inner, at, 0, inner.num_classes

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                return out._replace(aux_loss=out.aux_loss * math.nan)
        return out


def test_nan_loss_stops_with_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # 8 steps per epoch; checkpoints every 2 steps; the loss of step 7 is NaN. The check runs
    # at step 8 (log interval): the weights are NaN by then, but nothing is saved after step 6.
    model = NaNAtCall(TinyANN(), at=7)
    trainer = Trainer(_cfg(tmp_path), data=synthetic_bundle(), model=model)
    with pytest.raises(NonFiniteLossError, match=r"NaN/inf at step 7 \(epoch 1, batch 7 of 8\)") as e:
        trainer.fit()
    assert e.value.step == 7 and "last good checkpoint is" in str(e.value)
    assert any(not torch.isfinite(p).all() for p in model.parameters())  # it did go bad
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert ckpt["step"] == 6
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert not (tmp_path / "r" / "checkpoints" / "best.pt").exists()
    events = read_metrics(tmp_path / "r" / "metrics.jsonl", "event")
    assert [(ev["event"], ev["step"]) for ev in events] == [("non_finite_loss", 7)]
    # the run continues from the good checkpoint (same wrapper: same parameter names)
    again = Trainer(_cfg(tmp_path, f"resume={tmp_path / 'r'}"), data=synthetic_bundle(),
                    model=NaNAtCall(TinyANN(), at=-1))
    assert again.step == 6 and again.fit()["steps"] == 16


def test_resume_with_another_model_is_refused(tmp_path):
    Trainer(_cfg(tmp_path, "run.stop_after_steps=2"), data=synthetic_bundle()).fit()
    with pytest.raises(CheckpointError, match=r"trained with model \{'name': 'test_spikformer_semm'"
                                              r".*Resume with the run's own config"):
        Trainer(_cfg(tmp_path, "model.name=test_spike_driven_semm", f"resume={tmp_path / 'r'}"),
                data=synthetic_bundle())
    with pytest.raises(ValueError, match=r"cannot be resumed with a different data\.batch_size "
                                         r"\(data\.batch_size: 8 -> 16\)"):
        Trainer(_cfg(tmp_path, "data.batch_size=16", f"resume={tmp_path / 'r'}"),
                data=synthetic_bundle())
    with pytest.raises(ValueError, match=r"already holds a run .*Continue it with resume="):
        Trainer(_cfg(tmp_path), data=synthetic_bundle())  # same run.name, no resume


def test_model_and_dataset_classes_must_agree(tmp_path):
    with pytest.raises(ValueError, match="the model has 10 output classes but .* has 4; "
                                         "set model.num_classes=4"):
        Trainer(_cfg(tmp_path, "model.num_classes=10"), data=synthetic_bundle())


def test_cli_errors_are_one_paragraph(tmp_path, capsys):
    assert engine_main(["train", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spikemoe train: error: override 'optim.lrr=1': unknown key") \
        and "Did you mean 'optim.lr'" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert engine_main(["train", f"resume={tmp_path / 'empty'}"]) == 2
    assert "has no checkpoint" in capsys.readouterr().err
    assert engine_main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert engine_main(["evaluate", str(tmp_path / "empty")]) == 2
    assert "has no checkpoint" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    assert engine_main(["evaluate", str(bad)]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
