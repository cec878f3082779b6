"""Event datasets where users already have them: the original releases (CIFAR10-DVS jAER AEDAT
2.0, DVS128 Gesture AEDAT 3.1) and the folders SpikingJelly writes from them (``events_np``,
``frames_number_<T>_split_by_<...>``), written here in those formats. SpikingJelly 2.0's own
dataset classes convert the same files, and our frames must equal theirs sample by sample.
"""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS
from spikingjelly.datasets.dvs128_gesture import DVS128Gesture
from spikingjelly.datasets.n_mnist import NMNIST
from spikingjelly.datasets.utils import load_aedat_v3, split_to_train_test_set

from spikemoe.data import BuildOptions, CorruptEventFileError, create_dataset, dataset_spec
from spikemoe.data.events import as_events
from spikemoe.data.events_original import (
    read_aedat2_cifar10dvs,
    read_aedat3_dvs128,
    read_spikingjelly_events,
)
from spikemoe.data.verify import verify_dataset
from spikemoe.data.writers import write_aedat2_cifar10dvs, write_aedat3_dvs128, write_nmnist_bin

REAL = Path(__file__).resolve().parent / "fixtures" / "real"
JAER_HEADER = (REAL / "sample_aedat_header.aedat").read_bytes()  # a real jAER AEDAT 2.0 header
T = 4
C10_CLASSES = ("airplane", "automobile")
UNSORTED = ("automobile", 3)  # the one CIFAR10-DVS file whose timestamps are out of order


def _events(n, seed, t0=0, span=1_000_000, hw=(128, 128)):
    rng = np.random.default_rng(seed)
    return as_events(np.sort(rng.integers(t0, t0 + span, n)), rng.integers(0, hw[1], n),
                     rng.integers(0, hw[0], n), rng.integers(0, 2, n))


def _frames_by_name(ds):
    """{(class folder, sample name): [T, 2, H, W] int64} of one of our datasets."""
    classes = dataset_spec(ds.name).layout.classes
    return {(classes[r.label], r.name): ds[i][0].numpy().astype(np.int64)
            for i, r in enumerate(ds.recordings)}


def _sj_frames_by_name(sj_ds):
    """{(class folder, file stem): frames} of a SpikingJelly dataset."""
    return {(Path(path).parent.name, Path(path).stem): sj_ds[i][0].astype(np.int64)
            for i, (path, _) in enumerate(sj_ds.samples)}


# ---- CIFAR10-DVS: jAER AEDAT 2.0 release, SpikingJelly's events_np and frames ----

@pytest.fixture(scope="module")
def c10_sj_root(tmp_path_factory):
    """A SpikingJelly CIFAR10-DVS root: extract/ (the release, 11 files per class, the real
    jAER header), events_np/ and frames_number_4_split_by_number/ made by SpikingJelly itself."""
    # Named as tonic's folder, as SpikingJelly users name theirs: the name alone must not
    # make it tonic's layout.
    root = tmp_path_factory.mktemp("c10") / "CIFAR10DVS"
    for c, cls in enumerate(C10_CLASSES):
        (root / "extract" / cls).mkdir(parents=True)
        for i in range(11):
            ev = _events(40 + 7 * i, seed=100 * c + i)
            if (cls, i) == UNSORTED:  # one late event written first: timestamps go back
                ev = np.concatenate([ev[-1:], ev[:-1]])
            write_aedat2_cifar10dvs(root / "extract" / cls / f"cifar10_{cls}_{i}.aedat", ev,
                                    header=JAER_HEADER)
    (root / "events_np").mkdir()
    CIFAR10DVS.create_raw_from_extracted(root / "extract", root / "events_np")
    sj = CIFAR10DVS(str(root), data_type="frame", frames_number=T, split_by="number")
    return root, sj


def _only(src: Path, dst: Path, *names: str) -> Path:
    """A root holding only ``names`` copied from ``src``."""
    for n in names:
        shutil.copytree(src / n, dst / n, symlinks=True)
    return dst


@pytest.mark.parametrize("layout", ["spikingjelly root", "events_np itself", "original at root",
                                    "spikingjelly extract/", "frames only"])
def test_cifar10dvs_frames_equal_spikingjelly_in_every_layout(c10_sj_root, tmp_path, layout):
    sj_root, sj = c10_sj_root
    root = {"spikingjelly root": lambda: sj_root,
            "events_np itself": lambda: sj_root / "events_np",
            "original at root": lambda: _only(sj_root / "extract", tmp_path / "r", *C10_CLASSES),
            "spikingjelly extract/": lambda: _only(sj_root, tmp_path / "r", "extract"),
            "frames only": lambda: _only(sj_root, tmp_path / "r",
                                         f"frames_number_{T}_split_by_number")}[layout]()
    ours = {s: create_dataset("cifar10-dvs", s, root=root, T=T, augment=False,
                              cache_dir=tmp_path / "cache") for s in ("train", "test")}
    want = _sj_frames_by_name(sj)
    got = {**_frames_by_name(ours["train"]), **_frames_by_name(ours["test"])}
    assert sorted(got) == sorted(want) and len(got) == 22
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=str(key))
    # The papers' split: SpikingJelly's split_to_train_test_set(0.9, ..., random_split=False).
    sj_train, sj_test = split_to_train_test_set(0.9, sj, 10, random_split=False)
    stems = [Path(p).stem for p, _ in sj.samples]
    assert [r.name for r in ours["train"].recordings] == [stems[i] for i in sj_train.indices]
    assert [r.name for r in ours["test"].recordings] == [stems[i] for i in sj_test.indices]
    # 11 names sort as text: _0, _1, _10, _2, ..., _9; the first ceil(0.9 x 11) = 10 train.
    assert [r.name for r in ours["test"].recordings] == ["cifar10_airplane_9",
                                                          "cifar10_automobile_9"]
    assert "cifar10_airplane_10" in [r.name for r in ours["train"].recordings]


def test_cifar10dvs_resized_frames_equal_pooled_spikingjelly_frames(c10_sj_root, tmp_path):
    sj_root, _ = c10_sj_root
    frames_root = _only(sj_root, tmp_path / "f", f"frames_number_{T}_split_by_number")
    kw = {"T": T, "size": 32, "augment": False, "cache_dir": tmp_path / "cache"}
    from_frames = create_dataset("cifar10-dvs", "train", root=frames_root, **kw)
    from_events = create_dataset("cifar10-dvs", "train", root=sj_root, **kw)
    assert from_frames[0][0].shape == (T, 2, 32, 32)
    for i in range(len(from_events)):
        assert torch.equal(from_frames[i][0], from_events[i][0])
    with pytest.raises(ValueError, match="not an integer reduction"):
        create_dataset("cifar10-dvs", "train", root=frames_root, T=T, size=48, augment=False,
                       cache_dir=tmp_path / "cache2")


def test_an_unfinished_spikingjelly_conversion_is_refused(c10_sj_root, tmp_path):
    root = _only(c10_sj_root[0], tmp_path / "r", "events_np")
    (root / "events_np.building").touch()  # SpikingJelly's marker while it converts
    with pytest.raises(ValueError, match="did not finish"):
        create_dataset("cifar10-dvs", "train", root=root, T=T, cache_dir=tmp_path / "c")


def test_two_layouts_of_one_copy_never_share_a_cache_entry(c10_sj_root, tmp_path):
    # events_np/airplane/x.npz and frames_number_4_split_by_number/airplane/x.npz have the same
    # path relative to their folders: the layout prefixes the entry's name.
    sj_root = c10_sj_root[0]
    frames_root = _only(sj_root, tmp_path / "f", f"frames_number_{T}_split_by_number")
    kw = {"T": T, "augment": False, "cache_dir": tmp_path / "cache"}
    a = create_dataset("cifar10-dvs", "test", root=sj_root, **kw)
    b = create_dataset("cifar10-dvs", "test", root=frames_root, **kw)
    assert a.cache.dir == b.cache.dir  # one parameter set, one folder
    names = sorted(p.name for p in a.cache.dir.glob("*.npy"))
    assert len(names) == 4 and [n.split("__")[0] for n in names] == [
        "sj-events", "sj-events", "sj-frames", "sj-frames"]


def test_frames_of_another_T_say_what_to_set(c10_sj_root, tmp_path):
    sj_root, _ = c10_sj_root
    root = _only(sj_root, tmp_path / "f", f"frames_number_{T}_split_by_number")
    with pytest.raises(FileNotFoundError) as e:
        create_dataset("cifar10-dvs", "train", root=root, T=16, cache_dir=tmp_path / "c")
    msg = str(e.value)
    assert f"frames_number_{T}_split_by_number" in msg and "none for T = 16" in msg
    assert "events_np" in msg and ".aedat" in msg and "CIFAR10DVS" in msg  # every layout listed


def test_verify_names_the_layout_and_counts(c10_sj_root):
    sj_root, _ = c10_sj_root
    report = verify_dataset("cifar10-dvs", sj_root, deep=True)
    problems, notes = report.problems, report.notes
    missing = "bird, cat, deer, dog, frog, horse, ship, truck"  # this copy holds two classes
    assert problems == [f"train: no recordings of class {missing}",
                        f"test: no recordings of class {missing}"]
    assert notes[0].startswith("layout: spikingjelly-events")
    assert notes[1].startswith("train: 20 recordings; per class airplane: 10, automobile: 10, bird: 0")
    assert "decoded 22 files, 0 empty, 0 unreadable" in notes[-2]
    assert notes[-1].startswith("1 files have timestamps out of order")


def test_time_frames_count_every_event_once_when_timestamps_go_back(c10_sj_root, tmp_path):
    # SpikingJelly's split_by='time' cuts file positions and can count an event twice or not at
    # all when timestamps go back; ours slices by each event's own time (frames.py).
    ds = create_dataset("cifar10-dvs", "train", root=c10_sj_root[0], T=T, integration="time",
                        augment=False, cache_dir=tmp_path / "c")
    i = [r.name for r in ds.recordings].index(f"cifar10_{UNSORTED[0]}_{UNSORTED[1]}")
    assert int(ds[i][0].sum()) == 40 + 7 * UNSORTED[1]


def test_a_tonic_folder_without_files_does_not_hide_spikingjellys(c10_sj_root, tmp_path):
    root = _only(c10_sj_root[0], tmp_path / "r", "events_np")
    (root / "CIFAR10DVS" / "airplane").mkdir(parents=True)  # an interrupted tonic download
    ds = create_dataset("cifar10-dvs", "test", root=root, T=T, augment=False,
                        cache_dir=tmp_path / "c")
    assert ds.recordings[0].source == "sj-events" and len(ds) == 2


def test_download_completes_a_partial_tonic_copy_only(tmp_path):
    import dataclasses

    calls = []
    spec = dataclasses.replace(dataset_spec("dvs128-gesture"),
                               download=lambda spec, root: calls.append(root))
    (tmp_path / "DVSGesture" / "ibmGestureTrain" / "user01_led").mkdir(parents=True)
    np.save(tmp_path / "DVSGesture" / "ibmGestureTrain" / "user01_led" / "0.npy",
            np.zeros((0, 4)))
    with pytest.raises(FileNotFoundError, match="no test folder"):  # the fake fetched nothing
        spec.build(spec, "test", BuildOptions(root=tmp_path, T=T, download=True,
                                              cache_dir=tmp_path / "c"))
    assert calls == [tmp_path]  # tonic's copy is incomplete: tonic is asked to complete it
    sj = tmp_path / "sj"
    (sj / "events_np" / "test" / "0").mkdir(parents=True)
    np.savez(sj / "events_np" / "test" / "0" / "user24_lab_0.npz", t=np.arange(3), x=np.ones(3),
             y=np.ones(3), p=np.ones(3))
    ds = spec.build(spec, "test", BuildOptions(root=sj, T=T, download=True,
                                              cache_dir=tmp_path / "c"))
    assert len(ds) == 1 and calls == [tmp_path]  # SpikingJelly's copy: nothing to download


def test_aedat2_decoding_is_spikingjellys_orientation_by_hand(tmp_path):
    # One event at raw DVS128 address y_raw = 5, x_raw = 7, polarity bit 1, t = 1234:
    # address = 5 << 8 | 7 << 1 | 1 = 1295 -> x = 127 - 5 = 122, y = 127 - 7 = 120, p = 1 - 1 = 0.
    path = tmp_path / "one.aedat"
    path.write_bytes(JAER_HEADER + np.array([1295, 1234], ">u4").tobytes())
    ev, hw = read_aedat2_cifar10dvs(path)
    assert hw == (128, 128)
    assert (ev["t"].tolist(), ev["x"].tolist(), ev["y"].tolist(), ev["p"].tolist()) == (
        [1234], [122], [120], [0])


def test_aedat2_bad_files_name_the_problem(tmp_path):
    headless = tmp_path / "a.aedat"
    headless.write_bytes(np.array([1295, 1234], ">u4").tobytes())
    with pytest.raises(CorruptEventFileError, match="#!AER-DAT2.0"):
        read_aedat2_cifar10dvs(headless)
    cut = tmp_path / "b.aedat"
    cut.write_bytes(JAER_HEADER + np.array([1295, 1234, 7], ">u4").tobytes())
    with pytest.raises(CorruptEventFileError, match="truncated"):
        read_aedat2_cifar10dvs(cut)


# ---- DVS128 Gesture: AEDAT 3.1 release and SpikingJelly's folders ----

def _rows(order, t0=0, extra=()):
    """Labels-file rows: gesture g of ``order`` over [t0 + 80 ms k, t0 + 80 ms (k + 1))."""
    return [(g, t0 + 80_000 * k, t0 + 80_000 * (k + 1)) for k, g in enumerate(order)] + list(extra)


# Every split holds every class (SpikingJelly's DatasetFolder refuses an empty class folder).
# user01 repeats gesture 3 (user26's case in the release) and its gesture 5 ends after gesture 6
# starts (user22's case); user02 lies past 2^31 us, so its packets carry a timestamp overflow.
TRIALS = {
    "train": {"user01_fluorescent": [(g, s, e + 30_000 if g == 5 else e)
                                     for g, s, e in _rows(range(1, 12), extra=[
                                         (3, 900_000, 990_000)])],
              "user02_led": _rows(range(11, 0, -1), t0=2**31 - 300_000)},
    "test": {"user24_lab": _rows(range(1, 12))},
}
@pytest.fixture(scope="module")
def gesture_sj_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("g") / "DVS128Gesture_sj"
    release = root / "extract" / "DvsGesture"
    release.mkdir(parents=True)
    for split, trials in TRIALS.items():
        (release / f"trials_to_{split}.txt").write_text("".join(f"{t}.aedat\n" for t in trials))
        for k, (trial, rows) in enumerate(trials.items()):
            t0 = rows[0][1]
            write_aedat3_dvs128(release / f"{trial}.aedat", _events(3000, seed=k, t0=t0),
                                packet_size=500)
            (release / f"{trial}_labels.csv").write_text(
                "class,startTime_usec,endTime_usec\n"
                + "".join(f"{g},{s},{e}\n" for g, s, e in rows))
    (root / "events_np").mkdir()
    DVS128Gesture.create_raw_from_extracted(root / "extract", root / "events_np")
    sj = {s: DVS128Gesture(str(root), train=s == "train", data_type="frame", frames_number=T,
                           split_by="number") for s in ("train", "test")}
    return root, sj


@pytest.mark.parametrize("layout", ["spikingjelly root", "original release", "frames only"])
def test_gesture_frames_and_split_equal_spikingjelly(gesture_sj_root, tmp_path, layout):
    sj_root, sj = gesture_sj_root
    root = {"spikingjelly root": lambda: sj_root,
            "original release": lambda: sj_root / "extract" / "DvsGesture",
            "frames only": lambda: _only(sj_root, tmp_path / "r",
                                         f"frames_number_{T}_split_by_number")}[layout]()
    for split in ("train", "test"):
        ours = create_dataset("dvs128-gesture", split, root=root, T=T, augment=False,
                              cache_dir=tmp_path / "cache")
        want = _sj_frames_by_name(sj[split])
        got = _frames_by_name(ours)  # keyed by our label as a folder name: gesture id - 1
        assert sorted(got) == sorted(want)
        assert len(got) == sum(len(rows) for rows in TRIALS[split].values())  # 23 / 11 gestures
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=str(key))
        if split == "train":  # user01's two gestures of class 3 (label 2): _0 and _1
            assert {("2", "user01_fluorescent_0"), ("2", "user01_fluorescent_1")} <= set(got)


def test_aedat3_reader_equals_spikingjellys_and_round_trips(tmp_path):
    ev = _events(2500, seed=3, t0=2**31 - 1000, span=5000)  # crosses the 2^31 overflow
    path = write_aedat3_dvs128(tmp_path / "user03_led.aedat", ev, packet_size=300)
    ours, hw = read_aedat3_dvs128(path)
    theirs = load_aedat_v3(path)
    assert hw == (128, 128) and len(ours) == 2500
    for k in "txyp":
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
        np.testing.assert_array_equal(ours[k], ev[k], err_msg=k)


def test_aedat3_bad_files_name_the_problem(tmp_path):
    path = write_aedat3_dvs128(tmp_path / "a.aedat", _events(100, seed=0))
    data = path.read_bytes()
    (tmp_path / "cut.aedat").write_bytes(data[:-5])
    with pytest.raises(CorruptEventFileError, match="5 bytes short"):
        read_aedat3_dvs128(tmp_path / "cut.aedat")
    (tmp_path / "noend.aedat").write_bytes(data.replace(b"#!END-HEADER", b"#!NOT-HEADER"))
    with pytest.raises(CorruptEventFileError, match="END-HEADER"):
        read_aedat3_dvs128(tmp_path / "noend.aedat")
    (tmp_path / "v2.aedat").write_bytes(JAER_HEADER)
    with pytest.raises(CorruptEventFileError, match="AEDAT 3"):
        read_aedat3_dvs128(tmp_path / "v2.aedat")


def test_gesture_release_without_trials_files_splits_by_user(gesture_sj_root, tmp_path):
    release = shutil.copytree(gesture_sj_root[0] / "extract" / "DvsGesture", tmp_path / "Dvs")
    for split in ("train", "test"):
        (release / f"trials_to_{split}.txt").unlink()
    test = create_dataset("dvs128-gesture", "test", root=release, T=T, augment=False,
                          cache_dir=tmp_path / "c")
    assert [(r.label, r.name) for r in test.recordings] == [(c, "user24_lab_0") for c in range(11)]
    assert {r.path.name for r in test.recordings} == {"user24_lab.aedat"}


def test_an_edited_labels_file_rebuilds_its_gestures(gesture_sj_root, tmp_path):
    release = shutil.copytree(gesture_sj_root[0] / "extract" / "DvsGesture", tmp_path / "Dvs")
    kw = {"root": release, "T": T, "augment": False, "cache_dir": tmp_path / "c"}
    before = create_dataset("dvs128-gesture", "test", **kw)[0][0]
    csv = release / "user24_lab_labels.csv"
    rows = _rows(range(1, 12), t0=40_000)  # every gesture 40 ms later: other events
    csv.write_text("class,startTime_usec,endTime_usec\n" + "".join(f"{g},{a},{b}\n"
                                                                   for g, a, b in rows))
    after = create_dataset("dvs128-gesture", "test", **kw)[0][0]
    fresh = create_dataset("dvs128-gesture", "test", **{**kw, "cache_dir": tmp_path / "c2"})[0][0]
    assert torch.equal(after, fresh) and not torch.equal(after, before)


def test_gesture_labels_file_with_a_bad_class_is_refused(gesture_sj_root, tmp_path):
    release = shutil.copytree(gesture_sj_root[0] / "extract" / "DvsGesture", tmp_path / "Dvs")
    (release / "user24_lab_labels.csv").write_text("class,startTime_usec,endTime_usec\n12,0,5\n")
    with pytest.raises(ValueError, match="class 1-11"):
        create_dataset("dvs128-gesture", "test", root=release, T=T, cache_dir=tmp_path / "c")


# ---- N-MNIST: SpikingJelly's events_np of the original .bin release ----

def test_nmnist_spikingjelly_events_equal_the_bin_release(tmp_path):
    bins = tmp_path / "extract"
    for split, digits in (("Train", (0, 3)), ("Test", (3,))):
        for d in digits:
            (bins / split / str(d)).mkdir(parents=True)
            for i in range(2):
                ev = _events(300, seed=10 * d + i, span=300_000, hw=(34, 34))
                write_nmnist_bin(bins / split / str(d) / f"{i:05d}.bin", ev)
    (tmp_path / "events_np").mkdir()
    NMNIST.create_raw_from_extracted(bins, tmp_path / "events_np")
    tonic_root = tmp_path / "tonic"
    shutil.copytree(bins, tonic_root / "NMNIST")
    for split in ("train", "test"):
        kw = {"T": T, "augment": False, "cache_dir": tmp_path / "c"}
        sj = create_dataset("n-mnist", split, root=tmp_path, **kw)
        tonic = create_dataset("n-mnist", split, root=tonic_root, **kw)
        assert [r.name for r in sj.recordings] == [r.name for r in tonic.recordings]
        assert sj.labels == tonic.labels and len(sj) == (4 if split == "train" else 2)
        for i in range(len(sj)):
            assert torch.equal(sj[i][0], tonic[i][0])


def test_spikingjelly_npz_with_missing_arrays_is_corrupt(tmp_path):
    np.savez(tmp_path / "x.npz", t=np.zeros(3), x=np.zeros(3))
    with pytest.raises(CorruptEventFileError, match=r"expected \['t', 'x', 'y', 'p'\]"):
        read_spikingjelly_events(tmp_path / "x.npz", (128, 128))
