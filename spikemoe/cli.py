"""Command line: ``spikemoe models | data ... | train ... | evaluate ... | profile ... |
report ... | backends ... | convert ...``.

Each command family lives beside the code it drives and adds its own sub-parser here;
this file only assembles them and turns user errors into one readable paragraph.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from .analysis.commands import add_analysis_parsers
from .data.commands import add_data_parser
from .engine.commands import add_engine_parsers
from .kernels.commands import add_backends_parser
from .models import create_model, list_models
from .models.convert_command import add_convert_parser
from .neurons import BackendUnavailableError


def _model_rows(pattern: str) -> list[dict]:
    rows = []
    for name in list_models(pattern):
        with torch.device("meta"):  # shapes and counts only: no memory, no init time
            model = create_model(name)
        rows.append({
            "name": name,
            "params": sum(p.numel() for p in model.parameters()),
            "input_shape": list(model.input_shape),
            "num_classes": model.num_classes,
        })
    return rows


def cmd_models(args: argparse.Namespace) -> int:
    rows = _model_rows(args.pattern)
    if not rows:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'model':34s} {'params':>14s}  input [T, C, H, W]  classes")
    for r in rows:
        shape = "[" + ", ".join(map(str, r["input_shape"])) + "]"
        print(f"{r['name']:34s} {r['params']:>14,d}  {shape:18s}  {r['num_classes']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikemoe",
        description="Spiking transformers with mixtures of spiking experts (SEMM).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("models", help="list registered models with parameter counts and input shapes")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'spikformer*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)
    add_engine_parsers(sub)
    add_analysis_parsers(sub)
    add_data_parser(sub)
    add_backends_parser(sub)
    add_convert_parser(sub)
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
