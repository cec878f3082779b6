"""Event files -> one clean structured array: the decoders for every supported format.

An event camera reports per-pixel log-intensity changes as events ``e_i = (t_i, x_i, y_i, p_i)``:
timestamp ``t`` in microseconds, pixel column ``x`` in ``[0, W)``, row ``y`` in ``[0, H)`` and
polarity ``p`` (1 = ON, brightness went up; 0 = OFF). Every reader here returns
``(events, (H, W))`` with ``events`` a 1-D array of ``EVENT_DTYPE``, in file order.

Formats:
    .aedat4  AEDAT 4.0 (iniVation DV; CIFAR10-DVS in tonic's release). Decoded with the ``aedat``
             package, as ``tonic.io.read_aedat4`` does; written by hand because tonic's reader
             drops the sensor size the file declares, and fails on a recording with no event
             packets instead of returning zero events. The lowest-numbered event stream is read
             (tonic's rule); IMU / trigger streams are skipped.
    .bin     N-MNIST / N-Caltech101 ATIS 40-bit records; ``tonic.io.read_mnist_file`` decodes
             them, after a length check that tonic does not make (a truncated file otherwise
             decodes into misaligned garbage). Sensor 34 x 34.
    .npy     DVS128 Gesture as tonic releases it: an ``[N, 4]`` array of ``x, y, p, t`` with
             ``t`` in milliseconds (converted to microseconds, as ``tonic.datasets.DVSGesture``).
             Sensor 128 x 128.

A file that cannot be decoded raises ``CorruptEventFileError`` (a ``ValueError``) naming it; a
file that decodes to zero events is not corrupt (callers warn and produce all-zero frames). A
file this process may not read (its mode or owner) raises ``UnreadableEventFileError`` (a
``PermissionError``, and a ``ValueError`` so the CLI prints it as one line): it is not corrupt,
re-downloading would not help, and ``skip_corrupt`` never drops it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "EVENT_DTYPE", "EVENT_FORMATS", "CorruptEventFileError", "UnreadableEventFileError",
    "as_events", "read_aedat4", "read_events", "read_gesture_npy", "read_nmnist_bin",
]

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1")])
NMNIST_SENSOR_HW = (34, 34)
GESTURE_SENSOR_HW = (128, 128)


class CorruptEventFileError(ValueError):
    """An event file exists but cannot be decoded (truncated, garbled, wrong content)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"corrupt event file {self.path}: {reason}. Re-download or re-extract this file "
            "(`spikemoe data verify NAME --root DIR --deep` lists every bad file), or pass "
            "skip_corrupt=True to leave it out of the dataset."
        )


class UnreadableEventFileError(PermissionError, ValueError):
    """An event file exists but this process is not allowed to read it (mode or ownership).

    Not a ``CorruptEventFileError``: the bytes may be fine, so ``skip_corrupt`` does not skip
    it and the advice is ``chmod`` / ``chown``, not a re-download. A ``PermissionError`` for
    code that handles OS errors, and a ``ValueError`` so ``spikemoe`` prints it as one line
    (as ``io.UnsupportedOperation`` is both an ``OSError`` and a ``ValueError``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.reason = "permission denied"
        try:
            is_folder = self.path.is_dir()
        except OSError:  # its parent may not be searched either
            is_folder = False
        if is_folder:  # a folder of the dataset that cannot be listed
            fix = f"`chmod -R a+rX {self.path}`"
        else:
            fix = f"`chmod a+r {self.path}`; for a whole copy: `chmod -R a+rX ROOT`"
        super().__init__(
            f"cannot read {self.path}: permission denied; fix with chmod/ownership (`ls -l` "
            f"shows its mode and owner; {fix}, or `chown` it to the user running spikemoe). "
            "It is not known to be corrupt, so skip_corrupt does not leave it out."
        )


def _check_readable(path: Path) -> None:
    """Open ``path`` for reading once (the decoders below open it again themselves).

    Raises:
        UnreadableEventFileError: the OS refused to open it (``PermissionError``).
    """
    try:
        with open(path, "rb"):
            pass
    except PermissionError as e:
        raise UnreadableEventFileError(path) from e


def as_events(t, x, y, p) -> np.ndarray:
    """Pack four equal-length columns into an ``EVENT_DTYPE`` array (polarity: ``p > 0`` -> 1)."""
    events = np.empty(len(t), EVENT_DTYPE)
    events["t"], events["x"], events["y"] = t, x, y
    events["p"] = np.asarray(p) > 0
    return events


def _check_coordinates(path: Path, events: np.ndarray, hw: tuple[int, int]) -> None:
    if len(events) == 0:
        return
    h, w = hw
    for name, limit in (("x", w), ("y", h)):
        lo, hi = int(events[name].min()), int(events[name].max())
        if lo < 0 or hi >= limit:
            raise CorruptEventFileError(
                path, f"{name} spans [{lo}, {hi}] but the sensor is {w} x {h} (W x H), so {name} "
                f"must lie in [0, {limit - 1}]"
            )


def read_aedat4(path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode the first event stream of an AEDAT 4.0 file.

    Returns:
        ``(events, (H, W))``: ``[N]`` events of ``EVENT_DTYPE``; the sensor size the file declares.
    Raises:
        FileNotFoundError: no such file.
        UnreadableEventFileError: this process may not read it.
        CorruptEventFileError: not AEDAT 4.0, truncated, garbled, or without an event stream.
    """
    import aedat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no event file at {path}")
    _check_readable(path)
    try:
        decoder = aedat.Decoder(str(path))
        streams = decoder.id_to_stream()
        event_ids = sorted(i for i, s in streams.items() if s["type"] == "events")
        if not event_ids:
            kinds = ", ".join(s["type"] for s in streams.values()) or "none"
            raise CorruptEventFileError(path, f"it has no event stream (streams found: {kinds})")
        sid = event_ids[0]
        hw = (int(streams[sid]["height"]), int(streams[sid]["width"]))
        packets = [pk["events"] for pk in decoder if pk["stream_id"] == sid and "events" in pk]
    except CorruptEventFileError:
        raise
    except Exception as e:  # the Rust decoder raises RuntimeError / OSError with a terse text
        if isinstance(e, PermissionError) or "os error 13" in str(e):  # EACCES, from Rust's open
            raise UnreadableEventFileError(path) from e
        raise CorruptEventFileError(path, f"the AEDAT 4.0 decoder failed: {e}") from e
    if not packets:
        return np.empty(0, EVENT_DTYPE), hw
    # aedat's dtype names the polarity field 'p' with title 'on': repack into a clean dtype.
    raw = np.concatenate([pk.view(np.dtype([("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("p", "?")]))
                          for pk in packets])
    events = as_events(raw["t"].astype(np.int64), raw["x"], raw["y"], raw["p"])
    _check_coordinates(path, events, hw)
    return events, hw


def read_nmnist_bin(path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an N-MNIST (ATIS, 40 bits per event) ``.bin`` file with tonic's reader.

    Returns:
        ``(events, (34, 34))``; timestamp overflow markers are already unrolled by tonic.
    """
    from tonic.io import read_mnist_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no event file at {path}")
    _check_readable(path)
    size = path.stat().st_size
    if size % 5:
        raise CorruptEventFileError(
            path, f"{size} bytes is not a whole number of 5-byte ATIS events (truncated?)"
        )
    if size == 0:
        return np.empty(0, EVENT_DTYPE), NMNIST_SENSOR_HW
    dtype = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
    try:
        raw = read_mnist_file(str(path), dtype=dtype)
    except PermissionError as e:  # its mode changed since the check above
        raise UnreadableEventFileError(path) from e
    events = as_events(raw["t"], raw["x"], raw["y"], raw["p"])
    _check_coordinates(path, events, NMNIST_SENSOR_HW)
    return events, NMNIST_SENSOR_HW


def read_gesture_npy(path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode a DVS128 Gesture sample as tonic releases it: ``[N, 4]`` = ``x, y, p, t[ms]``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no event file at {path}")
    _check_readable(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except PermissionError as e:  # its mode changed since the check above
        raise UnreadableEventFileError(path) from e
    except Exception as e:  # truncated .npy: ValueError / EOFError / OSError
        raise CorruptEventFileError(path, f"numpy cannot load it ({e})") from e
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise CorruptEventFileError(
            path, f"expected an [N, 4] array of x, y, p, t (tonic's DVSGesture release), "
            f"found shape {list(arr.shape)}"
        )
    t_us = np.round(arr[:, 3].astype(np.float64) * 1000).astype(np.int64)  # ms -> us (tonic)
    events = as_events(t_us, arr[:, 0], arr[:, 1], arr[:, 2])
    _check_coordinates(path, events, GESTURE_SENSOR_HW)
    return events, GESTURE_SENSOR_HW


EVENT_FORMATS = {".aedat4": read_aedat4, ".bin": read_nmnist_bin, ".npy": read_gesture_npy}


def read_events(path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode any supported event file, chosen by extension (see the module docstring)."""
    path = Path(path)
    reader = EVENT_FORMATS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(
            f"cannot read {path}: unknown event file extension {path.suffix!r}. Supported: "
            f"{', '.join(EVENT_FORMATS)} (AEDAT 4.0, N-MNIST ATIS .bin, DVS128 Gesture .npy)."
        )
    return reader(path)
