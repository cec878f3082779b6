"""``spikemoe data inspect FILE``: what is in one event file.

Reports the event count, sensor size (as the file declares it, or the format's fixed size),
time span, polarity balance and coordinate ranges, decoded by ``events.read_events``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .events import read_events

__all__ = ["format_summary", "summarize_event_file"]

_FORMAT_NAMES = {".aedat4": "AEDAT 4.0", ".bin": "N-MNIST ATIS .bin",
                 ".npy": "DVS128 Gesture .npy (tonic)"}


def summarize_event_file(path: str | Path) -> dict:
    """Decode ``path`` and summarise it.

    Returns:
        ``{"file", "format", "events", "width", "height", "t_first_us", "t_last_us",
        "duration_s", "on", "off", "on_fraction", "x_range", "y_range"}``; the time and range
        entries are None for an empty recording.
    """
    path = Path(path)
    events, (h, w) = read_events(path)
    n = len(events)
    on = int(np.count_nonzero(events["p"]))
    t = events["t"]
    out = {"file": str(path), "format": _FORMAT_NAMES[path.suffix.lower()], "events": n,
           "width": w, "height": h, "t_first_us": None, "t_last_us": None, "duration_s": None,
           "on": on, "off": n - on, "on_fraction": on / n if n else None,
           "x_range": None, "y_range": None}
    if n:
        out.update(t_first_us=int(t.min()), t_last_us=int(t.max()),
                   duration_s=(int(t.max()) - int(t.min())) / 1e6,
                   x_range=[int(events["x"].min()), int(events["x"].max())],
                   y_range=[int(events["y"].min()), int(events["y"].max())])
    return out


def format_summary(s: dict) -> str:
    """The summary as aligned text lines (plain integers, so they grep like the JSON)."""
    lines = [f"file        {s['file']}", f"format      {s['format']}", f"events      {s['events']}",
             f"sensor      {s['width']} x {s['height']} (W x H)"]
    if s["events"]:
        span = f"t = {s['t_first_us']} .. {s['t_last_us']} us"
        lines += [f"duration    {s['duration_s']:.6f} s ({span})",
                  f"polarity    {s['on']} ON / {s['off']} OFF ({100 * s['on_fraction']:.1f}% ON)",
                  f"x range     [{s['x_range'][0]}, {s['x_range'][1]}]",
                  f"y range     [{s['y_range'][0]}, {s['y_range'][1]}]"]
    else:
        lines.append("(empty recording: no events)")
    return "\n".join(lines)
