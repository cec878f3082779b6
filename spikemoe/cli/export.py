"""``spikemoe export``: trained models out, as ONNX or NIR.

    spikemoe export RUN_DIR|CHECKPOINT --format onnx|nir --out FILE [--set KEY=VALUE ...]
                    [--batch B] [--exporter auto|dynamo|torchscript] [--opset N] [--atol A]
    spikemoe export --model NAME --format onnx|nir --out FILE      (a model at initialisation)

ONNX (``engine.export_onnx``): the logits of the model in evaluation mode, time loop unrolled,
checked against onnxruntime on two inputs; the measured difference is printed. NIR
(``engine.export_nir``): the part of a spiking model NIR can express, in FILE, and the
per-layer table (exported / expressible / refused, with the reason) printed and written to
FILE with suffix ``.json``. Parse, call the library, print: nothing else lives here.
"""
from __future__ import annotations

import argparse
import sys

from ..engine.export_nir import export_nir
from ..engine.export_onnx import ExportDependencyError, export_onnx, load_export_model
from .convert import parse_overrides

__all__ = ["add_export_parser", "cmd_export"]


def cmd_export(args: argparse.Namespace) -> int:
    """Run ``spikemoe export``; returns the exit status."""
    try:
        model, label = load_export_model(args.source, args.model, parse_overrides(args.set))
        if args.format == "onnx":
            result = export_onnx(model, args.out, batch=args.batch, exporter=args.exporter,
                                 opset=args.opset, atol=args.atol)
            print(f"exported {label}")
            print(f"wrote {result.summary()}")
            for note in result.notes:
                print(f"  note: {note}")
            return 0
        result = export_nir(model, args.out)
        print(f"exported {label}: the part NIR can express")
        print(result.format_table())
        check = result.stem_check
        if "differing" in check:
            print(f"rebuilt stem vs the model's stem on one input: {int(check['differing'])} of "
                  f"{int(check['outputs'])} outputs differ")
        print(f"wrote {result.path} ({result.size_bytes / 2**20:.2f} MiB, "
              f"{len(result.nodes)} NIR nodes) and the table {result.report}")
        return 0
    except ExportDependencyError as e:
        print(f"spikemoe export: error: {e}", file=sys.stderr)
        return 2


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``export`` on the ``spikemoe`` sub-parsers (``cli.build_parser``)."""
    p = subparsers.add_parser(
        "export", help="export a trained model to ONNX or NIR",
        description="Export a run's model (or a registered model at initialisation) to ONNX, "
                    "checked against onnxruntime, or its NIR-expressible part to NIR with a "
                    "per-layer table of what NIR cannot express. Needs the 'export' extra: "
                    "pip install 'spikemoe[export]'.")
    p.add_argument("source", nargs="?", default=None, metavar="RUN_DIR|CHECKPOINT",
                   help="a run directory (its best.pt, else last.pt) or a .pt checkpoint")
    p.add_argument("--model", default=None, metavar="NAME",
                   help="instead of a run: a registered model at initialisation "
                        "(`spikemoe models` lists them)")
    p.add_argument("--format", required=True, choices=("onnx", "nir"))
    p.add_argument("--out", required=True, metavar="FILE",
                   help="FILE.onnx, or FILE.nir (the table goes to FILE.json)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model overrides, e.g. --set T=4")
    p.add_argument("--batch", type=int, default=None,
                   help="ONNX: the batch size fixed in the graph (default: the model's "
                        "measurement batch, else 1)")
    p.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "torchscript"),
                   help="ONNX: torch.export-based (dynamo), the TorchScript tracer, or dynamo "
                        "then TorchScript (auto)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="ONNX: the largest onnxruntime-vs-torch logit difference accepted")
    p.set_defaults(func=cmd_export)
    return p
