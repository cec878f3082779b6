"""An event file (or folder) this process may not read is named with the fix (chmod /
ownership), is never called corrupt, and is never dropped by ``skip_corrupt``; an unwritable
frame cache names itself and the ways out (issue 11, item 8).

Files are written in the real on-disk formats, then made unreadable with ``chmod 000``. Root
(with CAP_DAC_OVERRIDE) reads a mode-000 file anyway, so where the chmod does not stop this
process the OS's refusal is simulated: ``open`` (Python's, used by tonic and numpy) and the
AEDAT decoder (Rust, it opens the file itself) raise what they raise for another user.
Elsewhere the real chmod does it (e.g. ``setpriv --bounding-set -dac_override,-dac_read_search
pytest ...`` as root).
"""
import builtins
import errno
import os
from pathlib import Path

import aedat
import numpy as np
import pytest

from spikemoe.cli import main as cli_main
from spikemoe.data import CorruptEventFileError, UnreadableEventFileError, create_dataset
from spikemoe.data.cache import CacheNotWritableError, FrameCache
from spikemoe.data.events import as_events, read_events
from spikemoe.data.verify import verify_dataset
from spikemoe.data.writers import write_aedat4, write_gesture_npy, write_nmnist_bin


def _events(n=40, hw=(34, 34)):
    rng = np.random.default_rng(n)
    return as_events(np.arange(n) * 1000, rng.integers(0, hw[1], n), rng.integers(0, hw[0], n),
                     rng.integers(0, 2, n))


def deny_read(monkeypatch, path: Path) -> None:
    """``chmod 000 path``; where that does not stop us (root), make every reader refuse it."""
    path.chmod(0)
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        return  # the OS refuses: the real case, nothing to simulate
    denied = os.path.abspath(path)
    real_open, real_decoder = builtins.open, aedat.Decoder

    def refusing_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(os.fspath(file)) == denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    def refusing_decoder(file, *args, **kwargs):
        if os.path.abspath(file) == denied:  # what aedat (Rust std::fs) raises for EACCES
            raise RuntimeError("Permission denied (os error 13)")
        return real_decoder(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    monkeypatch.setattr(aedat, "Decoder", refusing_decoder)


WRITERS = {
    "sample.bin": lambda p: write_nmnist_bin(p, _events()),
    "sample.aedat4": lambda p: write_aedat4(p, _events(hw=(128, 128))),
    "sample.npy": lambda p: write_gesture_npy(p, _events(hw=(128, 128))),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_unreadable_file_is_named_with_the_fix_and_not_called_corrupt(tmp_path, monkeypatch,
                                                                       name):
    path = tmp_path / name
    WRITERS[name](path)
    assert len(read_events(path)[0]) == 40  # readable: the file itself is fine
    deny_read(monkeypatch, path)
    with pytest.raises(UnreadableEventFileError) as err:
        read_events(path)
    msg = str(err.value)
    assert msg.startswith(f"cannot read {path}: permission denied; fix with chmod/ownership")
    assert "corrupt" not in msg.split(".")[0] and "re-download" not in msg.lower()
    # Both a PermissionError (for OS-error handlers) and a ValueError (the CLI's one line).
    assert isinstance(err.value, PermissionError) and isinstance(err.value, ValueError)
    assert not isinstance(err.value, CorruptEventFileError)


def test_a_permission_error_inside_the_aedat_decoder_is_not_called_corrupt(tmp_path,
                                                                             monkeypatch):
    # Python may open the file, but the Rust decoder's own open is refused (EACCES).
    path = write_aedat4(tmp_path / "x.aedat4", _events(hw=(128, 128)))
    real_decoder = aedat.Decoder

    def refusing_decoder(file, *args, **kwargs):
        if os.path.abspath(file) == os.path.abspath(path):
            raise RuntimeError("Permission denied (os error 13)")
        return real_decoder(file, *args, **kwargs)

    monkeypatch.setattr(aedat, "Decoder", refusing_decoder)
    with pytest.raises(UnreadableEventFileError, match="x.aedat4: permission denied"):
        read_events(path)


def _cifar10dvs(root: Path, n=3) -> list[Path]:
    (root / "CIFAR10DVS" / "cat").mkdir(parents=True)
    return [write_aedat4(root / "CIFAR10DVS" / "cat" / f"cifar10_cat_{i}.aedat4",
                         _events(30 + i, hw=(128, 128))) for i in range(n)]


def test_skip_corrupt_never_skips_an_unreadable_file(tmp_path, monkeypatch):
    files = _cifar10dvs(tmp_path / "data", 3)
    files[0].write_bytes(files[0].read_bytes()[:200])  # really corrupt: skipped
    deny_read(monkeypatch, files[2])  # unreadable: must stop the build, not shrink the data
    with pytest.raises(UnreadableEventFileError, match="cifar10_cat_2.aedat4: permission denied"):
        create_dataset("cifar10-dvs", "train", root=tmp_path / "data", T=2, size=16,
                       cache_dir=tmp_path / "c", skip_corrupt=True, augment=False)


def test_unreadable_nmnist_file_stops_dataset_building_with_the_fix(tmp_path, monkeypatch):
    digit = tmp_path / "NMNIST" / "Train" / "3"
    digit.mkdir(parents=True)
    files = [write_nmnist_bin(digit / f"{i:05d}.bin", _events(20 + i)) for i in range(2)]
    deny_read(monkeypatch, files[1])
    for skip in (False, True):
        with pytest.raises(UnreadableEventFileError, match="00001.bin: permission denied"):
            create_dataset("n-mnist", "train", root=tmp_path, T=2, cache_dir=tmp_path / "c",
                           skip_corrupt=skip)


def test_verify_deep_reports_unreadable_files_as_such(tmp_path, monkeypatch):
    files = _cifar10dvs(tmp_path, 2)
    deny_read(monkeypatch, files[1])
    report = verify_dataset("cifar10-dvs", tmp_path, deep=True)
    bad = [p for p in report.problems if str(files[1]) in p]
    assert bad == [f"unreadable: {files[1]}: permission denied (not corrupt; fix with "
                   f"chmod/ownership, e.g. `chmod a+r {files[1]}`)"]
    assert not any(p.startswith("corrupt") for p in report.problems)
    assert "1 unreadable" in report.notes[-1]


def test_cli_prints_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    path = write_nmnist_bin(tmp_path / "digit.bin", _events())
    deny_read(monkeypatch, path)
    assert cli_main(["data", "inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"spikemoe data: error: cannot read {path}: permission denied; fix with "
                   f"chmod/ownership (`ls -l` shows its mode and owner; `chmod a+r {path}`; for "
                   "a whole copy: `chmod -R a+rX ROOT`, or `chown` it to the user running "
                   "spikemoe). It is not known to be corrupt, so skip_corrupt does not leave it "
                   "out.\n")


def deny_listing(monkeypatch, folder: Path) -> None:
    """``chmod 000 folder``; where that does not stop us (root), make listing it fail."""
    folder.chmod(0)
    try:
        os.listdir(folder)
    except PermissionError:
        return  # the OS refuses: the real case
    denied, real_scandir = os.path.abspath(folder), os.scandir

    def refusing_scandir(path="."):
        if os.path.abspath(os.fspath(path)) == denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refusing_scandir)


def test_an_unreadable_class_folder_is_not_silently_left_out(tmp_path, monkeypatch):
    # Path.rglob skips a folder it may not list: the run would train on fewer classes.
    for digit in ("3", "4"):
        (tmp_path / "NMNIST" / "Train" / digit).mkdir(parents=True)
        write_nmnist_bin(tmp_path / "NMNIST" / "Train" / digit / "00001.bin", _events())
    folder = tmp_path / "NMNIST" / "Train" / "4"
    deny_listing(monkeypatch, folder)
    with pytest.raises(UnreadableEventFileError) as err:
        create_dataset("n-mnist", "train", root=tmp_path, T=2, cache_dir=tmp_path / "c",
                       skip_corrupt=True)
    assert str(err.value).startswith(f"cannot read {folder}: permission denied; fix with "
                                     f"chmod/ownership (`ls -l` shows its mode and owner; "
                                     f"`chmod -R a+rX {folder}`")
    report = verify_dataset("n-mnist", tmp_path)
    assert (f"unreadable folder {folder}: permission denied, its files cannot be listed (fix "
            f"with chmod/ownership: `chmod -R a+rX {folder}`)") in report.problems


def deny_write(monkeypatch, folder: Path) -> None:
    """``chmod 555 folder``; where that does not stop us (root), make writing under it fail."""
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        return  # the OS refuses: the real case
    (folder / "probe").unlink()
    denied, real_open = os.path.abspath(folder), builtins.open

    def refusing_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and "w" in mode \
                and os.path.abspath(os.fspath(file)).startswith(denied + os.sep):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)


def test_an_unwritable_frame_cache_names_the_folder_and_the_ways_out(tmp_path, monkeypatch):
    (tmp_path / "NMNIST" / "Train" / "3").mkdir(parents=True)
    write_nmnist_bin(tmp_path / "NMNIST" / "Train" / "3" / "00001.bin", _events())
    cache_root = tmp_path / "cache"
    cache_root.mkdir()
    deny_write(monkeypatch, cache_root)
    with pytest.raises(CacheNotWritableError) as err:  # a ValueError: one line in the CLI
        create_dataset("n-mnist", "train", root=tmp_path, T=2, cache_dir=cache_root)
    msg = str(err.value)
    assert msg.startswith(f"cannot write the frame cache under {cache_root / 'n-mnist'}")
    assert "data.cache_dir=DIR" in msg and "$SPIKEMOE_CACHE" in msg
    assert isinstance(err.value, ValueError)


def test_a_cache_entry_that_cannot_be_read_is_rebuilt_not_deleted(tmp_path, monkeypatch):
    cache = FrameCache(tmp_path, {"dataset": "x"}, (1, 2))
    cache.save("e", np.array([[1, 2]]))
    deny_read(monkeypatch, cache.path("e"))
    with pytest.warns(UserWarning, match=r"cannot be read \(permission denied\); rebuilding"):
        assert cache.load("e") is None
    assert cache.path("e").exists()  # left for the rebuild to replace, not unlinked
    monkeypatch.undo()
    cache.save("e", np.array([[3, 4]]))  # os.replace over it needs no read permission
    assert cache.load("e").tolist() == [[3, 4]]
