"""The byte-level LM task: the ``stdlib-bytes`` dataset (windows, shift by one, file-level
split, unigram baseline) on a fake corpus in the real layout, and the trainer's token-level
cross-entropy and perplexity."""
import json
import math

import pytest
import torch
from torch import nn

from spikemoe.data import collate_time_major, create_dataset, dataset_info
from spikemoe.data.text_corpus import split_of, stdlib_files
from spikemoe.engine import Trainer, load_config, read_metrics
from spikemoe.engine.evaluate import evaluate_model
from spikemoe.engine.losses import token_view
from spikemoe.engine.task import task_for
from spikemoe.models import ModelOutput


@pytest.fixture
def corpus(tmp_path):
    """Files sorted by relative path; crc32 % 10: a.py 2, pkg/c.py 2 (train), y.py 0 (test)."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "a.py").write_bytes(b"0123456789")
    (tmp_path / "pkg" / "c.py").write_bytes(b"ABCDE")
    (tmp_path / "y.py").write_bytes(b"xyz!" * 3)
    (tmp_path / "site-packages" / "m.py").write_bytes(b"third-party")  # not the stdlib
    (tmp_path / "notes.txt").write_bytes(b"not python")
    return tmp_path


def test_windows_are_shifted_by_one_and_the_split_is_by_file(corpus):
    assert [split_of(p) for p in ("a.py", "pkg/c.py", "y.py")] == ["train", "train", "test"]
    train = create_dataset("stdlib-bytes", "train", root=corpus, T=4)
    # train bytes: "0123456789" + "ABCDE" = 15 bytes -> (15 - 1) // 4 = 3 windows of 4 + 1
    assert [p.name for p in train.files] == ["a.py", "c.py"] and len(train) == 3
    x, y = train[0]
    assert bytes(x.tolist()) == b"0123" and bytes(y.tolist()) == b"1234"  # y = next byte
    x, y = train[2]
    assert bytes(x.tolist()) == b"89AB" and bytes(y.tolist()) == b"9ABC"  # across files
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (4,)
    with pytest.raises(IndexError):
        train[3]
    test = create_dataset("stdlib-bytes", "test", root=corpus, T=4)
    assert [p.name for p in test.files] == ["y.py"] and len(test) == 2  # (12 - 1) // 4
    # deterministic: a second build reads the same files in the same order
    again = create_dataset("stdlib-bytes", "train", root=corpus, T=4)
    assert torch.equal(torch.stack(again[1]), torch.stack(train[1]))
    xb, yb = collate_time_major([train[0], train[1]])
    assert xb.shape == yb.shape == (2, 4) and torch.equal(xb[:, 1:], yb[:, :-1])
    # the unigram baseline: 15 distinct bytes once each -> H = ln 15, perplexity 15
    base = train.baselines(test)
    assert base["unigram_perplexity"] == pytest.approx(15.0)
    assert base["unigram_entropy_bits"] == pytest.approx(math.log2(15))
    # test bytes x y z ! are unseen in train: add-one gives each 1 / (15 + 256)
    assert base["unigram_test_perplexity"] == pytest.approx(271.0)
    info = dataset_info("stdlib-bytes")
    assert (info.kind, info.num_classes, info.needs_root) == ("text", 256, False)


def test_bad_text_arguments_say_what_to_do(corpus, tmp_path):
    with pytest.raises(ValueError, match="fewer than one window"):
        create_dataset("stdlib-bytes", "test", root=corpus, T=64)
    with pytest.raises(FileNotFoundError, match="no .py file"):
        (tmp_path / "empty").mkdir()
        create_dataset("stdlib-bytes", "train", root=tmp_path / "empty")
    with pytest.raises(ValueError, match="no augmentation"):
        create_dataset("stdlib-bytes", "train", root=corpus, T=4, augment=True)


def test_the_real_standard_library_is_found_without_site_packages():
    root, files = stdlib_files()
    rel = [p.relative_to(root).as_posix() for p in files]
    assert len(files) > 100 and "os.py" in rel and rel == sorted(rel)
    assert not any("site-packages" in r for r in rel)
    held_out = sum(split_of(r) == "test" for r in rel) / len(rel)
    assert 0.05 < held_out < 0.15  # crc32 % 10 == 0: about one file in ten


class _FavoursZero(nn.Module):
    """An LM whose logits are ln 2 for byte 0 and 0 for the others: p(0) = 2/257, else 1/257."""

    def forward(self, x):
        logits = torch.zeros(*x.shape, 256)
        logits[..., 0] = math.log(2)
        return ModelOutput(logits, torch.zeros(()), {})


def test_token_level_loss_and_perplexity_by_hand():
    x = torch.zeros(1, 4, dtype=torch.int64)
    y = torch.tensor([[0, 5, 0, 7]])
    r = evaluate_model(_FavoursZero(), [(x, y)], torch.device("cpu"), task_for("text"))
    # per token: -ln(2/257) for the two 0s, -ln(1/257) for 5 and 7; mean = ln 257 - ln 2 / 2,
    # perplexity = 257 / sqrt(2) = 181.73; argmax is byte 0: 2 of 4 right
    assert r["loss"] == pytest.approx(math.log(257) - math.log(2) / 2)
    assert r["perplexity"] == pytest.approx(257 / math.sqrt(2))
    assert (r["top1"], r["tokens"], r["n"]) == (50.0, 4, 1)
    logits, targets = token_view(torch.randn(2, 3, 256), torch.zeros(2, 3, dtype=torch.int64))
    assert logits.shape == (6, 256) and targets.shape == (6,)
    with pytest.raises(ValueError, match="one prediction per input token"):
        token_view(torch.randn(2, 3, 256), torch.zeros(2, 4, dtype=torch.int64))


def test_trainer_trains_a_language_model_on_token_level_cross_entropy(corpus, tmp_path):
    cfg = load_config(None, [
        "model.name=test_causal_transformer", "model.task=lm", "model.T=4",
        "data.name=stdlib-bytes", f"data.root={corpus}", "data.T=4", "data.batch_size=2",
        "data.train_samples=2", "optim.label_smoothing=0", "schedule.epochs=2",
        "schedule.warmup_epochs=0", f"run.out_dir={tmp_path}", "run.name=lm",
        "run.progress=false", "run.tensorboard=false", "run.profile_samples=0"])
    trainer = Trainer(cfg)
    assert len(trainer.data.train) == 2 and trainer.steps_per_epoch == 1  # 2 of 3 windows
    summary = trainer.fit()
    last = read_metrics(tmp_path / "lm" / "metrics.jsonl", "epoch")[-1]
    # perplexity = exp(mean token cross-entropy); the train loss has no aux term here
    assert last["test/perplexity"] == pytest.approx(math.exp(last["test/loss"]))
    assert last["train/perplexity"] == pytest.approx(math.exp(last["train/loss"]))
    assert last["test/tokens"] == 2 * 4 and 0 <= last["test/top1"] <= 100
    assert summary["final_perplexity"] == pytest.approx(last["test/perplexity"])
    assert summary["baselines"]["unigram_perplexity"] == pytest.approx(15.0)
    saved = json.loads((tmp_path / "lm" / "summary.json").read_text())
    assert saved["baselines"]["unigram_perplexity"] == pytest.approx(15.0)
