"""Events -> T two-channel count frames: the one event-to-frame path of every event dataset.

A frame stack ``F`` of shape ``[T, 2, H, W]`` counts events per time slice, polarity and pixel
(SpikingJelly's ``integrate_events_segment_to_frame``):

    F[j, p, y, x] = sum_{i in slice j} 1[p_i = p, y_i = y, x_i = x]

with events split into ``T`` slices one of two ways (SpikingJelly's
``cal_fixed_frames_number_segment_index``; ``N`` events, in file order):

    count ('number'): d = floor(N / T); slice j holds events [j d, (j + 1) d) for j < T - 1 and
                      the last slice holds [(T - 1) d, N): it also takes the N mod T remainder.
                      If N < T (d = 0) every event lands in the last slice.
    time:             dt = floor((t_max - t_min) / T) microseconds; event i goes to slice
                      min(floor((t_i - t_min) / dt), T - 1), so the last slice also takes the
                      remainder of the span. If dt = 0 every event lands in the last slice.

Both equal SpikingJelly 2.0's ``integrate_events_by_fixed_frames_number`` (split_by 'number' /
'time') on the same time-sorted events; ``tests/test_data_frames.py`` checks it on the real
recordings. 'count' equals it on any event order. 'time' does not where timestamps go back:
SpikingJelly spans ``t[-1] - t[0]`` and cuts the file into runs, from the first to the last
position whose time falls in each window (an event can land in two frames, or in none); here
every event lands in exactly one frame, by its own time. ``spikemoe data verify --deep`` counts
the files this concerns. Two deliberate differences from SpikingJelly, both tested: 'time' with an empty
slice gives an empty frame (SpikingJelly raises ``IndexError``), and ``dt = 0`` is handled.

Why not ``tonic.transforms.ToFrame``: with ``n_event_bins=T`` tonic drops the ``N mod T``
remainder (the last frame differs from SpikingJelly's, which is the Spikformer recipe), with
``n_time_bins`` it drops the events past ``t_min + T dt``, and it loops over frames with
``np.add.at``. Here one ``np.bincount`` over a flat (frame, polarity, y, x) index does all
frames at once (``benchmarks/bench_data.py`` measures the gap).

Spatial resize happens on events, before counting: ``x' = floor(x w / W)``, ``y' = floor(y h /
H)``. For an integer factor this equals sum-pooling the full-size frames (tested), keeps every
event, and costs nothing; it is ``tonic.transforms.Downsample(sensor_size, target_size)`` in
integer arithmetic. tonic multiplies by the float factor ``w / W`` and truncates, which can land
one pixel low: 320 -> 224 at x = 90 gives 90 * 0.7 = 62.99999999999999 -> 62 in float64 (tonic
1.7), where the exact 90 * 224 / 320 is 63.
"""
from __future__ import annotations

import numpy as np

__all__ = ["INTEGRATIONS", "events_to_frames", "frame_index", "resize_events", "to_hw"]

INTEGRATIONS = ("count", "time")


def to_hw(size: int | tuple[int, int] | None, native_hw: tuple[int, int]) -> tuple[int, int]:
    """Normalise a ``size`` option (None = native, int = square, (H, W)) to ``(H, W)``."""
    if size is None:
        return tuple(native_hw)
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int | np.integer) and v > 0 for v in hw):
        raise ValueError(f"size must be a positive int or (H, W), got {size!r}")
    return int(hw[0]), int(hw[1])


def frame_index(t: np.ndarray, T: int, integration: str = "count") -> np.ndarray:
    """The frame ``j in [0, T)`` of every event (see the module docstring for the two rules).

    Args:
        t: ``[N]`` timestamps in microseconds, in file order (used by 'time' only).
        T: number of frames (>= 1).
        integration: 'count' (equal event counts, SpikingJelly ``split_by='number'``) or 'time'.
    Returns:
        ``[N]`` int64 frame indices.
    """
    if not isinstance(T, int | np.integer) or T < 1:
        raise ValueError(f"T (number of frames) must be a positive int, got {T!r}")
    n = len(t)
    if integration == "count":
        d = n // T
        if d == 0:
            return np.full(n, T - 1, np.int64)
        return np.minimum(np.arange(n, dtype=np.int64) // d, T - 1)
    if integration == "time":
        if n == 0:
            return np.zeros(0, np.int64)
        t = np.asarray(t, np.int64)
        t0 = int(t.min())
        dt = (int(t.max()) - t0) // T
        if dt == 0:
            return np.full(n, T - 1, np.int64)
        return np.minimum((t - t0) // dt, T - 1)
    raise ValueError(
        f"integration must be one of {INTEGRATIONS} ('count' = equal event counts per frame, the "
        f"Spikformer recipe; 'time' = equal time windows), got {integration!r}"
    )


def resize_events(x: np.ndarray, y: np.ndarray, sensor_hw: tuple[int, int],
                  out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Scale pixel coordinates from a ``sensor_hw`` grid to ``out_hw``: ``x' = x w // W``."""
    (H, W), (h, w) = sensor_hw, out_hw
    if (h, w) == (H, W):
        return np.asarray(x, np.int64), np.asarray(y, np.int64)
    return np.asarray(x, np.int64) * w // W, np.asarray(y, np.int64) * h // H


def events_to_frames(events: np.ndarray, sensor_hw: tuple[int, int], T: int,
                     integration: str = "count",
                     size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Count events into ``T`` two-channel frames (channel 0 = OFF, 1 = ON).

    Args:
        events: ``[N]`` structured array with fields ``t`` (us), ``x``, ``y``, ``p`` (``p > 0``
            is ON), in file order; any integer dtypes (``EVENT_DTYPE``, tonic's, ...).
        sensor_hw: ``(H, W)`` of the sensor the coordinates refer to.
        T: number of frames.
        integration: 'count' or 'time' (module docstring).
        size: output ``(H, W)``, an int for square, or None for the sensor size.
    Returns:
        ``[T, 2, h, w]`` int64 event counts (``np.bincount``'s dtype, not copied to a narrower
        one). Zero events give all-zero frames of the same shape.
    Raises:
        ValueError: coordinates outside the sensor (they would silently land on other pixels).
    """
    H, W = sensor_hw
    h, w = to_hw(size, sensor_hw)
    fidx = frame_index(events["t"], T, integration)  # validates T and integration first
    if len(events) == 0:
        return np.zeros((T, 2, h, w), np.int64)
    x, y = np.asarray(events["x"], np.int64), np.asarray(events["y"], np.int64)
    if x.min() < 0 or x.max() >= W or y.min() < 0 or y.max() >= H:
        raise ValueError(
            f"event coordinates x in [{x.min()}, {x.max()}], y in [{y.min()}, {y.max()}] do not "
            f"fit the sensor {W} x {H} (W x H). Pass the sensor size the recording declares."
        )
    x, y = resize_events(x, y, (H, W), (h, w))
    on = (np.asarray(events["p"]) > 0).astype(np.int64)
    flat = ((fidx * 2 + on) * h + y) * w + x  # (frame, polarity, y, x) -> one index
    counts = np.bincount(flat, minlength=T * 2 * h * w)
    return counts.reshape(T, 2, h, w)  # [T*2*h*w] -> [T, 2, h, w]
