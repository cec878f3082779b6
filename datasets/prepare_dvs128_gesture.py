"""Verify dvs128-gesture and pre-build its frame cache (see datasets/dvs128-gesture.md).

    python datasets/prepare_dvs128_gesture.py --root DIR --T 16 [--size S]
        [--integration count|time] [--download] [--deep] [--skip-corrupt] [--cache-dir DIR]
"""
from spikemoe.data.prepare import main

if __name__ == "__main__":
    raise SystemExit(main("dvs128-gesture"))
