"""Event datasets on files written in the real on-disk formats: the CIFAR10-DVS 9:1 split, the
frame cache (hit, invalidation, interrupted build), every bad-input case, N-MNIST and DVS128
Gesture layouts (with the real N-MNIST recording), batching."""
import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import spikemoe.data.cache as cache_mod
import spikemoe.data.event_datasets as ed
from spikemoe.data import (
    CorruptEventFileError,
    EventFrameAugment,
    collate_time_major,
    create_dataset,
    dataset_spec,
    temporary_dataset,
)
from spikemoe.data.events import as_events
from spikemoe.data.layouts import layout_problems
from spikemoe.data.writers import write_aedat4, write_gesture_npy, write_nmnist_bin

REAL = Path(__file__).resolve().parent / "fixtures" / "real"  # shipped in the repo
KW = {"T": 4, "size": 32}  # small frames keep the cache tiny


def _events(n, seed, hw=(128, 128), t_max=100_000):
    rng = np.random.default_rng(seed)
    return as_events(np.sort(rng.integers(0, t_max, n)), rng.integers(0, hw[1], n),
                     rng.integers(0, hw[0], n), rng.integers(0, 2, n))


def _cifar10dvs(root: Path, counts=None) -> Path:
    """ROOT/CIFAR10DVS/<class>/cifar10_<class>_<i>.aedat4; sample i of a class has 50 + i events."""
    counts = counts or {"airplane": 10, "cat": 11}
    for c, n in counts.items():
        (root / "CIFAR10DVS" / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            path = root / "CIFAR10DVS" / c / f"cifar10_{c}_{i}.aedat4"
            write_aedat4(path, _events(50 + i, seed=i))
    return root


def _c10(root, cache, split="train", **kw):
    """create_dataset('cifar10-dvs', ...) with small frames and, unless asked, no augmentation."""
    return create_dataset("cifar10-dvs", split, root=root, cache_dir=cache,
                          **{"augment": False, **KW, **kw})


def _names(ds):
    return [p.name for p in ds.files]


def test_cifar10dvs_split_is_the_papers_first_90_percent_by_sorted_name(tmp_path):
    root = _cifar10dvs(tmp_path / "data")
    train = create_dataset("cifar10-dvs", "train", root=root, cache_dir=tmp_path / "c", **KW)
    test = create_dataset("cifar10-dvs", "test", root=root, cache_dir=tmp_path / "c", **KW)
    # airplane: 10 files -> ceil(9.0) = 9 train; cat: 11 -> ceil(9.9) = 10 train. Plain string
    # order: cifar10_cat_10 sorts before cifar10_cat_2, so cat_9 is the last, held-out file.
    assert _names(test) == ["cifar10_airplane_9.aedat4", "cifar10_cat_9.aedat4"]
    assert len(train) == 19 and "cifar10_cat_10.aedat4" in _names(train)
    assert set(_names(train)).isdisjoint(_names(test))
    assert [y for _, y in test] == [0, 3]  # tonic's class numbering: airplane 0, cat 3
    x, _ = test[1]
    assert x.dtype == torch.float32 and x.shape == (4, 2, 32, 32) and x.sum() == 50 + 9
    assert test.transform is None and isinstance(train.transform, EventFrameAugment)


def test_loading_is_identical_with_and_without_workers(tmp_path):
    root = _cifar10dvs(tmp_path / "data")
    ds = _c10(root, tmp_path / "c")
    batches = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=workers,
                                             collate_fn=collate_time_major)
        batches.append(list(loader))
    assert [x.shape[1] for x, _ in batches[0]] == [5, 5, 5, 4]  # [T, B, 2, H, W]
    for (x0, y0), (x2, y2) in zip(*batches, strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_cache_hit_decodes_nothing_and_changed_parameters_rebuild(tmp_path, monkeypatch):
    root = _cifar10dvs(tmp_path / "data", {"cat": 3})
    first = _c10(root, tmp_path / "c")
    x_first = first[0][0]

    def no_decoding(path):
        raise AssertionError(f"cache hit expected, but {path} was decoded")

    monkeypatch.setattr(ed, "read_events", no_decoding)
    again = _c10(root, tmp_path / "c")
    assert again.cache.dir == first.cache.dir and torch.equal(again[0][0], x_first)
    for change in ({"T": 5}, {"integration": "time"}, {"size": 16}):  # each needs new frames
        with pytest.raises(AssertionError, match="was decoded"):
            _c10(root, tmp_path / "c", **change)
    monkeypatch.undo()
    t5 = _c10(root, tmp_path / "c", T=5)
    assert t5.cache.dir != first.cache.dir and t5[0][0].shape == (5, 2, 32, 32)
    assert (t5.cache.dir / "params.json").read_text().count('"T": 5') == 1
    # A replaced recording (new size) gets new frames, not the stale ones.
    write_aedat4(root / "CIFAR10DVS" / "cat" / "cifar10_cat_0.aedat4", _events(500, seed=7))
    fresh = _c10(root, tmp_path / "c")
    assert fresh[0][0].sum() == 500


def test_interrupted_build_resumes_without_reading_partial_files(tmp_path, monkeypatch):
    root = _cifar10dvs(tmp_path / "data", {"cat": 10})  # 9 training files
    kw = dict(root=root, cache_dir=tmp_path / "c", augment=False, **KW)
    reference = create_dataset("cifar10-dvs", "train", **{**kw, "cache_dir": tmp_path / "ref"})

    real_replace, calls = os.replace, []

    def killed_before_the_third_entry_lands(src, dst):
        calls.append(dst)
        if len(calls) == 4:  # params.json and 2 entries renamed; the process "dies" now
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(cache_mod.os, "replace", killed_before_the_third_entry_lands)
    with pytest.raises(KeyboardInterrupt):
        create_dataset("cifar10-dvs", "train", **kw)
    monkeypatch.undo()
    folder = tmp_path / "c" / "cifar10-dvs" / reference.cache.key  # same parameters, same key
    assert len(list(folder.glob("*.npy"))) == 2 and not list(folder.glob("*.tmp-*"))
    # A SIGKILL mid-write leaves a temp file behind: plant one, old and full of garbage.
    stray = folder / f"{reference._entries[5]}.npy.tmp-4242-dead"
    stray.write_bytes(b"\x93NUMPY half a file")
    os.utime(stray, (1, 1))
    decoded = []
    real_read = ed.read_events
    monkeypatch.setattr(ed, "read_events", lambda p: decoded.append(p.name) or real_read(p))
    resumed = create_dataset("cifar10-dvs", "train", **kw)
    assert len(decoded) == 7  # only the missing entries are built; the 2 good ones are reused
    assert not stray.exists()  # swept; it was never read
    for (a, ya), (b, yb) in zip(resumed, reference, strict=True):
        assert torch.equal(a, b) and ya == yb


def test_unreadable_cache_entry_is_rebuilt_not_returned(tmp_path):
    root = _cifar10dvs(tmp_path / "data", {"cat": 2})
    ds = _c10(root, tmp_path / "c")
    expected = ds[0][0].clone()
    entry = ds.cache.path(ds._entries[0])
    entry.write_bytes(entry.read_bytes()[:100])  # a disk error truncated it
    with pytest.warns(UserWarning, match="unreadable.*rebuilding"):
        assert torch.equal(ds[0][0], expected)
    assert ds.cache.load(ds._entries[0]) is not None  # rewritten whole


def _with_download(name, download):
    """``name``'s spec with ``download`` stubbed, registered for a ``with`` block."""
    return temporary_dataset(dataclasses.replace(dataset_spec(name), download=download),
                             replace=True)


def test_missing_root_and_wrong_layout_name_path_layout_and_command(tmp_path):
    never = lambda *a: pytest.fail("download attempted")  # noqa: E731
    with _with_download("cifar10-dvs", never), _with_download("n-mnist", never):
        with pytest.raises(FileNotFoundError) as e:
            create_dataset("cifar10-dvs", "train", root=tmp_path / "nowhere",
                           cache_dir=tmp_path / "c")
        for part in (str(tmp_path / "nowhere"), "ROOT/CIFAR10DVS/<class>/*.aedat4",
                     "spikemoe data verify cifar10-dvs", "prepare_cifar10dvs.py"):
            assert part in str(e.value)
        (tmp_path / "wrong" / "stuff").mkdir(parents=True)
        with pytest.raises(FileNotFoundError, match=r"it holds: stuff.*Expected layout"):
            create_dataset("cifar10-dvs", "train", root=tmp_path / "wrong")
        with pytest.raises(ValueError, match="needs root=DIR"):
            create_dataset("n-mnist", "train")


def test_unknown_class_folder_lists_the_expected_names(tmp_path):
    root = _cifar10dvs(tmp_path / "data", {"cat": 2, "kitten": 1})
    names = "airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck"
    with pytest.raises(ValueError, match=rf"'kitten'.*{names}"):
        create_dataset("cifar10-dvs", "train", root=root, cache_dir=tmp_path / "c", **KW)


def test_corrupt_file_raises_naming_it_or_is_skipped_and_counted(tmp_path):
    root = _cifar10dvs(tmp_path / "data", {"cat": 4})
    bad = root / "CIFAR10DVS" / "cat" / "cifar10_cat_1.aedat4"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated inside its first packet
    with pytest.raises(CorruptEventFileError, match="cifar10_cat_1.aedat4"):
        create_dataset("cifar10-dvs", "train", root=root, cache_dir=tmp_path / "c", **KW)
    with pytest.warns(UserWarning, match=r"skipped 1 corrupt recording\(s\) of 4 \(cifar10_cat_1"):
        ds = _c10(root, tmp_path / "c", skip_corrupt=True)
    # The dataset lists what it left out, as plain strings the trainer writes to summary.json.
    assert len(ds) == 3 and ds.skipped_files == [(str(bad), ds.skipped_files[0][1])]
    assert "decoder failed" in ds.skipped_files[0][1]
    assert "cifar10_cat_1.aedat4" not in _names(ds)
    assert all(x.shape == (4, 2, 32, 32) for x, _ in ds)


def test_empty_recording_gives_zero_frames_and_a_warning(tmp_path):
    root = _cifar10dvs(tmp_path / "data", {"cat": 2})
    write_aedat4(root / "CIFAR10DVS" / "cat" / "cifar10_cat_0.aedat4", _events(0, seed=0))
    with pytest.warns(UserWarning, match="cifar10_cat_0.aedat4 is an empty recording"):
        ds = _c10(root, tmp_path / "c")
    x, y = ds[0]
    assert x.shape == (4, 2, 32, 32) and x.sum() == 0 and y == 3
    assert collate_time_major([ds[0], ds[1]])[0].shape == (4, 2, 2, 32, 32)


def test_download_happens_only_when_asked(tmp_path):
    asked = []
    def fake_download(spec, root):
        asked.append(spec.info.name)
        _cifar10dvs(Path(root), {"dog": 2})

    with _with_download("cifar10-dvs", fake_download):
        ds = _c10(tmp_path / "dl", tmp_path / "c", download=True)
    assert asked == ["cifar10-dvs"] and [y for _, y in ds] == [5, 5]  # ceil(0.9 * 2): both train


def test_nmnist_official_split_with_the_real_recording(tmp_path):
    real = (REAL / "sample_nmnist.bin").read_bytes()
    for split, digit in (("Train", "1"), ("Test", "7")):
        folder = tmp_path / "NMNIST" / split / digit
        folder.mkdir(parents=True)
        (folder / "00015.bin").write_bytes(real)
    write_nmnist_bin(tmp_path / "NMNIST" / "Train" / "1" / "00016.bin", _events(10, 1, (34, 34)))
    train = create_dataset("n-mnist", "train", root=tmp_path, cache_dir=tmp_path / "c", T=8)
    test = create_dataset("n-mnist", "test", root=tmp_path / "NMNIST", cache_dir=tmp_path / "c",
                          T=8)  # root may also be the dataset folder itself
    assert [y for _, y in train] == [1, 1] and [y for _, y in test] == [7]
    x, _ = test[0]
    assert x.shape == (8, 2, 34, 34) and x.sum() == 4325 and train.transform is None
    (tmp_path / "NMNIST" / "Test" / "seven").mkdir()
    (tmp_path / "NMNIST" / "Test" / "seven" / "1.bin").write_bytes(real)
    with pytest.raises(ValueError, match=r"'seven'.*0, 1, 2, 3, 4, 5, 6, 7, 8, 9"):
        create_dataset("n-mnist", "test", root=tmp_path, cache_dir=tmp_path / "c")


def test_dvs128_gesture_labels_from_file_names(tmp_path):
    base = tmp_path / "DVSGesture"
    for split, user, labels in (("ibmGestureTrain", "user01_fluorescent", (0, 10)),
                                ("ibmGestureTest", "user24_led", (3,))):
        (base / split / user).mkdir(parents=True)
        for c in labels:
            ev = _events(100 + c, c)
            ev["t"] = ev["t"] // 1000 * 1000
            write_gesture_npy(base / split / user / f"{c}.npy", ev)
    train = create_dataset("dvs128-gesture", "train", root=tmp_path, cache_dir=tmp_path / "c", **KW)
    assert [y for _, y in train] == [0, 10] and train.transform.flip is None  # no flip for gestures
    test = create_dataset("dvs128-gesture", "test", root=tmp_path, cache_dir=tmp_path / "c", **KW)
    assert test[0][0].sum() == 103
    write_gesture_npy(base / "ibmGestureTest" / "user24_led" / "11.npy", _events(5, 0, t_max=1))
    with pytest.raises(ValueError, match=r"file name '11'.*0.npy, 1.npy.*10.npy"):
        create_dataset("dvs128-gesture", "test", root=tmp_path, cache_dir=tmp_path / "c")
    (base / "ibmGestureTest" / "user24_led" / "11.npy").unlink()
    (base / "ibmGestureTest" / "user02_led").mkdir()  # a training subject in the test folder
    write_gesture_npy(base / "ibmGestureTest" / "user02_led" / "4.npy", ev)
    problems, files = layout_problems(dataset_spec("dvs128-gesture").layout, tmp_path)
    assert problems == ["test: user02_led belongs to the other split (users 24-29 here)"]
    assert [len(files["train"]), len(files["test"])] == [2, 2]


def test_collate_time_major_shapes_and_errors():
    events = [(torch.full((3, 2, 4, 4), float(i)), i) for i in range(5)]
    x, y = collate_time_major(events)
    assert x.shape == (3, 5, 2, 4, 4) and x.is_contiguous() and y.dtype == torch.int64
    assert torch.equal(x[:, 2], torch.full((3, 2, 4, 4), 2.0))  # batch item 2 at every time step
    x, y = collate_time_major([(torch.zeros(3, 8, 8), 1), (torch.ones(3, 8, 8), 0)])
    assert x.shape == (2, 3, 8, 8) and y.tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"item 0 is \[3, 8, 8\], item 1 is \[3, 4, 4\]"):
        collate_time_major([(torch.zeros(3, 8, 8), 0), (torch.zeros(3, 4, 4), 0)])


def test_bad_arguments_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        create_dataset("cifar10-dvs", "val", root=tmp_path)
    with pytest.raises(ValueError, match="integration must be one of"):
        create_dataset("digits-dvs", "train", integration="number")
    with pytest.raises(ValueError, match="Did you mean cifar10-dvs"):
        create_dataset("cifar10dvs", "train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="T must be a positive int"):
            create_dataset("digits-dvs", "train", T=0)
