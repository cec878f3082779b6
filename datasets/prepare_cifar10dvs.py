"""Verify cifar10-dvs and pre-build its frame cache (see datasets/cifar10-dvs.md).

    python datasets/prepare_cifar10dvs.py --root DIR --T 16 [--size S]
        [--integration count|time] [--download] [--deep] [--skip-corrupt] [--cache-dir DIR]
"""
from spikemoe.data.prepare import main

if __name__ == "__main__":
    raise SystemExit(main("cifar10-dvs"))
