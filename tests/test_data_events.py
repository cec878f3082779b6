"""Event decoders: the real recordings decode to their documented counts and ranges; our
writers round-trip through the real decoders (aedat, tonic); bad files name themselves."""
import hashlib
from pathlib import Path

import numpy as np
import pytest

from spikemoe.data.events import (
    CorruptEventFileError,
    as_events,
    read_aedat4,
    read_events,
    read_gesture_npy,
    read_nmnist_bin,
)
from spikemoe.data.writers import write_aedat4, write_gesture_npy, write_nmnist_bin

REAL = Path(__file__).resolve().parent / "fixtures" / "real"  # shipped in the repo


def _random_events(n, hw=(128, 128), t_max=10**6, seed=0):
    rng = np.random.default_rng(seed)
    return as_events(np.sort(rng.integers(0, t_max, n)), rng.integers(0, hw[1], n),
                     rng.integers(0, hw[0], n), rng.integers(0, 2, n))


def test_real_recordings_are_the_files_the_readme_describes():
    for line in (REAL / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((REAL / name).read_bytes()).hexdigest() == digest


def test_real_aedat4_decodes_to_the_documented_counts_and_ranges():
    events, hw = read_aedat4(REAL / "sample.aedat4")
    assert hw == (240, 320)  # declared by the file's event stream (DVXplorer-class sensor)
    assert len(events) == 111_954  # stream 0 only: the IMU and trigger streams are skipped
    assert (events["x"].min(), events["x"].max()) == (0, 319)
    assert (events["y"].min(), events["y"].max()) == (0, 239)
    assert 0.48 < events["p"].mean() < 0.50  # "polarity ~49% ON"
    assert 0.58 < (events["t"][-1] - events["t"][0]) / 1e6 < 0.60  # "about 0.59 s"
    assert np.all(np.diff(events["t"]) >= 0)


def test_real_aedat4_equals_tonics_reader():
    import tonic.io

    ref = tonic.io.read_aedat4(str(REAL / "sample.aedat4"))
    ref.dtype.names = ["t", "x", "y", "p"]  # tonic's dtype has a name/title clash on p
    events, _ = read_aedat4(REAL / "sample.aedat4")
    for f in "txy":
        np.testing.assert_array_equal(events[f], ref[f].astype(np.int64))
    np.testing.assert_array_equal(events["p"].astype(bool), ref["p"])


def test_real_nmnist_decodes_to_the_documented_counts_and_ranges():
    events, hw = read_nmnist_bin(REAL / "sample_nmnist.bin")
    assert hw == (34, 34) and len(events) == 4325 and events["t"].max() == 311_175
    assert events["x"].min() == 0 and events["x"].max() == 33
    assert events["y"].min() == 0 and events["y"].max() == 33


def test_writers_round_trip_through_the_real_decoders(tmp_path):
    ev = _random_events(5000)
    path = write_aedat4(tmp_path / "a.aedat4", ev, packet_size=777)  # packets split unevenly
    assert np.array_equal(read_aedat4(path)[0], ev)
    nm = _random_events(3000, (34, 34), t_max=300_000)
    assert np.array_equal(read_nmnist_bin(write_nmnist_bin(tmp_path / "a.bin", nm))[0], nm)
    ge = ev.copy()
    ge["t"] = ge["t"] // 1000 * 1000  # the gesture release stores milliseconds
    assert np.array_equal(read_gesture_npy(write_gesture_npy(tmp_path / "a.npy", ge))[0], ge)


def test_aedat4_writer_is_read_by_tonics_cifar10dvs(tmp_path, monkeypatch):
    import tonic

    folder = tmp_path / "CIFAR10DVS" / "cat"
    folder.mkdir(parents=True)
    ev = _random_events(1000)
    write_aedat4(folder / "cifar10_cat_0.aedat4", ev)
    # tonic wants >= 1000 files and its zip before it reads anything; its own tests patch this too
    monkeypatch.setattr(tonic.datasets.CIFAR10DVS, "_check_exists", lambda self: True)
    got, label = tonic.datasets.CIFAR10DVS(str(tmp_path))[0]
    assert label == 3 and np.array_equal(got["t"].astype(np.int64), ev["t"])
    assert np.array_equal(got["x"], ev["x"]) and np.array_equal(got["p"], ev["p"].astype(bool))


def test_truncated_real_aedat4_raises_naming_the_file(tmp_path):
    data = (REAL / "sample.aedat4").read_bytes()
    bad = tmp_path / "cut.aedat4"
    bad.write_bytes(data[:400_000])  # cut inside a packet
    with pytest.raises(CorruptEventFileError, match="cut.aedat4") as e:
        read_events(bad)
    assert e.value.path == bad and "skip_corrupt" in str(e.value)
    garbled = bytearray(data)
    garbled[5000:5100] = b"\xff" * 100  # inside an LZ4-compressed packet
    (tmp_path / "garbled.aedat4").write_bytes(bytes(garbled))
    with pytest.raises(CorruptEventFileError, match="garbled.aedat4"):
        read_events(tmp_path / "garbled.aedat4")
    (tmp_path / "zero.aedat4").write_bytes(b"")
    with pytest.raises(CorruptEventFileError, match="zero.aedat4"):
        read_events(tmp_path / "zero.aedat4")


def test_bad_nmnist_and_gesture_files_raise_naming_the_file(tmp_path):
    data = (REAL / "sample_nmnist.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-2])  # not a whole number of 5-byte events
    with pytest.raises(CorruptEventFileError, match="cut.bin.*not a whole number"):
        read_events(tmp_path / "cut.bin")
    np.save(tmp_path / "wrong.npy", np.zeros((10, 3)))
    with pytest.raises(CorruptEventFileError, match=r"wrong.npy.*\[10, 3\]"):
        read_events(tmp_path / "wrong.npy")
    ge = _random_events(100, t_max=10)
    ge["t"] *= 1000
    write_gesture_npy(tmp_path / "g.npy", ge)
    (tmp_path / "cut.npy").write_bytes((tmp_path / "g.npy").read_bytes()[:-50])
    with pytest.raises(CorruptEventFileError, match="cut.npy"):
        read_events(tmp_path / "cut.npy")


def test_coordinates_outside_the_declared_sensor_are_corrupt(tmp_path):
    ev = _random_events(100)  # x, y up to 127
    write_aedat4(tmp_path / "small.aedat4", ev, width=64, height=64)
    with pytest.raises(CorruptEventFileError, match=r"small.aedat4.*x spans .*\[0, 63\]"):
        read_aedat4(tmp_path / "small.aedat4")


def test_empty_recordings_decode_to_zero_events(tmp_path):
    events, hw = read_aedat4(write_aedat4(tmp_path / "e.aedat4", _random_events(0), 128, 128))
    assert len(events) == 0 and hw == (128, 128)
    (tmp_path / "e.bin").write_bytes(b"")
    assert len(read_nmnist_bin(tmp_path / "e.bin")[0]) == 0


def test_unknown_extension_and_missing_file_are_explained(tmp_path):
    with pytest.raises(ValueError, match=r"\.aedat4, \.bin, \.npy"):
        read_events(tmp_path / "x.dat")
    with pytest.raises(FileNotFoundError, match="nope.aedat4"):
        read_events(tmp_path / "nope.aedat4")
