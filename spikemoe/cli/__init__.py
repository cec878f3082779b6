"""Command line: ``spikemoe models | data ... | train ... | evaluate ... | profile ... |
report ... | backends ... | convert ...``.

The command-line front ends, one module per command family (``train``: train and evaluate;
``profile``: profile and report; ``data``, ``backends``, ``convert``, ``models``). Each parses,
calls the library and prints; nothing in the library imports this package (the import
contracts in ``pyproject.toml`` hold it). This module assembles the sub-parsers and turns user
errors into one readable paragraph.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..neurons import BackendUnavailableError
from .backends import add_backends_parser
from .convert import add_convert_parser
from .data import add_data_parser
from .energy import add_energy_parser
from .export import add_export_parser
from .models import add_models_parser
from .profile import add_analysis_parsers
from .train import add_engine_parsers

__all__ = ["build_parser", "main"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spikemoe")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikemoe",
        description="Spiking transformers with mixtures of spiking experts (SEMM).",
    )
    parser.add_argument("--version", action="version", version=f"spikemoe {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_models_parser(sub)
    add_engine_parsers(sub)
    add_analysis_parsers(sub)
    add_energy_parser(sub)
    add_data_parser(sub)
    add_backends_parser(sub)
    add_convert_parser(sub)
    add_export_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
            NotADirectoryError, BackendUnavailableError) as e:
        # User errors carry their own what/why/what-to-do message: no traceback wall
        # (SPIKEMOE_TRACEBACK=1 shows it).
        if os.environ.get("SPIKEMOE_TRACEBACK"):
            raise
        print(f"spikemoe {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
