"""Profile a model over evaluation samples: firing rates, router statistics, operation
counts and energy per inference (both conventions), per layer and in total.

Every sample is run alone (batch 1) under SpikingJelly's ``DispatchCounterMode`` with a
``LayerOpCounter``, so the energy of each inference is known and its spread (std, min,
max over the samples) is reported, not only the mean. Firing rates come from a
``FiringRateMonitor`` over the same forwards. Nothing keeps spike tensors: memory is flat
in the number of samples.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from .energy import CONVENTIONS, audit, cost_table, layer_energy
from .firing_rates import FiringRateMonitor
from .op_counts import OpRecord, count_operations

__all__ = ["merge_records", "profile_model"]


def merge_records(total: dict[tuple[str, str], OpRecord], records: list[OpRecord]) -> None:
    """Add one forward's records into running totals (keyed by layer and kind)."""
    for r in records:
        t = total.get((r.layer, r.kind))
        if t is None:
            total[(r.layer, r.kind)] = OpRecord(**{**r.__dict__})
            continue
        t.calls += r.calls
        t.dense_macs += r.dense_macs
        t.input_elements += r.input_elements
        t.input_nonzero += r.input_nonzero
        t.events += r.events
        t.binary &= r.binary
        t.integer &= r.integer
        t.first |= r.first


def _spread(values: list[float]) -> dict:
    n = len(values)
    lo, hi = min(values), max(values)
    mean = min(max(math.fsum(values) / n, lo), hi)  # no rounding outside [min, max]
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "min": lo, "max": hi}


def _time_steps(model: nn.Module, x: torch.Tensor) -> int:
    if x.dim() == 5:
        return int(x.shape[0])
    return int(getattr(model, "T", 1))


@torch.no_grad()
def profile_model(model: nn.Module, samples: Iterable, *, table: str = "45nm-fp32",
                  first_layer_once: bool = False, max_samples: int | None = None,
                  progress=None) -> dict:
    """Run ``model`` on each sample and measure it.

    Args:
        model: any ``nn.Module`` returning a ``ModelOutput`` (or logits); put in eval mode.
        samples: iterable of ``(x, y)`` with x one sample without batch axis (``[T, C, H, W]``
            or ``[C, H, W]``) and y its label (or None); the first ``max_samples`` are used.
        table: cost table name (``energy.COST_TABLES``).
        first_layer_once: charge the first layer's MACs once instead of T times.
    Returns:
        A JSON-ready dict: ``samples``, ``T``, ``accuracy`` (if labels), ``cost_table``,
        ``energy`` (per convention: per-sample mJ spread, totals, per-layer breakdown),
        ``ops`` (dense MACs per layer and in total), ``firing`` (per-layer rates and per
        time step, mean rate), ``routers`` (per SEMM router: rate per expert and time step,
        usage, routed-to-none) and ``audit`` (layers whose input is not binary, and why).
    """
    costs = cost_table(table)
    was_training = model.training
    model.eval()
    totals: dict[tuple[str, str], OpRecord] = {}
    per_sample = {c: [] for c in CONVENTIONS}
    correct = labelled = n = 0
    steps = 1
    try:
        with FiringRateMonitor(model) as monitor:
            for x, y in samples:
                if max_samples is not None and n >= max_samples:
                    break
                # [T, C, H, W] -> [T, 1, C, H, W]; [C, H, W] -> [1, C, H, W]
                xb = x.unsqueeze(1) if x.dim() == 4 else x.unsqueeze(0)
                steps = _time_steps(model, xb)
                counter, out = count_operations(model, xb)
                logits = out.logits if hasattr(out, "logits") else out
                records = counter.layer_records()
                for c in CONVENTIONS:
                    pj = sum(layer_energy(r, c, costs, 1, steps, first_layer_once).energy_pj
                             for r in records)
                    per_sample[c].append(pj * 1e-9)  # pJ -> mJ
                merge_records(totals, records)
                if y is not None and int(y) >= 0:
                    labelled += 1
                    correct += int(logits.argmax(-1).item() == int(y))
                n += 1
                if progress is not None:
                    progress.update(1)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("profile got no samples: the dataset split is empty or --samples is 0")
    records = list(totals.values())
    energy = {}
    for c in CONVENTIONS:
        layers = [layer_energy(r, c, costs, n, steps, first_layer_once) for r in records]
        energy[c] = {
            "per_sample_mJ": _spread(per_sample[c]),
            "mJ": sum(e.energy_pj for e in layers) * 1e-9,
            "macs": sum(e.macs for e in layers),
            "sops": sum(e.sops for e in layers),
            "mask_ops": sum(e.mask_ops for e in layers),
            "layers": [e.to_dict() for e in layers],
        }
    rates = monitor.result()
    out = {
        "samples": n,
        "T": steps,
        "cost_table": {"name": costs.name, "e_mac_pj": costs.e_mac_pj, "e_ac_pj": costs.e_ac_pj,
                       "source": costs.source},
        "first_layer_once": first_layer_once,
        "energy": energy,
        "ops": {
            "dense_macs": sum(r.dense_macs for r in records if r.kind != "mask") / n,
            "layers": [{**r.to_dict(), "dense_macs": r.dense_macs / n, "events": r.events / n}
                       for r in records],
        },
        "firing": {"mean_rate": rates.mean_rate(), "layers": rates.layers},
        "routers": rates.routers,
        "audit": audit(records),
    }
    if labelled:
        out["accuracy"] = {"top1": 100.0 * correct / labelled, "n": labelled}
    return out
