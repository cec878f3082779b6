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
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

__all__ = ["write_aedat4", "write_gesture_npy", "write_nmnist_bin"]

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
