"""The ``spikemoe train`` and ``spikemoe evaluate`` commands.

    spikemoe train [CONFIG] [key=value ...]      no CONFIG: the built-in demo (configs/demo.yaml)
    spikemoe train [CONFIG] resume=RUN_DIR       continue a run where it stopped
    spikemoe evaluate CHECKPOINT [--data NAME] [--root DIR] [--split test] [--json]
                      [--allow-shape-mismatch]

The same command runs under ``torchrun --nproc_per_node=N -m spikemoe train ...``.
``spikemoe.cli.build_parser`` calls ``add_engine_parsers(subparsers)``; each handler returns an
exit code and lets ValueError / FileNotFoundError reach the CLI, which prints them as one
paragraph.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .convert import parse_overrides

__all__ = ["add_engine_parsers", "cmd_evaluate", "cmd_train"]


_KEY_NOTES = {("data", "batch_size"): "global, over all processes"}


def _default_words(f) -> str:
    import dataclasses

    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    return "null" if value is None else str(value).replace("True", "true").replace("False", "false")


def _config_keys_help() -> str:
    """Every config key, section by section, with its type, default (the demo) and choices,
    read from the dataclasses themselves (so no key can be missing from ``train --help``)."""
    import dataclasses
    import typing

    from ..engine.config import SECTIONS, type_name

    lines = ["config keys (section.key=value; a key unique across sections may drop its "
             "section, e.g. lr=5e-4); type, default (= the demo):",
             "  model.name, model.<any create_model override>  e.g. model.embed_dim=64 model.T=4"]
    for section, cls in SECTIONS.items():
        if section == "model":  # name + free-form overrides: the line above
            continue
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            words = f"{type_name(hints[f.name])} = {_default_words(f)}"
            if "choices" in f.metadata:
                words += f"  ({'|'.join(f.metadata['choices'])})"
            if (section, f.name) in _KEY_NOTES:
                words += f"  [{_KEY_NOTES[section, f.name]}]"
            lines.append(f"  {section + '.' + f.name:28s} {words}")
    return "\n".join(lines) + "\n"


_TRAIN_EXAMPLES = """\
examples:
  spikemoe train                                         the demo on digits-dvs
  spikemoe train configs/cifar10dvs_spikformer_semm_2_256.yaml data.root=/data
  spikemoe train resume=runs/demo                        continue a stopped run
  spikemoe train configs/digits_vit.yaml lr=1e-3 --print-config   what would run
  torchrun --nproc_per_node=8 -m spikemoe train configs/imagenet_spikformer_semm_8_512.yaml
"""


def cmd_train(args: argparse.Namespace) -> int:
    """Train; prints the summary as JSON on the last line. Exit 3 if the loss became NaN/inf."""
    from ..engine.distributed import cleanup_distributed
    from ..engine.resume import resolve_train_config
    from ..engine.trainer import NonFiniteLossError, Trainer

    items = list(args.items)
    config = items.pop(0) if items and "=" not in items[0] else None
    cfg = resolve_train_config(config, items)
    if args.print_config:  # the config a run would use, as config.yaml would hold it
        import yaml

        from ..engine.config import config_to_dict

        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    try:
        trainer = Trainer(cfg)
        summary = trainer.fit()
    except NonFiniteLossError as e:
        print(f"spikemoe train: {e}", file=sys.stderr)
        return 3
    finally:
        cleanup_distributed()
    if int(os.environ.get("RANK", "0")) == 0:
        if cfg.run.profile_samples > 0 and not summary.get("stopped") \
                and not summary.get("already_finished"):  # its profile/ is there already
            _profile_run(summary["run_dir"], cfg.run.profile_samples, cfg.run.progress)
        print(json.dumps(summary))
    return 0


def _profile_run(run_dir: str, samples: int, progress: bool) -> None:
    """Profile the run's best checkpoint into ``<run>/profile/`` (``spikemoe profile``).
    A failure here is reported, not raised: the trained run is complete either way."""
    from pathlib import Path

    from ..analysis.profile_files import profile_to_dir
    from ..engine.profile_run import profile_checkpoint

    out = Path(run_dir) / "profile"
    try:
        result = profile_checkpoint(run_dir, samples=samples, progress=progress)
        profile_to_dir(result, out)
    except Exception as e:  # the training result must not be lost to a failed profile
        print(f"spikemoe train: profiling the best checkpoint failed ({type(e).__name__}: {e}); "
              f"run `spikemoe profile {run_dir} --out {out}` to retry.", file=sys.stderr)
        return
    for w in result.warnings:  # a dead network: said before its energies
        print(f"spikemoe train: profile warning ({w.code}): {w.message}", file=sys.stderr)
    e = result.energy
    print(f"profile of the best checkpoint ({result.samples} test samples): "
          f"{e['events'].per_inference.mean:.4g} mJ per inference (events), "
          f"{e['literal'].per_inference.mean:.4g} mJ (literal), "
          f"{e['strict'].per_inference.mean:.4g} mJ (strict), mean firing rate "
          f"{result.firing.mean_rate:.4f}; tables and plots in {out}", file=sys.stderr)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint; prints a line (or JSON with --json)."""
    from ..engine.evaluate import evaluate_checkpoint

    r = evaluate_checkpoint(args.checkpoint, data=args.data, root=args.root, split=args.split,
                            batch_size=args.batch_size, use_ema=args.ema, device=args.device,
                            allow_shape_mismatch=args.allow_shape_mismatch,
                            model_overrides=parse_overrides(args.set))
    if "input_shape_mismatch" in r:  # asked for; said first, so no one reads the line alone
        m = r["input_shape_mismatch"]
        print(f"warning: evaluated on inputs of shape {m['data']}, not the model's {m['model']} "
              f"({'; '.join(m['differences'])}; --allow-shape-mismatch): the figures below are "
              "not the model's accuracy on its recipe's input.", file=sys.stderr)
    if args.json:
        print(json.dumps(r))
        return 0
    top5 = f", top-5 {r['top5']:.2f}%" if "top5" in r else ""
    if "perplexity" in r:  # a language model: per-token figures
        top5 += f", perplexity {r['perplexity']:.3f} over {r['tokens']} tokens"
    if "model_overrides" in r:
        top5 += " with " + " ".join(f"{k}={v}" for k, v in r["model_overrides"].items())
    print(f"{r['checkpoint']} (epoch {r['epoch']}, step {r['step']}): {r['model']} on "
          f"{r['data']} {r['split']} ({r['n']} samples): top-1 {r['top1']:.2f}%{top5}, "
          f"loss {r['loss']:.4f}")
    return 0


def add_engine_parsers(subparsers) -> None:
    """Add ``train`` and ``evaluate`` to the CLI's sub-parsers."""
    p = subparsers.add_parser(
        "train", help="train a model from a YAML config (no CONFIG: the digits-dvs demo)",
        description="Train a model. CONFIG is a YAML file (configs/*.yaml); without one the "
                    "built-in demo runs. key=value items override the config.",
        usage="%(prog)s [-h] [CONFIG] [key=value ...]",
        epilog=_config_keys_help() + _TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("items", nargs="*", metavar="CONFIG | key=value",
                   help="a YAML config path first (optional), then key=value overrides")
    p.add_argument("--print-config", action="store_true", dest="print_config",
                   help="print the resolved config (CONFIG + overrides, or a resumed run's) as "
                        "YAML and exit without training")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "evaluate", help="evaluate a checkpoint on its dataset's held-out split",
        description="Rebuild the model and data from the config stored in a checkpoint and "
                    "report loss, top-1 and top-5.")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a .pt file, or a run directory (its best.pt, else last.pt)")
    p.add_argument("--data", default=None, metavar="NAME",
                   help="evaluate on this dataset instead of the run's (same classes)")
    p.add_argument("--root", default=None, metavar="DIR", help="the dataset's folder")
    p.add_argument("--split", default="test", choices=("test", "train"))
    p.add_argument("--batch-size", type=int, default=None, dest="batch_size")
    p.add_argument("--ema", action="store_true", help="use the EMA weights")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model keywords on top of the run's, for switches that change how the "
                        "trained model runs, not its weights (e.g. --set test_view=events)")
    p.add_argument("--allow-shape-mismatch", action="store_true", dest="allow_shape_mismatch",
                   help="evaluate even when the data's samples differ in size or T from the "
                        "model's input_shape (refused otherwise); the result records it")
    p.set_defaults(func=cmd_evaluate)
