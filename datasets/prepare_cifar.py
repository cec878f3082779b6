"""Download (with --download) and verify CIFAR-10 or CIFAR-100 (see datasets/cifar.md).

    python datasets/prepare_cifar.py --name cifar10 --root DIR [--download]
"""
import sys

from spikemoe.data.prepare import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    name = "cifar10"
    if "--name" in argv:
        i = argv.index("--name")
        name = argv[i + 1] if i + 1 < len(argv) else ""
        del argv[i:i + 2]
    if name not in ("cifar10", "cifar100"):
        sys.exit(f"--name must be cifar10 or cifar100, got {name!r}")
    raise SystemExit(main(name, argv))
