"""events_to_frames: equal to SpikingJelly 2.0's integrate_events_by_fixed_frames_number on the
same events (real recordings included); its documented differences from tonic's ToFrame; resize."""
from pathlib import Path

import numpy as np
import pytest
from spikingjelly.datasets.utils import integrate_events_by_fixed_frames_number as sj_frames

from spikemoe.data.events import as_events, read_aedat4, read_nmnist_bin
from spikemoe.data.frames import events_to_frames, frame_index, resize_events

REAL = Path(__file__).resolve().parent / "fixtures" / "real"  # shipped in the repo


def _sj(events, mode, T, hw):
    return sj_frames({k: events[k] for k in "txyp"}, mode, T, *hw)


def _random_events(n, hw=(16, 20), seed=0, t_max=10_000):
    rng = np.random.default_rng(seed)
    return as_events(np.sort(rng.integers(0, t_max, n)), rng.integers(0, hw[1], n),
                     rng.integers(0, hw[0], n), rng.integers(0, 2, n))


@pytest.mark.parametrize("T", [1, 10, 16])
def test_real_recordings_equal_spikingjelly_in_both_modes(T):
    recordings = (read_aedat4(REAL / "sample.aedat4"), read_nmnist_bin(REAL / "sample_nmnist.bin"))
    for events, hw in recordings:
        for mode, sj_mode in (("count", "number"), ("time", "time")):
            ours = events_to_frames(events, hw, T, mode)
            assert ours.shape == (T, 2, *hw)
            np.testing.assert_array_equal(ours, _sj(events, sj_mode, T, hw))
            assert ours.sum() == len(events)  # no event lost, none counted twice


@pytest.mark.parametrize("n", [0, 3, 16, 17, 1001])
def test_count_mode_equals_spikingjelly_for_every_remainder(n):
    # n < T: SpikingJelly puts everything in the last frame (d = 0); n = 17, T = 16: the last
    # frame holds 2 events; n = 0: all zero (SpikingJelly handles it too in 'number' mode).
    ev, hw = _random_events(n), (16, 20)
    np.testing.assert_array_equal(events_to_frames(ev, hw, 16, "count"), _sj(ev, "number", 16, hw))


def test_count_frames_hold_equal_counts_and_the_remainder_goes_last():
    ev = _random_events(1003)
    per_frame = events_to_frames(ev, (16, 20), 10, "count").sum(axis=(1, 2, 3))
    assert per_frame.tolist() == [100] * 9 + [103]  # d = 1003 // 10; the last takes 3 more
    assert events_to_frames(ev, (16, 20), 10)[:, 1].sum() == ev["p"].sum()  # channel 1 = ON


def test_time_mode_with_an_empty_window_is_empty_where_spikingjelly_raises():
    # Events at t = 0..99 and 300..399 us, T = 4: dt = 399 // 4 = 99; [198, 297) is empty.
    t = np.r_[np.arange(100), np.arange(300, 400)]
    ev = as_events(t, np.zeros(200), np.zeros(200), np.ones(200))
    frames = events_to_frames(ev, (4, 4), 4, "time")
    # slice = min((t - 0) // 99, 3): t 0..98 -> 0; 99 -> 1; 300..395 -> 3; 396..399 -> min(4, 3) = 3
    assert frames[:, 1, 0, 0].tolist() == [99, 1, 0, 100]
    with pytest.raises(IndexError):
        _sj(ev, "time", 4, (4, 4))


def test_time_mode_with_a_span_shorter_than_T_puts_everything_last():
    ev = as_events([5, 5, 6], [0, 1, 2], [0, 0, 0], [1, 0, 1])
    assert frame_index(ev["t"], 16, "time").tolist() == [15, 15, 15]  # dt = 1 // 16 = 0
    assert events_to_frames(ev, (2, 3), 16, "time")[15].sum() == 3


def test_tonic_toframe_drops_the_remainder_that_spikingjelly_keeps():
    from tonic.transforms import ToFrame

    events, hw = read_aedat4(REAL / "sample.aedat4")
    T, n = 16, len(events)
    ours = events_to_frames(events, hw, T, "count")
    theirs = ToFrame(sensor_size=(hw[1], hw[0], 2), n_event_bins=T)(events)
    np.testing.assert_array_equal(ours[:-1], theirs[:-1])
    tail = events[T * (n // T):]  # 111954 mod 16 = 2 events tonic never counts
    assert len(tail) == 2
    np.testing.assert_array_equal(ours[-1] - theirs[-1], events_to_frames(tail, hw, 1)[0])


def test_resize_on_events_equals_sum_pooling_for_integer_factors():
    events, hw = read_aedat4(REAL / "sample.aedat4")  # 240 x 320
    full = events_to_frames(events, hw, 8, "count")
    half = events_to_frames(events, hw, 8, "count", size=(120, 160))
    pooled = full.reshape(8, 2, 120, 2, 160, 2).sum(axis=(3, 5))  # 2 x 2 sum pool
    np.testing.assert_array_equal(half, pooled)
    ev = _random_events(5000, (128, 128))
    quarter = events_to_frames(ev, (128, 128), 4, size=32)
    full = events_to_frames(ev, (128, 128), 4)
    np.testing.assert_array_equal(quarter, full.reshape(4, 2, 32, 4, 32, 4).sum((3, 5)))


def test_non_integer_resize_uses_exact_integer_arithmetic():
    x, y = resize_events(np.array([0, 16, 17, 33]), np.array([33, 0, 17, 1]), (34, 34), (32, 32))
    assert x.tolist() == [0, 15, 16, 31] and y.tolist() == [31, 0, 16, 0]  # x * 32 // 34
    # 320 -> 224: 90 * 224 // 320 = 63, where tonic's float product 90 * (224 / 320) =
    # 62.99999999999999 truncates to 62 (likewise 170 -> 118 and 180 -> 125).
    assert int(90 * (224 / 320)) == 62 and int(170 * (224 / 320)) == 118
    x, _ = resize_events(np.array([90, 170, 180]), np.zeros(3, np.int64), (240, 320), (168, 224))
    assert x.tolist() == [63, 119, 126]
    ev = _random_events(2000, (34, 34))
    assert events_to_frames(ev, (34, 34), 4, size=32).sum() == 2000


def test_bad_arguments_are_explained():
    ev = _random_events(10, (16, 20))
    with pytest.raises(ValueError, match="do not fit the sensor 10 x 8"):
        events_to_frames(ev, (8, 10), 4)
    with pytest.raises(ValueError, match="integration must be one of"):
        events_to_frames(ev, (16, 20), 4, "number")
    with pytest.raises(ValueError, match="positive int"):
        events_to_frames(ev, (16, 20), 0)
    with pytest.raises(ValueError, match="size must be"):
        events_to_frames(ev, (16, 20), 4, size=(0, 3))
