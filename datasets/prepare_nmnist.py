"""Verify n-mnist and pre-build its frame cache (see datasets/n-mnist.md).

    python datasets/prepare_nmnist.py --root DIR --T 16 [--size S]
        [--integration count|time] [--download] [--deep] [--skip-corrupt] [--cache-dir DIR]
"""
from spikemoe.data.prepare import main

if __name__ == "__main__":
    raise SystemExit(main("n-mnist"))
