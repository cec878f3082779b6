"""Tables: one profile as markdown (``profile.md``), and many runs side by side
(``spikemoe report``: markdown and CSV). Top-1 is in percent (next-byte accuracy for a
language model, whose perplexity has its own column); SOPs and MACs per inference under the
``events`` convention; energies per inference under each (``literal``, ``events``, ``strict``;
a profile.json written before ``literal`` existed has ``paper`` for ``events`` and no
``literal``: that cell is empty).

A run directory is what ``spikemoe train`` writes: ``config.yaml``, ``metrics.jsonl``,
``summary.json`` and, when the run was profiled, ``profile/profile.json``.

Nothing in the table may look better than it is. The ``warnings`` column (and, in markdown,
``(!)`` on the energy and firing cells it concerns, with the full sentences under the table)
says when a run's profile measured a dead network (``no_spikes``, ``stem_silent``: see
``health.py``) or has silent layers, when the run did not finish (no ``summary.json``: its
figures come from ``metrics.jsonl``, up to the last epoch logged), when it stopped early
(``run.stop_after_steps``), and when its ``metrics.jsonl`` ends in a torn line.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

from .energy import CONVENTIONS, convention_name
from .health import firing_warnings
from .results import ProfileResult
from .runlog import read_json_file, read_jsonl

__all__ = ["RUN_COLUMNS", "gather_run", "profile_markdown", "profile_warnings", "runs_csv",
           "runs_markdown"]


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    if isinstance(v, int):
        return f"{v:,d}"
    return str(v)


def profile_markdown(p: ProfileResult, convention: str = "events") -> str:
    """The profile of one model as markdown: summary, energy per layer, audit, routers."""
    convention = convention_name(convention)
    e = p.energy[convention]
    spread = e.per_inference
    other = [c for c in CONVENTIONS if c != convention and c in p.energy]
    t = p.cost_table
    lines = [f"# Profile: {_known(p.model)} on {_known(p.data)}", ""]
    for w in p.warnings:  # first, before any figure a reader could take at face value
        lines += [f"> **Warning ({w.code})**: {w.message}", ">"]
    if lines[-1] == ">":
        lines[-1] = ""
    lines += [f"- samples: {p.samples}, T = {p.time_steps}; energy spread over "
              f"{spread.spread_samples} x {p.spread_unit}; parameters: "
              f"{_fmt(p.params)}, weights: {_known(p.weights)}",
              f"- cost table: {t.name} (E_MAC {t.e_mac_pj} pJ, E_AC {t.e_ac_pj} pJ; {t.source})",
              f"- energy per inference ({convention}): {spread.mean:.4g} mJ "
              f"(spread: std {spread.std:.2g}, min {spread.min:.4g}, max {spread.max:.4g})"]
    for c in other:
        lines.append(f"- energy per inference ({c}): {p.energy[c].per_inference.mean:.4g} mJ")
    lines += [f"- MACs {_fmt(e.macs)}, SOPs {_fmt(e.sops)}, mask ops {_fmt(e.mask_ops)}, "
              f"dense MACs {_fmt(p.ops.dense_macs)} per inference",
              f"- mean firing rate: {p.firing.mean_rate:.4f}"]
    if p.accuracy is not None:
        lines.append(f"- top-1 on the profiled samples: {p.accuracy.top1:.2f}%")
    lines += ["", f"## Energy per layer ({convention})", "",
              "| layer | kind | dense MACs | input rate | binary | MACs | SOPs | energy (nJ) |",
              "| --- | --- | ---: | ---: | :---: | ---: | ---: | ---: |"]
    for r in e.layers:
        lines.append(f"| {r.layer} | {r.kind} | {_fmt(r.dense_macs)} | {r.input_rate:.4f} | "
                     f"{'yes' if r.binary else 'no'} | {_fmt(r.macs)} | {_fmt(r.sops)} | "
                     f"{r.energy_pj * 1e-3:.4g} |")
    lines += ["", "## Spike-driven audit: layers whose input is not binary", ""]
    if not p.spiking:
        lines.append("not a spiking model (no spiking neurons): every layer is charged MACs.")
    elif p.audit:
        lines += ["| layer | kind | input rate | reason |", "| --- | --- | ---: | --- |"]
        lines += [f"| {a['layer']} | {a['kind']} | {a['input_rate']:.4f} | {a['reason']} |"
                  for a in p.audit]
    else:
        lines.append("none: every Linear / Conv / matmul reads binary spikes.")
    lines += ["", "## Firing rate per layer", "", "| layer | rate | rate per time step |",
              "| --- | ---: | --- |"]
    for name, v in p.firing.layers.items():
        steps = ", ".join(f"{r:.3f}" for r in v["rate_per_step"])
        silent = " **silent**" if v["spikes"] == 0 else ""  # 0 spikes over the profile
        lines.append(f"| {name} | {v['rate']:.4f}{silent} | {steps} |")
    if p.routers:
        lines += ["", "## Routers", "", "| router | experts | rate per expert | routed to none |",
                  "| --- | ---: | --- | ---: |"]
        for name, r in p.routers.items():
            rates = r["expert_rate"]
            shown = ", ".join(f"{x:.3f}" for x in rates[:8]) + (" ..." if len(rates) > 8 else "")
            lines.append(f"| {name} | {r['num_experts']} | {shown} | "
                         f"{100 * r['routed_to_none']:.1f}% |")
    return "\n".join(lines) + "\n"


def _known(v) -> str:
    return "?" if v is None else str(v)


def profile_warnings(p: dict) -> list[dict]:
    """A stored profile's warnings (``p``: a ``profile.json`` dict): its ``warnings`` field, or,
    for a profile.json written before that field existed, the same warnings derived from its
    per-layer spike counts."""
    if "warnings" in p:
        return list(p["warnings"])
    layers = p.get("firing", {}).get("layers", {})
    if not layers or not all("spikes" in v for v in layers.values()):
        return []
    return [w.to_dict() for w in firing_warnings(layers, p.get("samples"))]


RUN_COLUMNS = ("run", "model", "data", "T", "params", "best_top1", "final_top1",
               "final_perplexity", "sops", "macs", "energy_literal_mJ", "energy_events_mJ",
               "energy_strict_mJ", "mean_firing_rate", "warnings")

_SHORT = {"no_spikes": "NO SPIKES (dead network)", "stem_silent": "NO SPIKE PASSES THE STEM",
          "input_shape_mismatch": "input shape mismatch"}
_DEAD = ("no_spikes", "stem_silent")  # the energy and firing figures do not mean anything


def _short(w: dict) -> str:
    if w["code"] == "silent_layers":
        return f"{len(w.get('layers', []))} silent layer(s)"
    return _SHORT.get(w["code"], w["code"])


def gather_run(run_dir: str | Path,
               count_params: Callable[[str, dict], int | None] | None = None) -> dict:
    """One row of the results table from a run directory (missing figures are None).

    The row's ``warnings`` is a short text (empty when there is nothing to say); the full
    sentences are in ``row["notes"]`` (a list, not a table column) and the profile's
    warning codes in ``row["warning_codes"]``. ``params`` comes from the run's profile, else
    from ``count_params(model_name, model_config)`` when given (the CLI builds the model on
    the meta device: this module never imports the models).
    """
    import yaml

    run = Path(run_dir)
    summary_path, config_path = run / "summary.json", run / "config.yaml"
    metrics_path = run / "metrics.jsonl"
    if not summary_path.is_file() and not config_path.is_file():
        raise FileNotFoundError(
            f"{run} is not a run directory: expected summary.json and config.yaml written by "
            "`spikemoe train` (e.g. runs/demo).")
    summary = (read_json_file(summary_path, "It is written by `spikemoe train` at the end of a "
                              "run; resume the run to write it again, or delete it (the report "
                              "then reads metrics.jsonl).")
               if summary_path.is_file() else {})
    cfg = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    row = dict.fromkeys(RUN_COLUMNS)
    row.update(run=run.name, model=summary.get("model") or cfg.get("model", {}).get("name"),
               data=summary.get("data") or cfg.get("data", {}).get("name"),
               T=cfg.get("data", {}).get("T"), best_top1=summary.get("best_top1"),
               final_top1=summary.get("final_top1"),
               final_perplexity=summary.get("final_perplexity"))
    short, notes, codes = [], [], []
    if metrics_path.is_file():
        log = read_jsonl(metrics_path)
        if log.torn_line is not None:
            short.append("metrics.jsonl: torn last line")
            notes.append(log.note)
        if not summary:  # killed (or still running): the last epoch logged is all there is
            epochs = [r for r in log.records if r.get("kind") == "epoch"]
            tested = [r for r in epochs if "test/top1" in r]
            last = epochs[-1]["epoch"] if epochs else 0
            short.append(f"INCOMPLETE: no summary.json, {last} epoch(s) logged")
            notes.append(f"{run}: no summary.json: the run did not finish (killed, failed or "
                         f"still running); top-1 figures are from metrics.jsonl up to epoch "
                         f"{last}, and 'final' is the last epoch logged, not the schedule's end.")
            if tested:
                row.update(best_top1=tested[-1].get("best/top1"),
                           final_top1=tested[-1]["test/top1"],
                           final_perplexity=tested[-1].get("test/perplexity"))
    elif not summary:
        short.append("INCOMPLETE: no summary.json or metrics.jsonl")
        notes.append(f"{run}: neither summary.json nor metrics.jsonl: the run never logged.")
    if summary.get("stopped"):
        short.append(f"stopped early at step {summary.get('steps')}")
        notes.append(f"{run}: stopped by run.stop_after_steps at step {summary.get('steps')} "
                     f"(epoch {summary.get('epochs')}); not the schedule's final figures.")
    prof_path = run / "profile" / "profile.json"
    if prof_path.is_file():
        p = read_json_file(prof_path, f"It is written by `spikemoe profile`: run `spikemoe "
                           f"profile {run} --out {run / 'profile'}` to write it again.")
        energy = p["energy"]
        events = energy.get("events", energy.get("paper"))  # "paper": before "literal" existed

        def mj(e):
            return None if e is None else e["per_sample_mJ"]["mean"]

        row.update(params=p.get("params"), T=p.get("T", row["T"]),
                   sops=events["sops"], macs=events["macs"],
                   energy_literal_mJ=mj(energy.get("literal")), energy_events_mJ=mj(events),
                   energy_strict_mJ=mj(energy["strict"]),
                   mean_firing_rate=p["firing"]["mean_rate"])
        warned = profile_warnings(p)  # first in the cell: they concern the figures themselves
        codes = [w["code"] for w in warned]
        short = [_short(w) for w in warned] + short
        notes = [f"{run}: profile: {w['message']}" for w in warned] + notes
    if row["params"] is None and row["model"] and count_params is not None:
        row["params"] = count_params(row["model"], cfg.get("model", {}))
    row["warnings"] = "; ".join(short)
    row["notes"], row["warning_codes"] = notes, codes
    return row


def runs_markdown(rows: list[dict]) -> str:
    """The runs as a markdown table; a run whose profile measured a dead network has ``(!)``
    on its energy and firing cells, and every run's notes follow the table."""
    head = ("| run | model | data | T | params | best top-1 | final top-1 | perplexity | "
            "SOPs (events) | MACs (events) | energy literal (mJ) | energy events (mJ) | "
            "energy strict (mJ) | mean firing rate | warnings |")
    lines = [head, "| " + " | ".join(["---"] * 3 + ["---:"] * 11 + ["---"]) + " |"]
    flagged = ("sops", "energy_literal_mJ", "energy_events_mJ", "energy_strict_mJ",
               "mean_firing_rate")
    for r in rows:
        dead = any(c in _DEAD for c in r.get("warning_codes", []))
        cells = []
        for c in RUN_COLUMNS:
            cell = _fmt(r[c]) if c != "warnings" else (f"**{r[c]}**" if r[c] else "")
            if dead and c in flagged and r[c] is not None:
                cell += " (!)"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    notes = [n for r in rows for n in r.get("notes", [])]
    if notes:
        dead = any(c in _DEAD for r in rows for c in r.get("warning_codes", []))
        lines += ["", "Warnings" + (" ((!): the energy and firing figures of a network that "
                                    "does not fire describe no computation)" if dead else "")
                  + ":", ""]
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def runs_csv(rows: list[dict]) -> str:
    """The runs as CSV (``RUN_COLUMNS``; ``warnings`` is the short text)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RUN_COLUMNS, lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
