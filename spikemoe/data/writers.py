"""Write events in the real on-disk formats the readers take (``events.py``).

For tests, benchmarks and fixtures: files that the real decoders (``aedat``, tonic) read, so
a loader can be exercised without the datasets. Each writer round-trips exactly through its
reader (tested), given coordinates inside the sensor and, for AEDAT, events in time order.

    write_aedat4        AEDAT 4.0: magic line, IOHeader flatbuffer (an XML description with
                        the event stream's sizeX / sizeY), uncompressed EVTS packets of 16-byte
                        events (t i64, x i16, y i16, on u8, 3 pad), as iniVation's AEDAT
                        4.0 format documentation lays them out. One event stream, id 0.
    write_nmnist_bin    ATIS 40-bit records: x, y, p << 7 | t[22:16], t[15:8], t[7:0] (t < 2^23 us).
    write_gesture_npy   tonic's DVS128 Gesture sample: float64 ``[N, 4]`` of x, y, p, t in ms.
    write_aedat2_cifar10dvs  jAER AEDAT 2.0 as CIFAR10-DVS's original release: ``#`` header lines,
                        then big-endian (u32 address, u32 timestamp) pairs; the address is the
                        DVS128's, ``(127 - x) << 8 | (127 - y) << 1 | (1 - p)`` for an event
                        given in SpikingJelly's orientation (``events_original``).
    write_aedat3_dvs128 AEDAT 3.1 as DVS128 Gesture's original release: header lines up to
                        ``#!END-HEADER``, then packets (28-byte header, 8-byte polarity events
                        ``x << 17 | y << 2 | p << 1 | valid``, timestamp bits 0-30; bit 31 and up
                        in the packet's overflow field), optionally after a special-event packet
                        the readers must skip.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

__all__ = ["write_aedat2_cifar10dvs", "write_aedat3_dvs128", "write_aedat4", "write_gesture_npy",
           "write_nmnist_bin"]

_EVT = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("pad", "V3")])


def _ioheader(width: int, height: int) -> bytes:
    xml = ('<dv version="2.0"><node name="outInfo" path="/mainloop/output_file/outInfo/">'
           '<node name="0" path="/mainloop/output_file/outInfo/0/">'
           '<attr key="compression" type="string">NONE</attr>'
           '<attr key="typeIdentifier" type="string">EVTS</attr>'
           '<node name="info" path="/mainloop/output_file/outInfo/0/info/">'
           f'<attr key="sizeX" type="int">{width}</attr>'
           f'<attr key="sizeY" type="int">{height}</attr>'
           '</node></node></node></dv>').encode()
    body = struct.pack("<I4s5H2xiI", 20, b"IOHE", 10, 8, 0, 0, 4, 12, 4)  # flatbuffer tables
    s = struct.pack("<I", len(xml)) + xml + b"\0"
    s += b"\0" * (-len(s) % 4)
    return struct.pack("<I", len(body + s)) + body + s


def _packet(t, x, y, p) -> bytes:
    rec = np.zeros(len(t), _EVT)
    rec["t"], rec["x"], rec["y"], rec["on"] = t, x, y, np.asarray(p) > 0
    body = struct.pack("<I4s3H2xiII", 16, b"EVTS", 6, 8, 4, 8, 4, len(rec)) + rec.tobytes()
    return struct.pack("<I", len(body)) + body


def write_aedat4(path: str | Path, events: np.ndarray, width: int = 128, height: int = 128,
                 packet_size: int = 4096) -> Path:
    """Write ``events`` (fields t, x, y, p) as an AEDAT 4.0 file of a ``width x height`` sensor.

    An empty ``events`` gives a valid recording with no event packets.
    """
    path = Path(path)
    with open(path, "wb") as f:
        f.write(b"#!AER-DAT4.0\r\n")
        f.write(_ioheader(width, height))
        for s in range(0, len(events), packet_size):
            e = events[s:s + packet_size]
            pk = _packet(e["t"], e["x"], e["y"], e["p"])
            f.write(struct.pack("<iI", 0, len(pk)))  # stream id 0, packet length
            f.write(pk)
    return path


def write_nmnist_bin(path: str | Path, events: np.ndarray) -> Path:
    """Write ``events`` (x, y < 240, t < 2^23 us) as N-MNIST 40-bit ATIS records."""
    t = np.asarray(events["t"], np.int64)
    if len(t) and (t.min() < 0 or t.max() >= 2**23):
        raise ValueError(f"N-MNIST timestamps must lie in [0, 2^23) us, got [{t.min()}, {t.max()}]")
    rec = np.zeros((len(t), 5), np.uint8)
    rec[:, 0], rec[:, 1] = events["x"], events["y"]
    on = (np.asarray(events["p"]) > 0).astype(np.uint8)
    rec[:, 2] = (on << 7) | ((t >> 16) & 0x7F).astype(np.uint8)  # polarity bit + t[22:16]
    rec[:, 3], rec[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    Path(path).write_bytes(rec.tobytes())
    return Path(path)


def write_gesture_npy(path: str | Path, events: np.ndarray) -> Path:
    """Write ``events`` as tonic's DVS128 Gesture ``.npy`` (t must be whole milliseconds)."""
    t = np.asarray(events["t"], np.int64)
    if np.any(t % 1000):
        raise ValueError("DVS128 Gesture (tonic's release) stores milliseconds: t must be "
                         "multiples of 1000 us")
    on = np.asarray(events["p"]) > 0
    arr = np.stack([events["x"], events["y"], on, t // 1000], 1).astype(np.float64)  # [N, 4]
    np.save(path, arr)
    return Path(path)


_AEDAT2_HEADER = (b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
                  b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated "
                  b"for each event\r\n# Timestamps tick is 1 us\r\n")


def write_aedat2_cifar10dvs(path: str | Path, events: np.ndarray,
                            header: bytes = _AEDAT2_HEADER) -> Path:
    """Write ``events`` (SpikingJelly's orientation, 128 x 128) as a CIFAR10-DVS AEDAT 2.0 file.

    ``header``: the ``#`` lines to put first (a real jAER header, or a short one).
    """
    x, y = np.asarray(events["x"], np.uint32), np.asarray(events["y"], np.uint32)
    if len(x) and (max(x.max(), y.max()) > 127):
        raise ValueError("CIFAR10-DVS is a 128 x 128 sensor: x and y must lie in [0, 127]")
    off = (np.asarray(events["p"]) == 0).astype(np.uint32)
    pairs = np.empty((len(x), 2), ">u4")  # [N, (address, timestamp)]
    pairs[:, 0] = ((127 - x) << 8) | ((127 - y) << 1) | off
    pairs[:, 1] = np.asarray(events["t"], np.uint32)
    Path(path).write_bytes(header + pairs.tobytes())
    return Path(path)


def write_aedat3_dvs128(path: str | Path, events: np.ndarray, packet_size: int = 64,
                        special_packet: bool = True) -> Path:
    """Write ``events`` (time-ordered, 128 x 128) as a DVS128 Gesture AEDAT 3.1 recording."""
    t = np.asarray(events["t"], np.int64)
    if len(t) and (np.any(np.diff(t) < 0) or t.min() < 0):
        raise ValueError("AEDAT 3.1 packets need non-negative, time-ordered timestamps")
    out = [b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n"
           b"#Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n#!END-HEADER\r\n"]
    if special_packet:  # type 0: a timestamp-reset special event, 8 bytes
        out.append(struct.pack("<HHIIIIII", 0, 1, 8, 4, 0, 1, 1, 1) + struct.pack("<II", 1, 0))
    overflow = t >> 31
    start = 0
    while start < len(t):  # a packet holds one overflow value and at most packet_size events
        stop = min(start + packet_size, int(np.searchsorted(overflow, overflow[start], "right")))
        n = stop - start
        rec = np.empty((n, 2), "<u4")
        rec[:, 0] = ((np.asarray(events["x"][start:stop], np.uint32) << 17)
                     | (np.asarray(events["y"][start:stop], np.uint32) << 2)
                     | ((np.asarray(events["p"][start:stop]) > 0).astype(np.uint32) << 1) | 1)
        rec[:, 1] = t[start:stop] & 0x7FFFFFFF
        out.append(struct.pack("<HHIIIIII", 1, 1, 8, 4, int(overflow[start]), n, n, n))
        out.append(rec.tobytes())
        start = stop
    Path(path).write_bytes(b"".join(out))
    return Path(path)
