"""digits-dvs: a fixed stratified held-out split, determinism from the seed, the same event ->
frame path as the recorded datasets, physically sensible events, a cache, and learnable data."""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import spikemoe.data.digits_dvs as dd
from spikemoe.data import collate_time_major, create_dataset, dataset_info
from spikemoe.data.frames import events_to_frames


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    cache = tmp_path_factory.mktemp("digits-cache")
    train = create_dataset("digits-dvs", "train", T=4, cache_dir=cache)
    test = create_dataset("digits-dvs", "test", T=4, cache_dir=cache)  # a cache hit
    return train, test, cache


def test_no_files_are_skipped_and_the_dataset_says_so(splits):
    # Every dataset create_dataset returns lists its skipped files (the trainer records them).
    train, test, _ = splits
    assert train.skipped_files == [] and test.skipped_files == []


def test_fixed_stratified_split(splits):
    train, test, _ = splits
    labels = load_digits().target
    assert (len(train), len(test)) == (1442, 355)
    assert set(train.indices).isdisjoint(test.indices)
    assert len(set(train.indices) | set(test.indices)) == 1797
    for c in range(10):  # every 5th digit of each class, in load_digits order, is held out
        idx = np.flatnonzero(labels == c)
        assert list(test.indices[test.labels == c]) == list(idx[4::5])
        assert np.all(train.labels[np.isin(train.indices, idx)] == c)


def test_items_and_batches_have_the_event_contract(splits):
    train, _, _ = splits
    info = dataset_info("digits-dvs")
    x, y = train[0]
    assert x.shape == (4, 2, *info.native_size) and x.dtype == torch.float32 and isinstance(y, int)
    assert train.transform is None  # the digits recipe has no augmentation (a flipped 2 is no 2)
    xb, yb = collate_time_major([train[i] for i in range(3)])
    assert xb.shape == (4, 3, 2, 32, 32) and yb.tolist() == [int(v) for v in train.labels[:3]]


def test_frames_come_from_the_shared_event_to_frame_path(splits):
    train, _, _ = splits
    digits = load_digits()
    events = dd.simulate_saccade_events(digits.images[:2], np.arange(2), seed=0)
    for i in range(2):
        expected = events_to_frames(events[i], dd.SENSOR_HW, 4, "count")
        assert torch.equal(train[i][0], torch.from_numpy(expected).float())
        assert train[i][0].sum() == len(events[i])


def test_simulation_is_deterministic_per_sample_and_seed():
    images = load_digits().images
    alone = dd.simulate_saccade_events(images[5:6], np.array([5]), seed=0)[0]
    in_batch = dd.simulate_saccade_events(images[3:7], np.arange(3, 7), seed=0)[2]
    assert np.array_equal(alone, in_batch)  # independent of batching and of the other digits
    other_seed = dd.simulate_saccade_events(images[5:6], np.array([5]), seed=1)[0]
    assert not np.array_equal(alone, other_seed)


def test_events_look_like_a_moving_bright_digit():
    images = load_digits().images
    for ev in dd.simulate_saccade_events(images[:10], np.arange(10), seed=0):
        assert 2000 < len(ev) < 8000 and 0.45 < ev["p"].mean() < 0.55
        assert np.all(np.diff(ev["t"]) >= 0) and 0 <= ev["t"].min() and ev["t"].max() < 300_000
        assert ev["x"].max() < 32 and ev["y"].max() < 32
        # Saccade 1 moves the bright digit right (+3 px) and down (+6 px): its leading (lower)
        # edge brightens (ON), its trailing edge darkens (OFF).
        first = ev[ev["t"] < 100_000]
        on, off = first[first["p"] == 1], first[first["p"] == 0]
        assert on["y"].mean() > off["y"].mean() + 1


def test_cache_hit_skips_simulation_and_seed_changes_the_key(splits, monkeypatch):
    train, _, cache = splits
    monkeypatch.setattr(dd, "simulate_saccade_events",
                        lambda *a, **k: pytest.fail("simulated again"))
    again = create_dataset("digits-dvs", "train", T=4, cache_dir=cache)
    assert torch.equal(again.frames, train.frames)
    assert not list(train.cache.dir.glob("*.tmp-*")) and (train.cache.dir / "params.json").is_file()
    with pytest.raises(pytest.fail.Exception, match="simulated again"):
        create_dataset("digits-dvs", "train", T=4, cache_dir=cache, seed=1)


def test_digits_dvs_is_learnable(splits):
    from sklearn.linear_model import RidgeClassifier

    train, test, _ = splits

    def features(ds):  # events summed over time, 2x2-pooled: [N, 2 * 16 * 16]
        return torch.nn.functional.avg_pool2d(ds.frames.float().sum(1), 2).flatten(1).numpy()

    probe = RidgeClassifier(alpha=10).fit(features(train), train.labels)
    acc = probe.score(features(test), test.labels)
    assert acc > 0.85  # measured 0.93 for this linear probe; shuffled labels would give ~0.1


def test_two_views_carry_the_same_events_and_the_scene_they_were_simulated_from(splits):
    train, _, cache = splits
    both = create_dataset("digits-dvs", "train", T=4, cache_dir=cache, views="events+image")
    assert both.cache.dir == train.cache.dir  # one cache entry for both options
    x, y = both[7]
    assert set(x) == {"events", "image"} and y == train[7][1]
    assert torch.equal(x["events"], train[7][0])  # bit for bit the single-view frames
    image = x["image"]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    # bilinear 3x upsampling keeps the sum: 9 x (the 8x8 digit / 16)
    digit = load_digits().images[both.indices[7]]
    assert image.sum().item() == pytest.approx(9 * digit.sum() / 16, rel=1e-4)
    assert torch.equal(image, dd.scene_images(digit[None])[0])
    small = create_dataset("digits-dvs", "test", T=4, size=16, cache_dir=cache,
                           views="events+image")
    full = dd.scene_images(load_digits().images[small.indices[:1]])
    # size 16: the mean of the same 2x2 blocks the events are summed over
    torch.testing.assert_close(small[0][0]["image"][0], full[0, 0].reshape(16, 2, 16, 2).mean((1, 3)))
    xb, _ = collate_time_major([both[i] for i in range(3)])
    assert xb["events"].shape == (4, 3, 2, 32, 32) and xb["image"].shape == (3, 1, 32, 32)


def test_views_other_than_events_are_refused_where_a_dataset_has_none(tmp_path):
    with pytest.raises(ValueError, match=r"'cifar10-dvs' has no views='events\+image'.*'events'"):
        create_dataset("cifar10-dvs", "train", root=tmp_path, views="events+image")
    with pytest.raises(ValueError, match="has no views='image'"):
        create_dataset("digits-dvs", "train", views="image")
