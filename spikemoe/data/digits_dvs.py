"""digits-dvs: scikit-learn's real handwritten digits, recorded by a simulated event camera.

The embedded default dataset: 1,797 real 8 x 8 digits (``sklearn.datasets.load_digits``, the
UCI optdigits test set, 10 classes) that ship inside scikit-learn, so nothing is downloaded.
Each digit is turned into an event stream the way N-MNIST was recorded (Orchard et al. 2015):
the image moves in three saccades in front of an event camera, which reports log-intensity
changes. The events then go through the SAME event-to-frame path as CIFAR10-DVS
(``frames.events_to_frames``), giving ``[T, 2, 32, 32]`` frames.

Scene (all sizes in sensor pixels; 32 x 32 sensor):
    I(u, v, t)  the digit, scaled to [0, 1] and upsampled 3x (24 x 24, bilinear), its top-left
                corner at o(t) + (1, 1); black outside. o(t) runs through three 100 ms saccades
                along the N-MNIST triangle (0, 0) -> (3, 6) -> (6, 0) -> (0, 0), sampled at 12
                positions per saccade (linear motion in between).
Camera (the standard DVS pixel model, as in ESIM / v2e; per pixel and polarity):
    L = ln(I + 0.1)                              log intensity
    ON event each time  L - L_ref >= +C_on,  OFF event each time  L - L_ref <= -C_off;
    L_ref moves by C per event; each event's time is where the linearly interpolated L crosses
    its level. C ~ N(0.4, 0.05^2) per pixel and polarity (mismatch), clipped at 0.05.
    Background activity: Poisson noise, 0.1 Hz per pixel and polarity, uniform in time.
About 4,400 events per digit, polarity ~50% ON, t in [0, 300 ms].

Determinism: sample ``i`` draws its thresholds and noise from ``numpy.random.default_rng([seed,
i])``, so it depends on (seed, i, digit i) only, not on batching or on which other digits are
simulated. The held-out split does not depend on the seed: every 5th digit of each class (in
``load_digits`` order) is held out, 1,442 train / 355 test (``per_class_interleaved_split``).
Not the CIFAR10-DVS head/tail rule: ``load_digits`` is grouped by writer, so its
last 20% are unseen writers, which costs even raw-pixel logistic regression 5 points (90.7%
against 95.5%) and would make the minutes-long demo's accuracy hinge on a few writers.

The recipe's train augmentation for digits-dvs is none: a horizontal flip turns digits into
other shapes, and the demo trains for minutes. ``augment=True`` gives ``EventFrameAugment``
without the flip. Building all 1,797 samples takes a few seconds; the frames are cached
(one ``.npy`` per parameter set, atomically written) and loaded in well under a second.

Two views (``views="events+image"``, for multi-view fusion): each item is
``({"events": [T, 2, H, W], "image": [1, H, W]}, y)``. The image is the scene the camera saw at
its first position, ``I(u, v, 0)`` above: the digit scaled to [0, 1], upsampled 3x (bilinear)
with its top-left corner at (1, 1), black elsewhere: the intensity frame an event camera with
a grey-level readout (DAVIS APS) would give at t = 0. Why the first position: it is the one
frame every event is a change from; any later position would only shift the digit. At
another ``size`` it is area-averaged to ``(H, W)`` (for an integer factor the mean of the
same pixel blocks the events are summed over, ``frames.resize_events``). The events are the
very frames of ``views="events"`` (same cache entry, bit for bit); the image is rendered in
milliseconds and not cached. A ``transform`` (``augment``) applies to the events only.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .cache import FrameCache
from .event_options import check_event_options, event_transform
from .events import EVENT_DTYPE
from .frames import events_to_frames, to_hw
from .spec import BuildOptions, DatasetInfo, DatasetSpec, register_dataset
from .splits import split_indices

__all__ = ["DIGITS_DVS_VERSION", "HOLD_OUT_EVERY", "SENSOR_HW", "VIEWS", "DigitsDVS",
           "build_digits_dvs", "scene_images", "simulate_saccade_events", "verify_digits_dvs"]

DIGITS_DVS_VERSION = 1  # bump when the simulation below changes: it is part of the cache key
SENSOR_HW = (32, 32)
HOLD_OUT_EVERY = 5  # every 5th digit of each class is held out
SIM = {"digit_px": 24, "steps_per_saccade": 12, "saccade_us": 100_000, "amplitude_px": 6,
       "margin_px": 1, "eps": 0.1, "c_mean": 0.4, "c_std": 0.05, "c_min": 0.05, "noise_hz": 0.1}
VIEWS = ("events", "events+image")  # create_dataset(views=...): frames only, or frames + image


def _path_positions(steps: int, saccade_us: int, amplitude: float,
                    margin: float) -> list[tuple[float, float, float]]:
    """``(t_us, ox, oy)`` of the digit's top-left corner along the three N-MNIST saccades."""
    corners = np.array([[0, 0], [amplitude / 2, amplitude], [amplitude, 0], [0, 0]]) + margin
    out = [(0.0, *corners[0])]
    for s in range(3):
        for k in range(1, steps + 1):
            f = k / steps
            ox, oy = corners[s] * (1 - f) + corners[s + 1] * f
            out.append((s * saccade_us + f * saccade_us, ox, oy))
    return out


def _render(img: torch.Tensor, ox: float, oy: float, sim: dict) -> torch.Tensor:
    """Bilinear image of ``img [B, 1, 8, 8]``, top-left corner at (ox, oy): ``[B, 32, 32]``."""
    B, H, W, d = img.shape[0], *SENSOR_HW, sim["digit_px"]
    # affine_grid maps normalised output coords to normalised input coords: scale W/d, shift
    # so that sensor x = ox maps to the digit's left edge.
    theta = torch.tensor([[[W / d, 0.0, (W / 2 - ox - d / 2) / (d / 2)],
                           [0.0, H / d, (H / 2 - oy - d / 2) / (d / 2)]]], dtype=torch.float32)
    grid = F.affine_grid(theta, [1, 1, H, W], align_corners=False).expand(B, -1, -1, -1)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0]  # [B, 1, H, W] -> [B, H, W]


def simulate_saccade_events(images: np.ndarray, indices: np.ndarray, seed: int,
                            sim: dict | None = None) -> list[np.ndarray]:
    """Record digits with the simulated event camera of the module docstring.

    Args:
        images: ``[B, 8, 8]`` digits with values 0-16 (``load_digits().images``).
        indices: ``[B]`` dataset index of every digit (seeds its noise: ``rng([seed, i])``).
        seed: simulation seed.
    Returns:
        B arrays of ``EVENT_DTYPE`` events, time-sorted, ``t`` in microseconds.
    """
    sim = {**SIM, **(sim or {})}
    B, (H, W) = len(images), SENSOR_HW
    rngs = [np.random.default_rng([seed, int(i)]) for i in indices]
    C = np.stack([r.normal(sim["c_mean"], sim["c_std"], (2, H, W)) for r in rngs])  # [B, 2, H, W]
    C = np.maximum(C, sim["c_min"]).astype(np.float32)
    thresholds = {p: torch.from_numpy(C[:, p].reshape(-1)) for p in (0, 1)}  # [B*H*W] each
    img = torch.from_numpy(np.asarray(images, np.float32) / 16.0)[:, None]  # [B, 1, 8, 8]
    chunks = []
    L_prev = L_ref = None
    path = _path_positions(sim["steps_per_saccade"], sim["saccade_us"], sim["amplitude_px"],
                           sim["margin_px"])
    for t, ox, oy in path:
        L = torch.log(_render(img, ox, oy, sim) + sim["eps"]).reshape(-1)  # [B, H, W] -> [B*H*W]
        if L_prev is None:
            L_prev, L_ref, t_prev = L, L.clone(), t
            continue
        for pol, sign in ((1, 1.0), (0, -1.0)):
            c = thresholds[pol]
            n = torch.floor((sign * (L - L_ref)).clamp(min=0) / c).to(torch.int64)  # crossings
            nz = n.nonzero().squeeze(1)  # flat (b, y, x) of pixels that fire
            if nz.numel() == 0:
                continue
            cnt, c_nz, ref_nz, lp_nz = n[nz], c[nz], L_ref[nz], L_prev[nz]
            dl_nz = L[nz] - lp_nz
            dl_nz = torch.where(dl_nz == 0, torch.ones_like(dl_nz), dl_nz)
            # [pixels] -> [events]: one row per level crossed, the pixel's values repeated
            first, ref_e, c_e, lp_e, dl_e, pix = (torch.repeat_interleave(v, cnt) for v in (
                torch.cumsum(cnt, 0) - cnt, ref_nz, c_nz, lp_nz, dl_nz, nz))
            k = torch.arange(len(pix)) - first + 1  # k-th crossing of its pixel, 1..cnt
            level = ref_e + sign * k * c_e
            frac = ((level - lp_e) / dl_e).clamp(0, 1)  # where L crossed it within the step
            ts = (t_prev + frac * (t - t_prev)).to(torch.int64)
            chunks.append(torch.stack([pix, ts, torch.full_like(pix, pol)], 1))
            L_ref[nz] += sign * cnt * c_nz
        L_prev, t_prev = L, t
    rows = torch.cat(chunks).numpy() if chunks else np.zeros((0, 3), np.int64)  # [E, (pix, t, p)]
    b, yx = np.divmod(rows[:, 0], H * W)
    rows = np.stack([b, rows[:, 1], yx % W, yx // W, rows[:, 2]], 1)  # [E, (b, t, x, y, p)]
    signal = rows[np.argsort(b, kind="stable")]
    bounds = np.searchsorted(signal[:, 0], np.arange(B + 1))
    duration = 3 * sim["saccade_us"]
    out = []
    for j, r in enumerate(rngs):
        s = signal[bounds[j]:bounds[j + 1]]
        m = r.poisson(sim["noise_hz"] * duration / 1e6 * H * W * 2)
        noise = np.stack([np.zeros(m, np.int64), r.integers(0, duration, m), r.integers(0, W, m),
                          r.integers(0, H, m), r.integers(0, 2, m)], 1)
        s = np.concatenate([s, noise])
        s = s[np.argsort(s[:, 1], kind="stable")]
        ev = np.empty(len(s), EVENT_DTYPE)
        ev["t"], ev["x"], ev["y"], ev["p"] = s[:, 1], s[:, 2], s[:, 3], s[:, 4]
        out.append(ev)
    return out


def scene_images(images: np.ndarray, out_hw: tuple[int, int] = SENSOR_HW,
                 sim: dict | None = None) -> torch.Tensor:
    """The scene at the camera's first position (the "image" view, module docstring).

    Args:
        images: ``[B, 8, 8]`` digits with values 0-16 (``load_digits().images``).
        out_hw: output ``(H, W)``; other than the 32 x 32 sensor: area-averaged.
    Returns:
        ``[B, 1, H, W]`` float32 intensities in [0, 1]: ``I(u, v, 0)`` of the simulation.
    """
    sim = {**SIM, **(sim or {})}
    _, ox, oy = _path_positions(sim["steps_per_saccade"], sim["saccade_us"], sim["amplitude_px"],
                                sim["margin_px"])[0]
    img = torch.from_numpy(np.asarray(images, np.float32) / 16.0)[:, None]  # [B, 1, 8, 8]
    scene = _render(img, ox, oy, sim)[:, None]  # [B, H, W] -> [B, 1, H, W]
    if tuple(out_hw) != SENSOR_HW:
        scene = F.interpolate(scene, size=tuple(out_hw), mode="area")
    return scene.contiguous()


class DigitsDVS(Dataset):
    """digits-dvs as ``(x [T, 2, H, W] float32 counts, y int)`` (module docstring); with
    ``views="events+image"`` as ``({"events": x, "image": [1, H, W] float32 in [0, 1]}, y)``.

    Args:
        split: 'train' (1,442 digits) or 'test' (355). T: frames. integration: 'count' | 'time'.
        size: output size (None = 32 x 32). seed: simulation seed.
        cache_dir: cache root (None: ``$SPIKEMOE_CACHE`` or ``~/.cache/spikemoe``).
        transform: applied to the float frames on every access (not to the image).
        views: one of ``VIEWS``.
    """

    def __init__(self, split: str = "train", *, T: int = 16, integration: str = "count",
                 size: int | tuple[int, int] | None = None, seed: int = 0,
                 cache_dir: str | Path | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 batch_size: int = 256, views: str = "events") -> None:
        from sklearn.datasets import load_digits

        if views not in VIEWS:
            raise ValueError(f"digits-dvs views must be one of {VIEWS}, got {views!r}")
        digits = load_digits()
        self.views = views
        self.out_hw = to_hw(size, SENSOR_HW)
        self.T, self.integration, self.seed = int(T), integration, int(seed)
        self.indices = split_indices(digits.target, split, every=HOLD_OUT_EVERY)
        self.labels = digits.target[self.indices].astype(np.int64)
        self.transform = transform
        n = len(digits.target)
        params = {"dataset": "digits-dvs", "version": DIGITS_DVS_VERSION, "seed": self.seed,
                  "T": self.T, "integration": integration, "size": list(self.out_hw),
                  "sim": SIM, "n": n}
        self.cache = FrameCache(cache_dir, params, (n, self.T, 2, *self.out_hw))
        frames = self.cache.load("frames")
        if frames is None:
            # validate T / integration / size before the simulation, not after it
            events_to_frames(np.zeros(0, EVENT_DTYPE), SENSOR_HW, self.T, integration, self.out_hw)
            frames = self.build_frames(digits.images, batch_size)
            self.cache.save("frames", frames)
            frames = self.cache.load("frames")  # the narrow stored dtype, as on a cache hit
        self.frames = torch.from_numpy(frames[self.indices])  # [N_split, T, 2, H, W]
        self.images = (scene_images(digits.images[self.indices], self.out_hw)
                       if views == "events+image" else None)  # [N_split, 1, H, W]

    def build_frames(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Simulate every digit and count its events into frames: ``[N, T, 2, H, W]`` uint16.

        uint16 is exact: a digit has ~4,400 events, far below 65,535 in any one pixel.
        """
        out = np.zeros((len(images), self.T, 2, *self.out_hw), np.uint16)
        for lo in range(0, len(images), batch_size):
            idx = np.arange(lo, min(lo + batch_size, len(images)))
            events = simulate_saccade_events(images[idx], idx, self.seed)
            for i, ev in zip(idx, events, strict=True):
                out[i] = events_to_frames(ev, SENSOR_HW, self.T, self.integration, self.out_hw)
        return out

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | dict[str, torch.Tensor], int]:
        x = self.frames[i].float()  # [T, 2, H, W]
        if self.transform is not None:
            x = self.transform(x)
        if self.images is None:
            return x, int(self.labels[i])
        return {"events": x, "image": self.images[i].clone()}, int(self.labels[i])


def build_digits_dvs(spec: DatasetSpec, split: str, options: BuildOptions) -> DigitsDVS:
    """The ``split`` of digits-dvs for ``create_dataset`` (``root``, ``download`` unused)."""
    check_event_options(spec, options)
    return DigitsDVS(split, T=options.T, integration=options.integration, size=options.size,
                     seed=options.seed, cache_dir=options.cache_dir,
                     transform=event_transform(spec, split, options), views=options.views)


def verify_digits_dvs(spec: DatasetSpec, root, deep: bool) -> tuple[list[str], list[str]]:
    """scikit-learn's ``load_digits`` holds its 1,797 digits (``root`` and ``deep`` unused)."""
    from sklearn.datasets import load_digits

    n = len(load_digits().target)
    problems = [] if n == 1797 else [f"load_digits() returned {n} digits, expected 1797"]
    return problems, [f"embedded: {n} digits from scikit-learn, no files needed"]


@register_dataset
def digits_dvs() -> DatasetSpec:
    """digits-dvs (module docstring): the embedded default, no recipe augmentation."""
    return DatasetSpec(
        info=DatasetInfo("digits-dvs", "events", 10, 2, SENSOR_HW,
                         "none (a flipped digit is another shape; the demo trains for minutes)",
                         "datasets/digits-dvs.md", needs_root=False, views=VIEWS),
        build=build_digits_dvs, verify=verify_digits_dvs)
