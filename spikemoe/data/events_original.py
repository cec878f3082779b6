"""The original releases' event formats, and the files SpikingJelly writes from them.

The official Spikformer, Spike-driven Transformer and SEMM code read CIFAR10-DVS and DVS128
Gesture through SpikingJelly's dataset classes, so many users hold the original releases, or
the folders SpikingJelly converted them into, rather than tonic's copies. Every reader here
returns ``(events, (H, W))`` like ``events.read_events``: a 1-D ``EVENT_DTYPE`` array in file
order and the sensor size.

Formats:
    AEDAT 2.0 (jAER; CIFAR10-DVS's release, ``cifar10_<class>_<i>.aedat``): header lines that
        start with ``#`` (the first is ``#!AER-DAT2.0``), then one big-endian ``int32`` address
        and one ``int32`` timestamp (us) per event. Decoded by SpikingJelly's own CIFAR10-DVS
        reader (``spikingjelly.datasets.cifar10_dvs._load_origin_data``), so the events, and
        their orientation, are SpikingJelly's: for the DVS128 address ``a``,

            x = 127 - ((a & 0x7F00) >> 8),  y = 127 - ((a & 0xFE) >> 1),  p = 1 - (a & 1).

    AEDAT 3.1 (DVS128 Gesture's release, ``DvsGesture/user<NN>_<lighting>.aedat``): header lines
        up to ``#!END-HEADER``, then packets of a 28-byte little-endian header (event type
        ``u16`` at 0, event size ``u32`` at 4, timestamp overflow ``u32`` at 12, capacity ``u32``
        at 16) and ``capacity x size`` bytes of events. A polarity event (type 1) is a ``u32``
        ``a`` and a ``u32`` timestamp: ``x = (a >> 17) & 0x7FFF``, ``y = (a >> 2) & 0x7FFF``,
        ``p = (a >> 1) & 1``, ``t = ts | overflow << 31``. SpikingJelly's reader
        (``spikingjelly.datasets.utils.load_aedat_v3``) unpacks event by event in Python; this
        one decodes a packet with one ``np.frombuffer`` and gives the same arrays (tested on
        written files, speed in ``benchmarks/bench_data.py``). Like SpikingJelly's it reads
        every slot of a packet's capacity and ignores the validity bit.
    SpikingJelly ``.npz`` events (``events_np/...``): arrays ``t, x, y, p``, loaded with numpy as
        SpikingJelly's ``EventBuilder`` loads them. The file declares no sensor: the dataset's.
    SpikingJelly ``.npz`` frames (``frames_number_<T>_split_by_<number|time>/...``): one array
        ``frames [T, 2, H, W]`` of float event counts, as ``integrate_events_by_fixed_frames_number``
        wrote it.

Errors follow ``events``: ``CorruptEventFileError`` for bytes that cannot be decoded,
``UnreadableEventFileError`` for a file this process may not read.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .events import (
    EVENT_DTYPE,
    CorruptEventFileError,
    UnreadableEventFileError,
    _check_coordinates,
    as_events,
)

__all__ = ["DVS128_HW", "read_aedat2_cifar10dvs", "read_aedat3_dvs128",
           "read_spikingjelly_events", "read_spikingjelly_frames"]

DVS128_HW = (128, 128)
_AEDAT3_PACKET = struct.Struct("<HHIIIIII")  # type, source, size, ts offset, overflow, capacity, number, valid
_POLARITY_EVENT = 1


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"no event file at {path}")
    try:
        return path.read_bytes()
    except PermissionError as e:
        raise UnreadableEventFileError(path) from e


def read_aedat2_cifar10dvs(path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one CIFAR10-DVS recording of the original release (jAER AEDAT 2.0).

    Returns:
        ``(events, (128, 128))`` in SpikingJelly's orientation (module docstring).
    Raises:
        CorruptEventFileError: no ``#!AER-DAT`` header, or the events are not whole 8-byte pairs.
    """
    from spikingjelly.datasets.cifar10_dvs import _load_origin_data

    path = Path(path)
    head = _read_bytes(path)[:64]
    if not head.startswith(b"#!AER-DAT"):
        raise CorruptEventFileError(
            path, f"not a jAER AEDAT 2.0 file: it starts with {head[:16]!r}, expected "
            "b'#!AER-DAT2.0' (CIFAR10-DVS's original release)")
    try:
        raw = _load_origin_data(path)
    except ValueError as e:  # SpikingJelly: "odd number of data elements"
        raise CorruptEventFileError(path, f"the events are not whole (address, timestamp) "
                                    f"pairs of 8 bytes; truncated? ({e})") from e
    events = as_events(raw["t"].astype(np.int64), raw["x"], raw["y"], raw["p"])
    _check_coordinates(path, events, DVS128_HW)
    return events, DVS128_HW


def _aedat3_header_end(path: Path, data: bytes) -> int:
    """The offset of the first packet: just after the ``#!END-HEADER`` line."""
    if not data.startswith(b"#!AER-DAT3"):
        raise CorruptEventFileError(path, f"not an AEDAT 3.x file: it starts with {data[:16]!r}, "
                                    "expected b'#!AER-DAT3.1' (DVS128 Gesture's original release)")
    pos = 0
    while data.startswith(b"#", pos):
        end = data.find(b"\n", pos)
        if end < 0:
            break
        line, pos = data[pos:end + 1], end + 1
        if line.rstrip(b"\r\n") == b"#!END-HEADER":
            return pos
    raise CorruptEventFileError(path, "its header has no #!END-HEADER line (truncated header?)")


def read_aedat3_dvs128(path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode every polarity event of an AEDAT 3.1 DVS128 recording (DVS128 Gesture).

    Returns:
        ``(events, (128, 128))``: the whole recording; a gesture is a time slice of it (its
        ``*_labels.csv`` row).
    Raises:
        CorruptEventFileError: not AEDAT 3.x, no header end, a truncated packet, an event size
            that is not a whole number of 32-bit words.
    """
    path = Path(path)
    data = _read_bytes(path)
    pos = _aedat3_header_end(path, data)
    addr, ts = [], []
    while pos < len(data):
        if pos + _AEDAT3_PACKET.size > len(data):
            raise CorruptEventFileError(path, f"a packet header at byte {pos} is cut short "
                                        f"({len(data) - pos} of 28 bytes; truncated file?)")
        e_type, _, e_size, _, overflow, capacity, _, _ = _AEDAT3_PACKET.unpack_from(data, pos)
        start, pos = pos + _AEDAT3_PACKET.size, pos + _AEDAT3_PACKET.size + capacity * e_size
        if pos > len(data):
            raise CorruptEventFileError(path, f"a packet at byte {start - 28} declares "
                                        f"{capacity} x {e_size} bytes but the file ends "
                                        f"{pos - len(data)} bytes short (truncated file?)")
        if e_type != _POLARITY_EVENT or capacity == 0:
            continue
        if e_size < 8 or e_size % 4:
            raise CorruptEventFileError(path, f"polarity events of {e_size} bytes; expected a "
                                        "multiple of 4 and at least 8 (u32 address, u32 time)")
        words = np.frombuffer(data, "<u4", capacity * e_size // 4, start)
        words = words.reshape(capacity, e_size // 4)  # [events, words per event]
        addr.append(words[:, 0])
        ts.append(words[:, 1].astype(np.int64) | (overflow << 31))
    if not addr:
        return np.empty(0, EVENT_DTYPE), DVS128_HW
    a, t = np.concatenate(addr), np.concatenate(ts)
    events = as_events(t, (a >> 17) & 0x7FFF, (a >> 2) & 0x7FFF, (a >> 1) & 1)
    _check_coordinates(path, events, DVS128_HW)
    return events, DVS128_HW


def _load_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise CorruptEventFileError(
                    path, f"it holds the arrays {sorted(npz.files)}, expected {list(keys)} "
                    "(a file SpikingJelly wrote)")
            return {k: npz[k] for k in keys}
    except PermissionError as e:
        raise UnreadableEventFileError(path) from e
    except CorruptEventFileError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError, OSError: truncated
        raise CorruptEventFileError(path, f"numpy cannot load it ({e})") from e


def read_spikingjelly_events(path: str | Path, sensor_hw: tuple[int, int]
                             ) -> tuple[np.ndarray, tuple[int, int]]:
    """Load a SpikingJelly ``events_np`` sample (``t, x, y, p``) on a ``sensor_hw`` sensor."""
    path = Path(path)
    raw = _load_npz(path, ("t", "x", "y", "p"))
    lengths = {k: len(v) for k, v in raw.items()}
    if len(set(lengths.values())) != 1:
        raise CorruptEventFileError(path, f"its arrays differ in length: {lengths}")
    events = as_events(raw["t"].astype(np.int64), raw["x"], raw["y"], raw["p"])
    _check_coordinates(path, events, tuple(sensor_hw))
    return events, tuple(sensor_hw)


def read_spikingjelly_frames(path: str | Path, T: int, sensor_hw: tuple[int, int]) -> np.ndarray:
    """Load a SpikingJelly frame file: ``[T, 2, H, W]`` int64 event counts.

    Raises:
        CorruptEventFileError: another shape than ``[T, 2, H, W]``, or counts that are not
            non-negative whole numbers.
    """
    path = Path(path)
    frames = _load_npz(path, ("frames",))["frames"]
    want = (T, 2, *sensor_hw)
    if frames.shape != want:
        raise CorruptEventFileError(path, f"its frames have shape {list(frames.shape)}, "
                                    f"expected {list(want)} [T, 2, H, W]")
    counts = frames.astype(np.int64)
    if (counts != frames).any() or (counts < 0).any():
        raise CorruptEventFileError(path, "its frames are not event counts (non-negative whole "
                                    "numbers)")
    return counts
