"""``spikemoe convert``: official checkpoints into spikemoe checkpoints.

    spikemoe convert --from spikformer|spike_driven|spikingjelly CKPT --model NAME --out FILE
                     [--set KEY=VALUE ...] [--key state_dict] [--allow-mismatch] [--quiet]

Reads CKPT (``load_official_checkpoint``), builds ``create_model(NAME, **overrides)``,
converts (``convert_state_dict``), prints the report, and writes FILE: a ``.safetensors``
file (weights, with the model name and overrides in its metadata) or, for any other
suffix, a checkpoint ``{"model": state_dict, "config": {"model": {"name": NAME, ...}}}``
that ``spikemoe evaluate FILE --data DATASET`` and ``create_model(NAME, checkpoint=FILE)``
read. Parse, call the library, print: nothing else lives here.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ..models.official_weights import (
    SOURCES,
    convert_state_dict,
    infer_hyperparameters,
    load_official_checkpoint,
)
from ..models.registry import create_model
from ..models.weights_io import save_converted

__all__ = ["add_convert_parser", "cmd_convert", "parse_overrides"]


def parse_overrides(items: list[str]) -> dict:
    """``["T=16", "pools=[true,true,true,true]"]`` -> ``{"T": 16, "pools": [True, ...]}``
    (values read as YAML, as in a config file)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE (e.g. --set T=16 num_classes=10), got "
                             f"{item!r}.")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ValueError(f"--set {item}: the value is not valid YAML ({e.problem}); quote "
                             "strings and write lists as [a, b].") from None
    return out


def cmd_convert(args: argparse.Namespace) -> int:
    """Run ``spikemoe convert``; returns the exit status."""
    state = load_official_checkpoint(args.checkpoint, key=args.key)
    overrides = parse_overrides(args.set)
    implied = infer_hyperparameters(args.source, state)
    model = create_model(args.model, **overrides)
    converted, report = convert_state_dict(args.source, state, model,
                                           allow_mismatch=args.allow_mismatch)
    model.load_state_dict(converted)  # proves the file will load
    info = {"source": args.source, "variant": report.variant,
            "checkpoint": str(Path(args.checkpoint).resolve())}
    out = save_converted(Path(args.out), converted, args.model, overrides, info)
    print(report.format(verbose=not args.quiet))
    print(f"checkpoint sizes: {', '.join(f'{k}={v}' for k, v in implied.items())}")
    size = f"{out.stat().st_size / 2**20:.1f} MiB"
    if out.suffix == ".safetensors":
        call = ", ".join([repr(args.model), f"checkpoint={str(out)!r}",
                          *(f"{k}={v!r}" for k, v in overrides.items())])
        print(f"wrote {out} ({size}). Load it with: create_model({call})")
    else:
        print(f"wrote {out} ({size}). Evaluate it with: spikemoe evaluate {out} --data DATASET")
    if report.differences and args.allow_mismatch:
        print(f"warning: {len(report.differences)} architecture differences (listed above): the "
              "weights initialise the model, they do not reproduce the official network.",
              file=sys.stderr)
    return 0


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``convert`` on the ``spikemoe`` sub-parsers (``cli.build_parser``)."""
    p = subparsers.add_parser(
        "convert", help="convert an official Spikformer / Spike-driven / SpikingJelly checkpoint",
        description="Map an official checkpoint's state dict onto a spikemoe model (q/k/v fused, "
                    "1x1 convs as Linear), print what was mapped, unused and missing, and write a "
                    "spikemoe checkpoint (.pt) or weights file (.safetensors).")
    p.add_argument("--from", dest="source", required=True, choices=SOURCES,
                   help="the code that wrote CKPT: ZK-Zhou/spikformer (imagenet, cifar10, "
                        "cifar10dvs variants detected), BICLab Spike-Driven-Transformer, or "
                        "SpikingJelly 2.0's model.spikformer")
    p.add_argument("checkpoint", metavar="CKPT", help=".pth/.pth.tar/.pt or .safetensors file")
    p.add_argument("--model", required=True, metavar="NAME",
                   help="registered model to convert into, e.g. spikformer_8_512 "
                        "(`spikemoe models` lists them)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="*.safetensors for weights only; any other suffix for a checkpoint "
                        "that `spikemoe evaluate` reads")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model overrides, e.g. --set T=16 attn_scale=0.25 num_classes=10")
    p.add_argument("--key", default=None, help="the checkpoint entry holding the weights "
                   "(default: state_dict, else model; e.g. state_dict_ema)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="convert even when the architectures differ (pooling order, scale, "
                        "depth...) or keys are missing: the weights become an initialisation")
    p.add_argument("--quiet", action="store_true", help="print counts, not every key")
    p.set_defaults(func=cmd_convert)
    return p
