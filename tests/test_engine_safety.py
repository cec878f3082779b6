"""No run loses data or lies about itself (issue 11): the repo is self-contained, run
directories are never shared, resume never half-applies a config, checkpoint advice is checked
before it is given, and settings or values that would break training are refused."""
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from spikemoe.engine import (
    CheckpointError,
    NonFiniteLossError,
    Trainer,
    load_checkpoint,
    load_config,
    read_metrics,
)
from spikemoe.engine.checkpoint import save_checkpoint
from spikemoe.engine.config import ConfigError
from spikemoe.engine.run_dir import RunDirError, claim_run_dir
from spikemoe.engine.synthetic import TinyANN, synthetic_bundle

REPO = Path(__file__).resolve().parents[1]
RECIPE = textwrap.dedent("""\
    model: {name: test_spikformer_semm, num_classes: 4}
    data: {batch_size: 8}
    optim: {lr: 3.0e-3}
    schedule: {epochs: 2, warmup_epochs: 0}
    run: {log_every: 4, save_every_steps: 2, progress: false, tensorboard: false}
""")


def _cfg(tmp_path, *overrides):
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    return load_config(tmp_path / "recipe.yaml",
                       [f"run.out_dir={tmp_path}", "run.name=r", *overrides])


# ------------------------------------------------------------------ 1. a self-contained repo
def test_the_repo_names_no_path_outside_itself():
    """No tracked file reads the shared folder beside the checkout or a machine's absolute
    path: a clone with nothing beside it must pass."""
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    needles = ("/wo" + "rk/", "../sha" + "red", "sha" + "red/fix" + "tures")
    offenders = []
    for name in listed.stdout.splitlines():
        path = REPO / name
        if path.suffix not in (".py", ".md", ".yaml", ".toml", ".sh", ".txt", "") \
                or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        offenders += [f"{name}: {n}" for n in needles if n in text]
    assert offenders == []


def test_the_real_recordings_are_shipped_with_their_origin():
    real = REPO / "tests" / "fixtures" / "real"
    names = {line.split()[1] for line in (real / "SHA256SUMS").read_text().splitlines()}
    assert names == {"sample.aedat4", "sample_nmnist.bin", "sample_aedat_header.aedat"}
    assert all((real / n).is_file() for n in names)
    readme = (real / "README.md").read_text()
    assert "tonic" in readme and "GPL-3.0" in readme


def test_tests_cache_outside_the_users_home():
    """conftest's private caches: frames and compiled kernels go to temporary folders."""
    from spikemoe.data.cache import default_cache_dir
    from spikemoe.kernels.build_util import cache_dir as kernel_cache_dir

    for folder in (default_cache_dir(), kernel_cache_dir()):
        assert Path.home() / ".cache" not in folder.parents


# ------------------------------------------------------------------ 2. one run, one folder
def test_a_generated_name_that_is_taken_gets_a_suffix_and_a_chosen_one_is_refused(tmp_path):
    assert claim_run_dir(tmp_path, "m-d-1", chosen=False) == tmp_path / "m-d-1"
    assert claim_run_dir(tmp_path, "m-d-1", chosen=False) == tmp_path / "m-d-1-2"
    (tmp_path / "killed").mkdir()  # a run killed before its first checkpoint
    with pytest.raises(RunDirError, match="already exists .* never shares a folder"):
        claim_run_dir(tmp_path, "killed", chosen=True)


def test_concurrent_claims_of_one_name_get_distinct_folders(tmp_path):
    got, barrier = [], threading.Barrier(8)

    def claim():
        barrier.wait()
        got.append(claim_run_dir(tmp_path, "same-second", chosen=False))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(set(got)) == 8 and all(p.is_dir() for p in got)


def test_an_out_dir_that_cannot_be_a_folder_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match=r"run\.out_dir=.*exists but is not a folder"):
        claim_run_dir(tmp_path / "file", "r", chosen=False)
    with pytest.raises(RunDirError, match=r"cannot be created"):
        claim_run_dir(tmp_path / "file" / "below", "r", chosen=False)


def test_a_failing_model_leaves_no_run_folder(tmp_path):
    with pytest.raises(ValueError, match="has no hyperparameter 'no_such_option'"):
        Trainer(_cfg(tmp_path, "model.no_such_option=3"), data=synthetic_bundle())
    assert not (tmp_path / "r").exists()


def test_two_concurrent_train_processes_get_two_run_directories(tmp_path):
    """Two real ``spikemoe train`` with the same run.out_dir, started together."""
    cmd = [sys.executable, "-m", "spikemoe", "train", "model.name=test_spikformer",
           "model.num_classes=10", "data.T=2", "data.size=16", "data.train_samples=16",
           "data.test_samples=8", "data.batch_size=8", "schedule.epochs=1",
           "schedule.warmup_epochs=0", f"run.out_dir={tmp_path}", "run.profile_samples=0",
           "run.progress=false", "run.tensorboard=false"]
    from spikemoe.data import create_dataset

    for split in ("train", "test"):  # the session's frame cache: built once, or already there
        create_dataset("digits-dvs", split, T=2, size=16)
    env = {**os.environ, "SPIKEMOE_RUN_STAMP": "same-second"}  # both generate the same name
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1].decode()[-2000:] for o in outs]
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    base = "test_spikformer-digits-dvs-same-second"
    assert [r.name for r in runs] == [base, base + "-2"]  # collided, and the second one moved
    for run in runs:
        assert (run / "checkpoints" / "last.pt").is_file()
        assert len(read_metrics(run / "metrics.jsonl", "final")) == 1
        assert len(read_metrics(run / "metrics.jsonl", "epoch")) == 1
    summaries = {json.loads(o[0].decode().strip().splitlines()[-1])["run_dir"] for o in outs}
    assert summaries == {str(r) for r in runs}


# ------------------------------------------------------------------ 3. resume and the config
def _stopped_run(tmp_path):
    Trainer(_cfg(tmp_path, "run.stop_after_steps=4"), data=synthetic_bundle(),
            model=TinyANN()).fit()


def test_resume_refuses_a_changed_key_naming_old_and_new(tmp_path):
    _stopped_run(tmp_path)
    with pytest.raises(ConfigError, match=r"optim\.lr: 0\.003 -> 0\.0001.*"
                                          r"optim\.weight_decay: 0\.06 -> 0\.5.*"
                                          r"resume_changes=\[optim\.lr,optim\.weight_decay\]"):
        Trainer(_cfg(tmp_path, f"resume={tmp_path / 'r'}", "optim.lr=1e-4",
                     "optim.weight_decay=0.5"), data=synthetic_bundle(), model=TinyANN())
    # keys that cannot change the training are free
    t = Trainer(_cfg(tmp_path, f"resume={tmp_path / 'r'}", "run.log_every=1"),
                data=synthetic_bundle(), model=TinyANN())
    t.close()


def test_a_listed_change_is_applied_to_the_optimiser_and_scheduler(tmp_path):
    _stopped_run(tmp_path)
    t = Trainer(_cfg(tmp_path, f"resume={tmp_path / 'r'}", "optim.lr=1e-4",
                     "optim.weight_decay=0.5", "resume_changes=[optim.lr,optim.weight_decay]"),
                data=synthetic_bundle(), model=TinyANN())
    # 8 steps per epoch, 2 epochs, no warm-up, update per step: at step 4 the cosine factor is
    # (1e-5/lr + (1 - 1e-5/lr) (1 + cos(pi * 0.5 / 2)) / 2); with lr = 1e-4 that is
    # 1e-5 + 9e-5 * (1 + cos(pi/4)) / 2 = 8.6820e-5
    expected = 1e-5 + 9e-5 * 0.5 * (1 + 0.7071067811865476)
    assert t.step == 4
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
    assert t.scheduler.base_lrs == [1e-4, 1e-4]
    assert [g["weight_decay"] for g in t.optimizer.param_groups] == [0.5, 0.0]
    t.train_step(*next(iter(t.train_loader)), 0)  # the next step follows the new schedule
    expected5 = 1e-5 + 9e-5 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 5 / 16)).item())
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(expected5, rel=1e-6)
    t.close()
    events = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl", "event")
              if r["event"] == "resume_changes"]
    assert events and events[0]["changes"]["optim.lr"] == [0.003, 0.0001]
    assert "optim.lr: 0.003 -> 0.0001" in (tmp_path / "r" / "train.log").read_text()
    assert load_config(tmp_path / "r" / "config.yaml").optim.lr == 1e-4


# ------------------------------------------------------------------ 4. checkpoint advice
def _two_checkpoints(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    good = {"model": {"w": torch.arange(4.0)}, "config": {"model": {"name": "m"}}, "step": 1}
    save_checkpoint(good, path, keep_previous=True)
    save_checkpoint({**good, "step": 2}, path, keep_previous=True)
    return path


def test_advice_names_only_checkpoints_that_were_checked(tmp_path):
    path = _two_checkpoints(tmp_path)
    prev = path.with_suffix(".prev.pt")
    path.write_bytes(path.read_bytes()[:100])
    prev.write_bytes(prev.read_bytes()[:100])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "intact" not in str(e.value) and "Checked and readable" not in str(e.value)
    assert "Also unreadable" in str(e.value) and "start a fresh run" in str(e.value)


def test_an_empty_checkpoint_is_a_sentence_not_a_traceback(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"it is empty \(0 bytes"):
        load_checkpoint(tmp_path / "last.pt")


def test_a_corrupt_best_is_not_advised_as_its_own_cure(tmp_path):
    path = _two_checkpoints(tmp_path)
    best = path.with_name("best.pt")
    best.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(best)
    message = str(e.value)
    assert "use best.pt" not in message and f"resume={path.with_suffix('.prev.pt')}" in message


def test_a_corrupt_last_is_never_rotated_over_the_good_previous(tmp_path):
    """Following the advice (resume from last.prev.pt) keeps last.prev.pt good."""
    Trainer(_cfg(tmp_path, "run.stop_after_steps=4"), data=synthetic_bundle(),
            model=TinyANN()).fit()
    ckpts = tmp_path / "r" / "checkpoints"
    last, prev = ckpts / "last.pt", ckpts / "last.prev.pt"
    assert load_checkpoint(prev)["step"] == 2
    last.write_bytes(last.read_bytes()[:1000])  # truncated on disk
    t = Trainer(_cfg(tmp_path, f"resume={prev}", "run.stop_after_steps=4"),
                data=synthetic_bundle(), model=TinyANN())
    assert t.step == 2
    t.fit()  # saves at step 4: the corrupt last.pt must not become last.prev.pt
    assert load_checkpoint(prev)["step"] == 2 and load_checkpoint(last)["step"] == 4


# ------------------------------------------------------------------ 5. settings that break
@pytest.mark.parametrize("override, key", [
    ("optim.clip_grad=-1", "optim.clip_grad"), ("schedule.min_lr=-1", "schedule.min_lr"),
    ("optim.weight_decay=-5", "optim.weight_decay"), ("optim.betas=[2,3]", "optim.betas"),
    ("optim.eps=0", "optim.eps"), ("run.profile_samples=-1", "run.profile_samples"),
    ("run.stop_after_steps=0", "run.stop_after_steps"), ("data.size=[0,32]", "data.size"),
    ("run.name=../x", "run.name"),
])
def test_settings_that_reverse_or_break_training_are_refused(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + " must"):
        load_config(None, [override])


def test_a_config_folder_is_called_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a YAML file"):
        load_config(tmp_path)


# ------------------------------------------------------------------ 7. non-finite values
class _NaNInput(torch.utils.data.Dataset):
    def __init__(self, inner, bad: int):
        self.inner, self.bad, self.num_classes = inner, bad, inner.num_classes

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        x, y = self.inner[i]
        return (x * float("nan"), y) if i == self.bad else (x, y)


@pytest.mark.parametrize("model", [None, TinyANN], ids=["spiking", "ann"])
def test_a_nan_input_stops_training_before_any_save(tmp_path, model):
    """A spiking model swallows NaN (NaN >= V_th is False), an ANN turns it into a NaN loss:
    both are reported as the input's fault, with the data advice."""
    bundle = synthetic_bundle()
    bundle.train = _NaNInput(bundle.train, bad=0)  # in whichever batch it lands
    with pytest.raises(NonFiniteLossError, match="an input batch held NaN/inf values .*check "
                                                 "the data"):
        Trainer(_cfg(tmp_path), data=bundle, model=model() if model else None).fit()
    assert not (tmp_path / "r" / "checkpoints" / "last.pt").exists() or all(
        torch.isfinite(v).all() for v in load_checkpoint(
            tmp_path / "r" / "checkpoints" / "last.pt")["model"].values()
        if v.is_floating_point())


class _NaNGrad(torch.autograd.Function):
    """Identity forward; NaN gradient backward: the loss stays finite."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


class _NaNGradModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner, self.num_classes = TinyANN(), 4

    def forward(self, x):
        out = self.inner(x)
        return out._replace(logits=_NaNGrad.apply(out.logits))


def test_nan_gradients_with_a_finite_loss_stop_training(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"the gradients became NaN/inf at step 1 "):
        Trainer(_cfg(tmp_path), data=synthetic_bundle(), model=_NaNGradModel()).fit()
    assert not (tmp_path / "r" / "checkpoints" / "last.pt").exists()


# ------------------------------------------------------------------ 8. what a run reports
def test_files_skipped_as_corrupt_reach_summary_and_log(tmp_path):
    bundle = synthetic_bundle()
    bundle.train.skipped_files = [("root/a/x.aedat4", "corrupt: bad header")]
    summary = Trainer(_cfg(tmp_path, "schedule.epochs=1"), data=bundle, model=TinyANN()).fit()
    assert summary["skipped_files"] == [["root/a/x.aedat4", "corrupt: bad header"]]
    stored = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert stored["skipped_files"] == summary["skipped_files"]
    assert "root/a/x.aedat4: corrupt: bad header" in (tmp_path / "r" / "train.log").read_text()


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    Trainer(_cfg(tmp_path, "schedule.epochs=1"), data=synthetic_bundle(), model=TinyANN()).fit()
    run = tmp_path / "r"
    before = (run / "summary.json").read_text()
    again = Trainer(_cfg(tmp_path, "schedule.epochs=1", f"resume={run}"),
                    data=synthetic_bundle(), model=TinyANN()).fit()
    assert (run / "summary.json").read_text() == before
    assert again["samples_per_s"] is not None
    assert len(read_metrics(run / "metrics.jsonl", "final")) == 1


def test_a_torn_last_metrics_line_is_dropped_and_a_bad_middle_line_named(tmp_path):
    Trainer(_cfg(tmp_path, "run.stop_after_steps=4"), data=synthetic_bundle(),
            model=TinyANN()).fit()
    metrics = tmp_path / "r" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"kind": "step", "step": 5, "lo')  # killed mid-write
    t = Trainer(_cfg(tmp_path, f"resume={tmp_path / 'r'}"), data=synthetic_bundle(),
                model=TinyANN())
    t.close()
    assert "is cut short" in (tmp_path / "r" / "train.log").read_text()
    lines = metrics.read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    metrics.write_text(lines[0] + "\nnot json\n" + lines[0] + "\n")  # damage mid-file
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 2 of .*not valid JSON"):
        read_metrics(metrics)


def test_a_model_that_declares_sigmoid_cross_entropy_trains_on_it(tmp_path):
    """V-MoE's released recipe (``classifier_loss="sigmoid_xent"``): the trainer's loss is the
    per-class sigmoid cross-entropy. K = 4 classes, zero logits: 4 log 2 = 2.7726 per sample."""
    from spikemoe.models.vit import sigmoid_cross_entropy

    model = TinyANN()
    model.classifier_loss = "sigmoid_xent"
    t = Trainer(_cfg(tmp_path, "optim.label_smoothing=0"), data=synthetic_bundle(), model=model)
    logits, targets = torch.zeros(3, 4), torch.tensor([0, 1, 3])
    assert t.task.loss(logits, targets).item() == pytest.approx(4 * 0.6931471805599453)
    assert t.task.loss(logits, targets).item() == sigmoid_cross_entropy(logits, targets).item()
    t.close()


def test_training_refuses_data_of_another_size_than_the_model(tmp_path):
    cfg = load_config(None, [f"run.out_dir={tmp_path}", "model.name=test_spikformer",
                             "model.num_classes=10", "data.T=2", "data.size=32"])
    with pytest.raises(ValueError, match=r"takes samples of shape \[2, 2, 16, 16\].*"
                                         r"size 32x32 instead of 16x16.*model\.img_size"):
        Trainer(cfg)
    assert list(tmp_path.iterdir()) == []  # refused before a run folder was claimed
