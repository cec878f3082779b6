"""The ``spikemoe data`` command family: ``inspect``, ``verify``, ``prepare``.

    spikemoe data inspect FILE [--json]          events, sensor size, duration, polarity of one file
    spikemoe data verify NAME --root DIR [--deep]   what is missing or wrong in a dataset copy
    spikemoe data prepare NAME --root DIR --T 16   verify, then pre-build the frame cache

``spikemoe.cli.build_parser`` calls ``add_data_parser(subparsers)``; every handler returns an exit code
and lets ValueError / FileNotFoundError reach the CLI, which prints them as one line.
"""
from __future__ import annotations

import argparse
import json

from ..data.inspect import format_summary, summarize_event_file
from ..data.prepare import add_prepare_arguments, prepare_dataset
from ..data.registry import list_datasets
from ..data.verify import verify_dataset

__all__ = ["add_data_parser", "cmd_inspect", "cmd_prepare", "cmd_verify"]


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print the summary of one event file (text or JSON)."""
    summary = summarize_event_file(args.file)
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Print the verification report; exit code 0 if the copy is complete, 1 if not."""
    report = verify_dataset(args.name, args.root, deep=args.deep)
    if args.json:
        print(json.dumps({"name": report.name, "root": report.root, "ok": report.ok,
                          "problems": report.problems, "notes": report.notes}, indent=1))
    else:
        print(report.text())
    return 0 if report.ok else 1


def cmd_prepare(args: argparse.Namespace) -> int:
    """Verify, then build the frame cache of both splits."""
    return prepare_dataset(args.name, args)


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``data`` and its sub-commands to an argparse ``subparsers``; returns its parser."""
    data = subparsers.add_parser("data", help="inspect event files, verify and prepare datasets")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    p = sub.add_parser("inspect",
                       help="summarise one event file (.aedat4, N-MNIST .bin, DVS Gesture .npy)")
    p.add_argument("file", help="the event file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("verify", help="check a dataset copy and say what is missing or wrong")
    p.add_argument("name", choices=list_datasets(), help="dataset name")
    p.add_argument("--root", help="the folder the dataset lives in (not needed for digits-dvs)")
    p.add_argument("--deep", action="store_true", help="also decode every event file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("prepare", help="verify a dataset, then pre-build its frame cache")
    add_prepare_arguments(p)
    p.set_defaults(func=cmd_prepare)
    return data
