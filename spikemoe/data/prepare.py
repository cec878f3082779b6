"""Verify a dataset copy and pre-build its frame cache: the body of ``datasets/prepare_*.py``
and of ``spikemoe data prepare``.

    python datasets/prepare_cifar10dvs.py --root DIR --T 16 [--size 64] [--integration time]

Steps: (1) with ``--download``, fetch a missing copy with the spec's ``download`` (tonic /
torchvision; nothing for embedded datasets and ImageNet); (2) verify the copy and stop, listing
every problem, unless ``--allow-incomplete``; (3) for event datasets, build the frames of both
splits into the cache with a tqdm bar (resumable: a rerun builds only what is missing), then
print the cache folder, its size on disk and how long it took.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .registry import create_dataset, dataset_info, list_datasets
from .spec import dataset_spec
from .verify import verify_dataset

__all__ = ["add_prepare_arguments", "main", "prepare_dataset"]


def add_prepare_arguments(p: argparse.ArgumentParser, name: str | None = None) -> None:
    """The options shared by the prepare scripts and ``spikemoe data prepare``."""
    if name is None:
        p.add_argument("name", choices=list_datasets(), help="dataset to prepare")
    p.add_argument("--root", help="folder that holds (or will hold) the data")
    p.add_argument("--T", type=int, default=16, help="frames per sample (default 16)")
    p.add_argument("--size", type=int, default=None, help="output H = W (default: native)")
    p.add_argument("--integration", choices=["count", "time"], default="count",
                   help="equal event counts (default, the recipe) or equal time windows per frame")
    p.add_argument("--cache-dir", default=None,
                   help="frame cache root (default $SPIKEMOE_CACHE or ~/.cache/spikemoe)")
    p.add_argument("--seed", type=int, default=0, help="digits-dvs simulation seed")
    flags = {"--download": "download a missing copy (tonic / torchvision)",
             "--deep": "also decode every event file while verifying",
             "--skip-corrupt": "leave undecodable files out instead of stopping",
             "--allow-incomplete": "build even if verification finds problems",
             "--verify-only": "verify, build nothing"}
    for flag, text in flags.items():
        p.add_argument(flag, action="store_true", help=text)


def prepare_dataset(name: str, args: argparse.Namespace) -> int:
    """Run the three steps of the module docstring; returns an exit code."""
    spec = dataset_spec(name)
    info = spec.info
    if args.download and spec.download is not None:
        spec.download(spec, args.root)
    report = verify_dataset(name, args.root, deep=args.deep)
    print(report.text())
    if not report.ok and not args.allow_incomplete:
        print("stopped: fix the problems above (or pass --allow-incomplete to build what is there)")
        return 1
    if args.verify_only or info.kind in ("images", "text"):  # nothing to cache
        return 0 if report.ok else 1
    start = time.perf_counter()
    cache = None
    for split in ("train", "test"):
        ds = create_dataset(name, split, root=args.root, T=args.T, size=args.size,
                            integration=args.integration, cache_dir=args.cache_dir, seed=args.seed,
                            skip_corrupt=args.skip_corrupt, augment=False)
        cache = ds.cache.dir
        skipped = len(getattr(ds, "skipped_files", []))
        note = f", {skipped} corrupt files skipped" if skipped else ""
        print(f"{split}: {len(ds)} samples{note}")
    size_mb = sum(f.stat().st_size for f in Path(cache).iterdir()) / 2**20
    print(f"frame cache {cache}: {size_mb:.1f} MiB, ready in {time.perf_counter() - start:.1f} s")
    return 0


def main(name: str, argv: list[str] | None = None) -> int:
    """Entry point of ``datasets/prepare_<name>.py``."""
    p = argparse.ArgumentParser(description=f"Verify {name} and pre-build its frame cache "
                                f"(see {dataset_info(name).card}).")
    add_prepare_arguments(p, name)
    args = p.parse_args(argv)
    try:
        return prepare_dataset(name, args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}")
        return 2
