"""The ``spikemoe profile`` and ``spikemoe report`` commands.

    spikemoe profile (CHECKPOINT | --model NAME) [--data NAME] [--root DIR] [--samples N]
                     [--convention literal|events|strict] [--table 45nm-fp32]
                     [--first-layer auto|once|T-times] [--ssa-order auto|q(kv)|(qk)v]
                     --out DIR [--json] [--allow-shape-mismatch]
    spikemoe report RUN_DIR ... [--out FILE.md] [--csv FILE.csv]

``profile`` writes ``profile.json`` (every figure, per layer and in total, every
convention: ``analysis.energy``), ``profile.md`` (the tables, in ``--convention``) and three PNG plots into
``--out``. A CHECKPOINT (a .pt file or a run directory) brings its model, weights and
dataset; ``--model NAME`` profiles a freshly initialised registered model, on
``digits-dvs`` at the model's T and size when it takes 2-channel event frames, on
``stdlib-bytes`` windows for a byte-level language model, else on ``--data``.

Before anything is computed, ``--out`` (and ``report --out/--csv``) is checked: a folder that
exists or can be created, and written to (a probe file). Data whose samples differ from the
model's ``input_shape`` is refused unless ``--allow-shape-mismatch`` (then recorded as an
``input_shape_mismatch`` warning). A profile's ``warnings`` (a network that fires no spike,
no spike past the stem, silent layers: ``health.py``) are printed first, written at the top
of ``profile.md`` and kept in ``profile.json``; ``report`` shows them in its table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from ..analysis.energy import ALIASES, CONVENTIONS, COST_TABLES, FIRST_LAYER, convention_name
from ..analysis.profile_files import profile_to_dir
from ..analysis.report import gather_run, runs_csv, runs_markdown
from ..engine.profile_run import profile_checkpoint, profile_registered
from ..files import write_text_atomic
from ..layers.kernels import SSA_ORDERS, ssa_product_order
from ..models import create_model

__all__ = ["add_analysis_parsers", "check_output_dir", "check_output_file"]


def _probe_write(folder: Path, target: Path, flag: str) -> None:
    """Create and delete a file in ``folder``: the only sure test that it can be written."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".spikemoe-write-test-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ValueError(
            f"{flag} {target}: cannot write in {folder} ({e.strerror or e}). Nothing was "
            f"computed. Give a {flag} location you can write to (e.g. a folder under your home "
            "or the current directory), or fix the folder's permissions.") from None


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(out: str | Path, flag: str = "--out") -> Path:
    """Check, before any computation, that ``out`` is or can become a writable folder.

    ``out`` may exist (a folder) or not (created later, with its parents); a file in its place
    or in the place of one of its parents, or a folder that cannot be written, raises
    ValueError naming the path and what to do. Nothing is created."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"{flag} {out} is an existing file, not a folder: profile writes profile.json, "
            f"profile.md and three PNG plots into a folder. Nothing was computed. Give a folder "
            f"(new or existing), e.g. {flag} {out.with_name(out.stem + '_profile')}.")
    base = _existing_ancestor(out)
    if not base.is_dir():
        raise ValueError(
            f"{flag} {out}: {base} is a file, so the folder {out} cannot be created under it. "
            f"Nothing was computed. Give a {flag} path whose parents are folders.")
    _probe_write(base, out, flag)
    return out


def check_output_file(path: str | Path, flag: str) -> Path:
    """Check, before any work, that a file can be written at ``path`` (its folder exists and
    is writable; ``path`` is not a folder). Raises ValueError naming the path."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name, e.g. "
                         f"{flag} {path / ('runs' + ('.csv' if 'csv' in flag else '.md'))}.")
    if not path.parent.is_dir():
        raise ValueError(f"{flag} {path}: the folder {path.parent} does not exist; create it "
                         f"(mkdir -p {path.parent}) or give another path.")
    _probe_write(path.parent, path, flag)
    return path


def cmd_profile(args: argparse.Namespace) -> int:
    if (args.checkpoint is None) == (args.model is None):
        raise ValueError("give either a CHECKPOINT (a .pt file or run directory) or --model NAME "
                         "(see `spikemoe models`), not both and not neither.")
    if args.samples < 1:
        raise ValueError(f"--samples must be at least 1, got {args.samples}")
    check_output_dir(args.out)  # before the computation, not after it
    args.convention = convention_name(args.convention)
    first_layer = "once" if args.first_layer_once else args.first_layer
    common = dict(data=args.data, root=args.root, split=args.split, samples=args.samples,
                  table=args.table, first_layer_once=first_layer,
                  progress=not args.json, allow_shape_mismatch=args.allow_shape_mismatch)
    with ssa_product_order(args.ssa_order):  # the profile records the order it counted in
        if args.checkpoint is not None:
            result = profile_checkpoint(args.checkpoint, **common)
        else:
            result = profile_registered(args.model, **common)
    paths = profile_to_dir(result, args.out, args.convention)
    e = result.energy[args.convention]
    warnings = [w.to_dict() for w in result.warnings]
    brief = {"out": str(args.out), "model": result.model, "data": result.data,
             "samples": result.samples, "convention": args.convention,
             "energy_mJ": e.per_inference.to_json(), "macs": e.macs, "sops": e.sops,
             "mean_firing_rate": result.firing.mean_rate,
             "warnings": warnings, "files": [str(p) for p in paths]}
    # warnings first: before any figure a reader could take at face value
    for w in result.warnings:
        print(f"WARNING ({w.code}): {w.message}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(brief))
    else:
        kind = (f"{len(result.audit)} layer(s) with non-binary input" if result.spiking
                else "not a spiking model: every multiply-add is a MAC")
        print(f"{result.model} on {result.data} ({result.samples} samples): "
              f"{e.per_inference.mean:.4g} mJ per inference ({args.convention}, "
              f"std {e.per_inference.std:.2g}), {e.macs:,.0f} MACs, {e.sops:,.0f} SOPs, "
              f"mean firing rate {result.firing.mean_rate:.4f}; {kind}. Wrote {args.out}/")
    return 0


def _count_params(name: str, model_cfg: dict) -> int | None:
    """Parameters of the run's model, built on the meta device (no memory, no init)."""
    kwargs = {k: v for k, v in model_cfg.items() if k != "name"}
    try:
        with torch.device("meta"):
            return sum(p.numel() for p in create_model(name, **kwargs).parameters())
    except ValueError:  # a model this version no longer has: leave the cell empty
        return None


def cmd_report(args: argparse.Namespace) -> int:

    if args.out:
        check_output_file(args.out, "--out")
    if args.csv:
        check_output_file(args.csv, "--csv")
    rows = [gather_run(r, count_params=_count_params) for r in args.runs]
    table = runs_markdown(rows)
    if args.out:
        write_text_atomic(Path(args.out), table)
    if args.csv:
        write_text_atomic(Path(args.csv), runs_csv(rows))
    sys.stdout.write(table)
    return 0


def add_analysis_parsers(subparsers) -> None:
    """Add ``profile`` and ``report`` to the CLI's sub-parsers."""
    p = subparsers.add_parser(
        "profile", help="firing rates, router statistics and energy per inference of a model",
        description="Measure a checkpoint (its model, weights and dataset) or a registered "
                    "model at initialisation: firing rate per layer and time step, router "
                    "spiking rate per expert, operations and energy per layer under every "
                    "convention (literal, events, strict), and the list of layers whose input is not binary. Writes "
                    "profile.json, profile.md and 3 PNG plots into --out. A network that "
                    "fires no spike (no spike past the stem, silent layers) is reported first, "
                    "as WARNING lines, and in profile.json's \"warnings\".")
    p.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT",
                   help="a .pt file or a run directory (its best.pt, else last.pt)")
    p.add_argument("--model", metavar="NAME", help="a registered model instead of a checkpoint")
    p.add_argument("--data", metavar="NAME", help="dataset (default: the run's; for --model: "
                   "digits-dvs when the model takes 2-channel event frames)")
    p.add_argument("--root", metavar="DIR", help="the dataset's folder")
    p.add_argument("--split", default="test", choices=("test", "train"))
    p.add_argument("--samples", type=int, default=64, metavar="N",
                   help="number of test samples (default 64); the energy spread is over the first 16, each counted "
                        "as if run alone, or over the model's own measurement batches (SDT/STT: 1, V-MoE: "
                        "one routing group)")
    p.add_argument("--convention", default="events", choices=(*CONVENTIONS, *ALIASES),
                   help="which convention the table and summary show (all three are in "
                        "profile.json): literal (the papers' formula, fr = fraction of nonzero "
                        "inputs), events (value-weighted spike counts; alias: paper), strict "
                        "(non-binary inputs as MACs)")
    p.add_argument("--table", default="45nm-fp32", choices=sorted(COST_TABLES),
                   help="energy per operation (default: Horowitz 2014, 45 nm fp32)")
    p.add_argument("--first-layer", default="auto", choices=FIRST_LAYER,
                   help="how often the first layer's MACs are charged: auto (default: once for "
                        "a static image repeated over T, T times for event frames), once, "
                        "T-times")
    p.add_argument("--first-layer-once", action="store_true", dest="first_layer_once",
                   help="the same as --first-layer once")
    p.add_argument("--ssa-order", default="auto", choices=SSA_ORDERS,
                   help="SSA's product order while counting: auto (the cheaper), q(kv) "
                        "(Spikformer's ImageNet code), (qk)v (its CIFAR code)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the outputs")
    p.add_argument("--json", action="store_true", help="print a JSON summary line")
    p.add_argument("--allow-shape-mismatch", action="store_true", dest="allow_shape_mismatch",
                   help="profile even when the data's samples differ in size or T from the "
                        "model's input_shape (refused otherwise); recorded as a warning")
    p.set_defaults(func=cmd_profile)

    p = subparsers.add_parser(
        "report", help="gather run directories into one results table (markdown / CSV)",
        description="One row per run: model, dataset, T, parameters, best and final top-1, "
                    "final perplexity (language models), "
                    "SOPs and MACs (events convention), energy per inference under each "
                    "convention (literal, events, strict) and mean firing rate (from the run's profile/), and a warnings "
                    "column: a profile of a network that does not fire, a run that did not "
                    "finish (figures from metrics.jsonl), a torn metrics.jsonl.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", metavar="FILE.md", help="also write the markdown table here")
    p.add_argument("--csv", metavar="FILE.csv", help="also write a CSV table here")
    p.set_defaults(func=cmd_report)
