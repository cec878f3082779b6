"""EventFrameAugment: one geometry for every time step and polarity, counts kept integral,
each op doing what its name says, and the policy drawing all of them."""
import pytest
import torch

from spikemoe.data import EventFrameAugment


def _stack(T=4, h=32, w=32):
    """Frame t = (t + 1) * pattern: an op applied per frame independently would break the ratio."""
    torch.manual_seed(0)
    pattern = (torch.rand(2, h, w) > 0.7).float() * torch.randint(1, 4, (2, h, w))
    return torch.stack([pattern * (t + 1) for t in range(T)])  # [T, 2, H, W]


def test_every_time_step_gets_the_same_geometry():
    frames = _stack()
    aug = EventFrameAugment()
    for seed in range(40):  # covers every op, with and without the flip
        torch.manual_seed(seed)
        out = aug(frames)
        assert out.shape == frames.shape and out.dtype == frames.dtype
        for t in range(4):
            assert torch.equal(out[t], out[0] * (t + 1))
        assert torch.equal(out, out.round()) and out.min() >= 0  # nearest: counts stay counts


def test_ops_do_what_their_names_say():
    frames = torch.zeros(2, 2, 32, 32)
    frames[:, 1, 10, 5] = 3.0  # one ON pixel at (y=10, x=5)
    aug = EventFrameAugment(flip=False)
    assert torch.equal(aug.apply(frames, "Identity", 0.0), frames)
    moved = aug.apply(frames, "TranslateX", 5.0)  # 5 px at 128 -> round(5 * 32 / 128) = 1 px here
    assert moved[0, 1, 10, 6] == 3 and moved.sum() == frames.sum()
    moved = aug.apply(frames, "TranslateY", -5.0)
    assert moved[0, 1, 9, 5] == 3
    rotated = aug.apply(frames, "Rotate", 90.0)  # counter-clockwise about the centre (15.5, 15.5)
    assert rotated[0, 1, 26, 10] == 3
    cut = aug.apply(torch.ones(3, 2, 32, 32), "Cutout", 0.0)
    zeros = (cut == 0).all(dim=(0, 1))  # one rectangle, the same on every frame and polarity
    assert 0.05 * 1024 <= zeros.sum() <= 0.34 * 1024 and torch.equal(cut == 0, zeros.expand_as(cut))


def test_flip_mirrors_and_the_policy_draws_every_op(monkeypatch):
    frames = _stack()
    aug = EventFrameAugment(flip=True, ops=("Identity",))
    seen = {torch.equal(aug(frames), frames.flip(-1)) for _ in range(30)}
    assert seen == {True, False}  # flipped about half the time
    chosen = []
    policy = EventFrameAugment(flip=False)
    monkeypatch.setattr(policy, "apply", lambda f, op, m: chosen.append((op, m)) or f)
    torch.manual_seed(1)
    for _ in range(300):
        policy(frames)
    assert {op for op, _ in chosen} == set(EventFrameAugment.OPS)
    rot = [m for op, m in chosen if op == "Rotate"]
    assert max(rot) <= 30 and min(rot) >= -30 and min(rot) < 0 < max(rot)  # signed magnitudes


def test_rejects_what_it_cannot_augment():
    with pytest.raises(ValueError, match=r"expects frames \[T, 2, H, W\], got shape \[2, 8, 8\]"):
        EventFrameAugment()(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="unknown augmentation ops"):
        EventFrameAugment(ops=("Solarize",))
