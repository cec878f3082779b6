"""``spikemoe models [PATTERN] [--json]``: the registered models, their parameter counts,
input shapes and classes (built on the meta device: no memory, no initialisation time)."""
from __future__ import annotations

import argparse
import json
import sys

import torch

from ..contract import model_facts
from ..models import create_model, list_models

__all__ = ["add_models_parser", "cmd_models"]


def _model_rows(pattern: str) -> list[dict]:
    rows = []
    for name in list_models(pattern):
        with torch.device("meta"):  # shapes and counts only: no memory, no init time
            model = create_model(name)
        facts = model_facts(model)
        rows.append({
            "name": name,
            "params": sum(p.numel() for p in model.parameters()),
            "input_shape": None if facts.input_shape is None else list(facts.input_shape),
            "num_classes": facts.num_classes,
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
        shape = ("several views" if r["input_shape"] is None
                 else "[" + ", ".join(map(str, r["input_shape"])) + "]")
        print(f"{r['name']:34s} {r['params']:>14,d}  {shape:18s}  {r['num_classes']}")
    return 0


def add_models_parser(subparsers) -> None:
    """Add ``models`` to the CLI's sub-parsers."""
    p = subparsers.add_parser("models",
                              help="list registered models with parameter counts and input shapes")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'spikformer*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)
