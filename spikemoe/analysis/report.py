"""Tables: one profile as markdown (``profile.md``), and many runs side by side
(``spikemoe report``: markdown and CSV). Top-1 is in percent (next-byte accuracy for a
language model, whose perplexity has its own column); SOPs and MACs per inference under the
``paper`` convention; energies per inference under both.

A run directory is what ``spikemoe train`` writes: ``config.yaml``, ``summary.json`` and,
when the run was profiled, ``profile/profile.json``.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

__all__ = ["RUN_COLUMNS", "gather_run", "profile_markdown", "runs_csv", "runs_markdown"]


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    if isinstance(v, int):
        return f"{v:,d}"
    return str(v)


def profile_markdown(p: dict, convention: str = "paper") -> str:
    """The profile of one model as markdown: summary, energy per layer, audit, routers."""
    e = p["energy"][convention]
    other = [c for c in p["energy"] if c != convention]
    lines = [f"# Profile: {p.get('model', '?')} on {p.get('data', '?')}", "",
             f"- samples: {p['samples']}, T = {p['T']}; energy spread over "
             f"{e['per_sample_mJ'].get('spread_samples', '?')} x "
             f"{p.get('spread_unit', 'sample (each run alone)')}; parameters: "
             f"{_fmt(p.get('params'))}, weights: {p.get('weights', '?')}",
             f"- cost table: {p['cost_table']['name']} (E_MAC {p['cost_table']['e_mac_pj']} pJ, "
             f"E_AC {p['cost_table']['e_ac_pj']} pJ; {p['cost_table']['source']})",
             f"- energy per inference ({convention}): {e['per_sample_mJ']['mean']:.4g} mJ "
             f"(spread: std {e['per_sample_mJ']['std']:.2g}, min {e['per_sample_mJ']['min']:.4g}, "
             f"max {e['per_sample_mJ']['max']:.4g})"]
    for c in other:
        lines.append(f"- energy per inference ({c}): "
                     f"{p['energy'][c]['per_sample_mJ']['mean']:.4g} mJ")
    lines += [f"- MACs {_fmt(e['macs'])}, SOPs {_fmt(e['sops'])}, mask ops {_fmt(e['mask_ops'])}, "
              f"dense MACs {_fmt(p['ops']['dense_macs'])} per inference",
              f"- mean firing rate: {p['firing']['mean_rate']:.4f}"]
    if "accuracy" in p:
        lines.append(f"- top-1 on the profiled samples: {p['accuracy']['top1']:.2f}%")
    lines += ["", f"## Energy per layer ({convention})", "",
              "| layer | kind | dense MACs | input rate | binary | MACs | SOPs | energy (nJ) |",
              "| --- | --- | ---: | ---: | :---: | ---: | ---: | ---: |"]
    for r in e["layers"]:
        lines.append(f"| {r['layer']} | {r['kind']} | {_fmt(r['dense_macs'])} | "
                     f"{r['input_rate']:.4f} | {'yes' if r['binary'] else 'no'} | "
                     f"{_fmt(r['macs'])} | {_fmt(r['sops'])} | {r['energy_pj'] * 1e-3:.4g} |")
    lines += ["", "## Spike-driven audit: layers whose input is not binary", ""]
    if not p.get("spiking", True):
        lines.append("not a spiking model (no spiking neurons): every layer is charged MACs.")
    elif p["audit"]:
        lines += ["| layer | kind | input rate | reason |", "| --- | --- | ---: | --- |"]
        lines += [f"| {a['layer']} | {a['kind']} | {a['input_rate']:.4f} | {a['reason']} |"
                  for a in p["audit"]]
    else:
        lines.append("none: every Linear / Conv / matmul reads binary spikes.")
    lines += ["", "## Firing rate per layer", "", "| layer | rate | rate per time step |",
              "| --- | ---: | --- |"]
    for name, v in p["firing"]["layers"].items():
        steps = ", ".join(f"{r:.3f}" for r in v["rate_per_step"])
        lines.append(f"| {name} | {v['rate']:.4f} | {steps} |")
    if p.get("routers"):
        lines += ["", "## Routers", "", "| router | experts | rate per expert | routed to none |",
                  "| --- | ---: | --- | ---: |"]
        for name, r in p["routers"].items():
            rates = r["expert_rate"]
            shown = ", ".join(f"{x:.3f}" for x in rates[:8]) + (" ..." if len(rates) > 8 else "")
            lines.append(f"| {name} | {r['num_experts']} | {shown} | "
                         f"{100 * r['routed_to_none']:.1f}% |")
    return "\n".join(lines) + "\n"


RUN_COLUMNS = ("run", "model", "data", "T", "params", "best_top1", "final_top1",
               "final_perplexity", "sops", "macs", "energy_paper_mJ", "energy_strict_mJ",
               "mean_firing_rate")


def gather_run(run_dir: str | Path) -> dict:
    """One row of the results table from a run directory (missing figures are None)."""
    import yaml

    run = Path(run_dir)
    summary_path, config_path = run / "summary.json", run / "config.yaml"
    if not summary_path.is_file() and not config_path.is_file():
        raise FileNotFoundError(
            f"{run} is not a run directory: expected summary.json and config.yaml written by "
            "`spikemoe train` (e.g. runs/demo).")
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    cfg = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    row = dict.fromkeys(RUN_COLUMNS)
    row.update(run=run.name, model=summary.get("model") or cfg.get("model", {}).get("name"),
               data=summary.get("data") or cfg.get("data", {}).get("name"),
               T=cfg.get("data", {}).get("T"), best_top1=summary.get("best_top1"),
               final_top1=summary.get("final_top1"),
               final_perplexity=summary.get("final_perplexity"))
    prof_path = run / "profile" / "profile.json"
    if prof_path.is_file():
        p = json.loads(prof_path.read_text())
        row.update(params=p.get("params"), T=p.get("T", row["T"]),
                   sops=p["energy"]["paper"]["sops"], macs=p["energy"]["paper"]["macs"],
                   energy_paper_mJ=p["energy"]["paper"]["per_sample_mJ"]["mean"],
                   energy_strict_mJ=p["energy"]["strict"]["per_sample_mJ"]["mean"],
                   mean_firing_rate=p["firing"]["mean_rate"])
    if row["params"] is None and row["model"]:
        row["params"] = _count_params(row["model"], cfg.get("model", {}))
    return row


def _count_params(name: str, model_cfg: dict) -> int | None:
    """Parameters of the run's model, built on the meta device (no memory, no init)."""
    import torch

    from spikemoe.models import create_model

    kwargs = {k: v for k, v in model_cfg.items() if k != "name"}
    try:
        with torch.device("meta"):
            return sum(p.numel() for p in create_model(name, **kwargs).parameters())
    except ValueError:  # a model this version no longer has: leave the cell empty
        return None


def runs_markdown(rows: list[dict]) -> str:
    head = ("| run | model | data | T | params | best top-1 | final top-1 | perplexity | "
            "SOPs (paper) | MACs (paper) | energy paper (mJ) | energy strict (mJ) | "
            "mean firing rate |")
    lines = [head, "| " + " | ".join(["---"] * 3 + ["---:"] * 10) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]) for c in RUN_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def runs_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RUN_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
