"""The trainer's parts, checked by hand: schedule values, mixing of time-major batches, the TET
loss, samplers, RNG capture, atomic and truncated checkpoints."""
import math
import os
import random

import numpy as np
import pytest
import torch

from spikemoe.engine import CheckpointError, load_checkpoint, load_config, save_checkpoint
from spikemoe.engine.checkpoint import find_checkpoint
from spikemoe.engine.distributed import ResumableDistributedSampler, ShardSampler
from spikemoe.engine.losses import StepLogits, TETLoss
from spikemoe.engine.mixing import build_mixer
from spikemoe.engine.rng import get_rng_state, set_rng_state
from spikemoe.engine.schedule import build_scheduler


def test_warmup_cosine_cooldown_by_hand():
    cfg = load_config(None, ["schedule.epochs=10", "warmup_epochs=2", "cooldown_epochs=3",
                             "warmup_lr=0.0", "min_lr=0.1", "schedule.update=epoch",
                             "optim.lr=1.0"]).schedule
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = build_scheduler(opt, cfg, lr=1.0, steps_per_epoch=4)
    lrs = []
    for _ in range(13 * 4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    per_epoch = lrs[::4]
    assert all(lrs[4 * e:4 * e + 4] == [per_epoch[e]] * 4 for e in range(13))  # fixed in an epoch
    assert per_epoch[:2] == [0.0, 0.5]  # warm-up: 0 + (1 - 0) * e / 2
    # cosine over [0, 10] (timm's warmup_prefix=False): epoch 5 is half way, 0.1 + 0.9 * 0.5
    assert per_epoch[5] == pytest.approx(0.55)
    assert per_epoch[2] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 2 / 10)))
    assert per_epoch[10:] == [pytest.approx(0.1)] * 3  # cool-down at min_lr


def test_mixup_on_time_major_frames_mixes_each_sample_the_same_at_every_step():
    torch.manual_seed(0)
    mixer = build_mixer(load_config(None, ["augment.mixup_alpha=1.0"]).augment, num_classes=3)
    x = torch.arange(4.0).view(1, 4, 1, 1, 1).expand(5, 4, 2, 3, 3).clone()  # [T, B, C, H, W]
    y = torch.tensor([0, 1, 2, 0])
    xm, t = mixer(x, y, epoch=0)
    assert xm.shape == x.shape and t.shape == (4, 3)
    assert torch.allclose(t.sum(1), torch.ones(4))
    # sample b becomes lam * x[b] + (1 - lam) * x[b - 1]: one value over T, C, H, W
    lam = t[1, 1].item()  # sample 1 (label 1) mixed with sample 0 (label 0)
    assert torch.allclose(xm[:, 1], torch.full_like(xm[:, 1], lam * 1 + (1 - lam) * 0))
    assert torch.allclose(xm[:, 2], torch.full_like(xm[:, 2], lam * 2 + (1 - lam) * 1))
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 2, 2)  # [B, C, H, W]: batch first
    im, t = mixer(images, y, epoch=0)
    lam = t[1, 1].item()
    assert torch.allclose(im[1], torch.full_like(im[1], lam * 1 + (1 - lam) * 0))


def test_cutmix_box_spans_all_steps_and_mixing_switches_off():
    torch.manual_seed(1)
    mixer = build_mixer(load_config(None, ["augment.cutmix_alpha=1.0", "augment.off_epoch=3"]).augment, 2)
    x = torch.stack([torch.zeros(4, 2, 8, 8), torch.ones(4, 2, 8, 8)], dim=1)  # [T, 2, C, H, W]
    y = torch.tensor([0, 1])
    xm, t = mixer(x, y, epoch=2)
    box = xm[:, 0] == 1  # pixels of sample 0 pasted from sample 1
    assert torch.equal(box, box[:1].expand_as(box))  # the same box at every step and polarity
    assert t[0, 1].item() == pytest.approx(box[0, 0].float().mean().item())  # area = label weight
    xo, yo = mixer(x, y, epoch=3)  # off from epoch 3
    assert xo is x and yo is y


def test_tet_loss_is_the_mean_of_per_step_cross_entropies():
    logits = torch.tensor([[[2.0, 0.0]], [[0.0, 2.0]]])  # [T=2, B=1, K=2]
    y = torch.tensor([0])
    ce = torch.nn.functional.cross_entropy
    expected = (ce(logits[0], y) + ce(logits[1], y)) / 2  # log(1 + e^-2) and log(1 + e^2)
    assert TETLoss()(logits, y).item() == pytest.approx(expected.item())
    assert TETLoss(lamb=0.5, means=1.0)(logits, y).item() == pytest.approx(
        0.5 * expected.item() + 0.5 * ((1 + 1 + 1 + 1) / 4))  # MSE to 1: (2-1)^2, 1, 1, (2-1)^2
    head = torch.nn.Linear(3, 2)
    hook = StepLogits(torch.nn.Sequential(head), "0")
    step_out = head(torch.randn(4, 5, 3))  # [T, B, K]
    assert hook.take(step_out.mean(0)) is step_out
    head(torch.randn(5, 3))  # [B, K]: not per-step
    with pytest.raises(ValueError, match=r"per-step logits \[T, B, K\]"):
        hook.take(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="has no such module"):
        StepLogits(torch.nn.Sequential(head), "head")


def test_samplers_shard_without_overlap_and_resume_mid_epoch():
    data = list(range(10))
    full = ResumableDistributedSampler(data, 1, 0, seed=3)
    full.set_epoch(2)
    order = list(full)
    shards = []
    for r in range(2):
        s = ResumableDistributedSampler(data, 2, r, seed=3)
        s.set_epoch(2)
        shards.append(list(s))
    assert shards[0] == order[0::2] and shards[1] == order[1::2]  # same permutation, interleaved
    full.set_epoch(2, skip=4)
    assert list(full) == order[4:] and len(full) == 6
    full.set_epoch(3)
    assert list(full) != order  # a new epoch, a new order
    assert sorted(list(ShardSampler(7, 0, 2)) + list(ShardSampler(7, 1, 2))) == list(range(7))


def test_rng_state_round_trips_every_generator():
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    state = get_rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_checkpoint_is_atomic_and_a_truncated_one_is_a_clear_error(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    good = {"model": {"w": torch.arange(4.0)}, "config": {"model": {"name": "m"}}, "step": 1}
    save_checkpoint(good, path, keep_previous=True)
    save_checkpoint({**good, "step": 2}, path, keep_previous=True)
    assert load_checkpoint(path)["step"] == 2
    assert load_checkpoint(path.with_suffix(".prev.pt"))["step"] == 1
    assert [p.name for p in path.parent.iterdir() if ".tmp" in p.name] == []
    # a write that dies half way leaves the previous checkpoint whole
    real_save = torch.save

    def dying_save(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    torch.save = dying_save
    try:
        with pytest.raises(OSError, match="disk full"):
            save_checkpoint({**good, "step": 3}, path, keep_previous=True)
    finally:
        torch.save = real_save
    assert load_checkpoint(path)["step"] == 2
    assert not any(".tmp" in p.name for p in path.parent.iterdir())
    # a checkpoint truncated on disk: a clear error naming the intact previous one
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError,
                       match=r"truncated or corrupt.*Checked and readable: .*last\.prev\.pt"):
        load_checkpoint(path)
    assert load_checkpoint(path.with_suffix(".prev.pt"))["step"] == 1


def test_checkpoint_loading_never_runs_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="Python objects that weights-only loading refuses"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_resume_target_without_checkpoint_says_what_to_do(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="has no checkpoint.*without resume="):
        find_checkpoint(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="neither a checkpoint file nor a run directory"):
        find_checkpoint(tmp_path / "nope")
