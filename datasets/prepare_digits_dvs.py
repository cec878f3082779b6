"""Build the digits-dvs frame cache ahead of time (see datasets/digits-dvs.md).

    python datasets/prepare_digits_dvs.py --T 16 [--size S] [--integration count|time] [--seed 0]
"""
from spikemoe.data.prepare import main

if __name__ == "__main__":
    raise SystemExit(main("digits-dvs"))
