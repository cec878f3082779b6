"""Event file -> frames: spikemoe's path (cold and with a warm cache) against tonic's ToFrame,
and the digits-dvs build time, measured in one run.

Files: ``--files`` synthetic CIFAR10-DVS-like recordings (AEDAT 4.0, 128 x 128, ``--events``
events over 1.3 s, written by ``spikemoe.data.writers``, uncompressed), plus the real
``tests/fixtures/real/sample.aedat4`` (320 x 240, LZ4-compressed, 111,954 events). T = 16,
equal event counts. Each path turns every file into a float32 ``[T, 2, H, W]`` tensor:

    tonic cold      tonic.io.read_aedat4 + tonic.transforms.ToFrame(n_event_bins=T) + to float
    spikemoe frames read_events + events_to_frames + to float (no cache: like for like)
    spikemoe cold   EventFrameDataset[i] with an empty cache: decode + frames + atomic cache write
    spikemoe warm   EventFrameDataset[i] with the cache built: load the .npy + to float

A second table decodes a DVS128 Gesture trial in the original AEDAT 3.1 format (``--events``
events, 4,096 per packet): ``spikemoe.data.events_original.read_aedat3_dvs128`` against
SpikingJelly 2.0's ``load_aedat_v3``, which unpacks event by event (they return the same arrays;
``tests/test_data_source_layouts.py``).

"Cold" means no frame cache; the event files themselves sit in the OS page cache for every
path (they were just written), so decode time, not disk time, is measured. Each path runs
``--rounds`` times, interleaved; the best round is reported. Goal (issue 3): warm >= 5x tonic
cold.

    python benchmarks/bench_data.py [--files 16] [--events 200000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spikemoe.data.digits_dvs import DigitsDVS
from spikemoe.data.event_datasets import EventFrameDataset
from spikemoe.data.events import as_events
from spikemoe.data.writers import write_aedat4

T = 16
REAL = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "real" / "sample.aedat4"


def _synthetic(folder: Path, n_files: int, n_events: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n_files):
        t = np.sort(rng.integers(0, 1_300_000, n_events))
        x, y = rng.integers(0, 128, (2, n_events))
        ev = as_events(t, x, y, rng.integers(0, 2, n_events))
        paths.append(write_aedat4(folder / f"cifar10_cat_{i}.aedat4", ev))
    return paths


def _tonic_cold(paths: list[Path], hw: tuple[int, int]) -> None:
    import tonic.io
    from tonic.transforms import ToFrame

    to_frame = ToFrame(sensor_size=(hw[1], hw[0], 2), n_event_bins=T)
    for p in paths:
        ev = tonic.io.read_aedat4(str(p))
        ev.dtype.names = ["t", "x", "y", "p"]  # as tonic.datasets.CIFAR10DVS does
        torch.from_numpy(to_frame(ev).astype(np.float32))


def _ours(paths: list[Path], hw, cache_dir: Path) -> EventFrameDataset:
    return EventFrameDataset("bench", paths, [0] * len(paths), paths[0].parent, sensor_hw=hw, T=T,
                             cache_dir=cache_dir)


def _rate(fn, n: int, rounds: int) -> float:
    best = min(_timed(fn) for _ in range(rounds))
    return n / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_files(label: str, paths: list[Path], hw, rounds: int, tmp: Path) -> None:
    n = len(paths)
    counter = iter(range(10**6))

    def ours_cold():  # a fresh cache folder every round: nothing cached
        ds = _ours(paths, hw, tmp / f"cold{next(counter)}")
        for i in range(n):
            ds[i]

    warm = _ours(paths, hw, tmp / "warm")
    warm.build_cache(progress=False)

    def ours_warm():
        for i in range(n):
            warm[i]

    def ours_frames_only():  # decode + frames + float, no cache write: the like-for-like row
        for i in range(n):
            torch.from_numpy(warm.build_frames(i).astype(np.float32))

    rates = {"tonic cold": [], "spikemoe frames": [], "spikemoe cold": [], "spikemoe warm": []}
    for _ in range(rounds):  # interleaved, so machine noise hits every path alike
        rates["tonic cold"].append(_rate(lambda: _tonic_cold(paths, hw), n, 1))
        rates["spikemoe frames"].append(_rate(ours_frames_only, n, 1))
        rates["spikemoe cold"].append(_rate(ours_cold, n, 1))
        rates["spikemoe warm"].append(_rate(ours_warm, n, 1))
    best = {k: max(v) for k, v in rates.items()}
    print(f"\n{label}: {n} file(s), sensor {hw[1]} x {hw[0]}, T = {T}, equal event counts")
    for k, v in best.items():
        print(f"  {k:15s} {v:9.1f} samples/s   ({v / best['tonic cold']:.2f}x tonic cold)")
    ratio = best["spikemoe warm"] / best["tonic cold"]
    print(f"  goal warm >= 5x tonic cold: {'MET' if ratio >= 5 else 'NOT MET'} ({ratio:.1f}x)")


def bench_aedat3(tmp: Path, n_events: int, rounds: int) -> None:
    from spikingjelly.datasets.utils import load_aedat_v3

    from spikemoe.data.events_original import read_aedat3_dvs128
    from spikemoe.data.writers import write_aedat3_dvs128

    rng = np.random.default_rng(0)
    n = n_events
    ev = as_events(np.sort(rng.integers(0, 6_000_000, n)), rng.integers(0, 128, n),
                   rng.integers(0, 128, n), rng.integers(0, 2, n))
    path = write_aedat3_dvs128(tmp / "user01_fluorescent.aedat", ev, packet_size=4096)
    ours, theirs = [], []
    for _ in range(rounds):  # interleaved
        t0 = time.perf_counter()
        read_aedat3_dvs128(path)
        t1 = time.perf_counter()
        load_aedat_v3(path)
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
    print(f"\nAEDAT 3.1 DVS128 Gesture trial, {n} events: spikemoe {min(ours) * 1e3:.1f} ms, "
          f"SpikingJelly load_aedat_v3 {min(theirs) * 1e3:.1f} ms "
          f"({min(theirs) / min(ours):.1f}x, best of {rounds})")


def bench_digits(tmp: Path) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    ds = DigitsDVS("train", T=T, cache_dir=tmp / "digits")
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    DigitsDVS("test", T=T, cache_dir=tmp / "digits")
    hit = time.perf_counter() - t0
    size = ds.cache.path("frames").stat().st_size / 2**20
    print(f"\ndigits-dvs (1,797 digits, T = {T}, 32 x 32): build {build:.2f} s (simulate + "
          f"frames + cache write), cache hit {hit:.2f} s, cache file {size:.1f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "files").mkdir()
        paths = _synthetic(tmp / "files", args.files, args.events)
        label = f"synthetic CIFAR10-DVS-like, {args.events} events each"
        bench_files(label, paths, (128, 128), args.rounds, tmp / "s")
        if REAL.is_file():
            label = "real sample.aedat4 (LZ4, 111,954 events)"
            bench_files(label, [REAL], (240, 320), args.rounds + 2, tmp / "r")
        bench_aedat3(tmp, args.events, args.rounds)
        bench_digits(tmp)


if __name__ == "__main__":
    main()
