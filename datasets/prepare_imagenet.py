"""Verify an ImageNet copy: folders, class names, image counts (see datasets/imagenet.md).

    python datasets/prepare_imagenet.py --root DIR
"""
from spikemoe.data.prepare import main

if __name__ == "__main__":
    raise SystemExit(main("imagenet"))
