"""The ``spikemoe energy`` command: energy per inference from published firing rates.

    spikemoe energy MODEL --rates RATES.json [--rule spikingformer|spikformer|literal]
                    [--ssa-order auto|q(kv)|(qk)v] [--table 45nm-fp32] [--first-layer-once]
                    [--json]
    spikemoe energy MODEL --template

No forward pass over data: the model is built on the meta device and run once on an empty
input of its declared shape, which gives every layer's dense operations
(``analysis.rate_energy``); the rates file gives each layer's input firing rate. A rates
file holding only a published SOP total (``{"sops": 6.82e9}``) is priced by the
``spikformer`` rule. ``--template`` prints a rates file with every layer named.
"""
from __future__ import annotations

import argparse
import json

import torch

from ..analysis.energy import COST_TABLES
from ..analysis.rate_energy import (
    RULES,
    energy_from_rates,
    load_rates,
    operation_table,
    rates_template,
    spikformer_energy_mj,
)
from ..contract import model_facts
from ..layers.kernels import SSA_ORDERS
from ..models import create_model

__all__ = ["add_energy_parser"]


def _table(name: str):
    """The model's operation table, built on the meta device (no memory, no arithmetic)."""
    with torch.device("meta"):
        try:
            model = create_model(name, backend="torch")  # the reference LIF runs on meta
        except ValueError as e:
            if "backend" not in str(e):
                raise
            model = create_model(name)
        facts = model_facts(model)
        if facts.input_shape is None:
            raise ValueError(f"model {name!r} declares no input_shape, so its layer shapes "
                             "cannot be known without data; give a registered spiking model.")
        shape = facts.input_shape  # one sample: [T, C, H, W] frames, or [N] ids
        x = torch.empty(shape[0], 1, *shape[1:]) if len(shape) == 4 else torch.empty(1, *shape)
        return operation_table(model.eval(), x, facts.time_steps)


def cmd_energy(args: argparse.Namespace) -> int:
    if args.template:
        print(json.dumps(rates_template(_table(args.model)), indent=1))
        return 0
    if args.rates is None:
        raise ValueError("give --rates RATES.json (per-layer input firing rates), or "
                         "--template to print one to fill in.")
    rates = load_rates(args.rates)
    if "sops" in rates and "layers" not in rates:
        if args.rule != "spikformer":
            raise ValueError(f"{args.rates} holds only a SOP total, which only the spikformer "
                             f"rule prices (got --rule {args.rule}); pass --rule spikformer, "
                             "or give per-layer rates.")
        mj = spikformer_energy_mj(float(rates["sops"]), args.table)
        out = {"model": args.model, "rule": "spikformer", "sops": float(rates["sops"]),
               "mJ": mj}
        print(json.dumps(out) if args.json else
              f"{args.model}: {mj:.4f} mJ per inference (spikformer rule, "
              f"{float(rates['sops']):.4g} SOPs)")
        return 0
    result = energy_from_rates(_table(args.model), rates, args.rule, args.table,
                               args.ssa_order, args.first_layer_once)
    if args.json:
        print(json.dumps({"model": args.model, **result.to_json()}))
        return 0
    print("| layer | kind | ops | input rate | MACs | ACs | energy (uJ) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for x in result.layers:
        print(f"| {x.layer} | {x.kind} | {x.ops:,.0f} | {x.rate:.4f} | {x.macs:,.0f} | "
              f"{x.acs:,.0f} | {x.energy_pj * 1e-6:.4g} |")
    print(f"\n{args.model}: {result.mj:.4f} mJ per inference ({args.rule} rule, "
          f"{result.macs / 1e9:.4g} G MACs, {result.acs / 1e9:.4g} G ACs, {args.table})")
    return 0


def add_energy_parser(subparsers) -> None:
    """Add ``energy`` to the CLI's sub-parsers."""
    p = subparsers.add_parser(
        "energy", help="energy per inference of a registered model from published firing rates",
        description="Per-layer SOPs / MACs and energy per inference of MODEL from per-layer "
                    "input firing rates (JSON), under a named counting rule, with no forward "
                    "pass over data (dense operations from the layer shapes).")
    p.add_argument("model", metavar="MODEL", help="a registered model (`spikemoe models`)")
    p.add_argument("--rates", metavar="RATES.json",
                   help="{\"layers\": {name: rate}, \"attention\": {name: {\"q\", \"k\", "
                        "\"v\"}}}, rates as fractions; or {\"sops\": N} (spikformer rule)")
    p.add_argument("--rule", default="spikingformer", choices=RULES,
                   help="spikingformer (its repository's tool: rate-100%% layers as MACs, "
                        "bias additions counted), spikformer (the papers' first-layer "
                        "constant), literal (the papers' formula)")
    p.add_argument("--ssa-order", default="auto", choices=SSA_ORDERS,
                   help="SSA's product order: auto (the cheaper, as computed), q(kv), (qk)v")
    p.add_argument("--table", default="45nm-fp32", choices=sorted(COST_TABLES),
                   help="energy per operation (default: Horowitz 2014, 45 nm fp32)")
    p.add_argument("--first-layer-once", action="store_true", dest="first_layer_once",
                   help="literal rule: charge the first layer once, not T times")
    p.add_argument("--template", action="store_true",
                   help="print a rates file naming every layer, then stop")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.set_defaults(func=cmd_energy)
