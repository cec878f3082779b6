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
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

from .energy import CONVENTIONS, audit, cost_table, layer_energy
from .firing_rates import FiringRateMonitor
from .health import firing_warnings, silent_layers
from .op_counts import OpRecord, count_operations

__all__ = ["profile_model"]


def merge_records(total: dict[tuple[str, str], OpRecord], records: list[OpRecord]) -> None:
    """Add one forward's records into running totals, keyed by (layer, kind)."""
    for r in records:
        t = total.get((r.layer, r.kind))
        if t is None:
            total[(r.layer, r.kind)] = OpRecord(**vars(r))
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


def _batch(xs: list[torch.Tensor]) -> torch.Tensor:
    """Samples without batch axis -> one batch: [T, C, H, W] -> [T, B, C, H, W] (time-major,
    the model contract); [C, H, W] -> [B, C, H, W]; byte ids [N] -> [B, N]."""
    return torch.stack(xs, 1) if xs[0].dim() == 4 else torch.stack(xs, 0)


def _energy_mj(records: list[OpRecord], convention: str, costs, steps: int,
               first_layer_once: bool, spiking: bool) -> float:
    return sum(layer_energy(r, convention, costs, 1, steps, first_layer_once, spiking).energy_pj
               for r in records) * 1e-9  # pJ -> mJ


@torch.no_grad()
def profile_model(model: nn.Module, samples: Iterable, *, table: str = "45nm-fp32",
                  first_layer_once: bool = False, max_samples: int | None = None,
                  batch_size: int = 32, spread_samples: int = 16, progress=None) -> dict:
    """Run ``model`` on the samples and measure it.

    Two passes. (1) The first ``spread_samples`` samples run alone (batch 1), each under its
    own counter: the spread (std, min, max) of the energy per inference. (2) All samples run
    in batches of ``batch_size``, each under its own counter (records merged) and all under
    the firing-rate monitor: the per-layer totals, the mean energy per inference (= the mean of per-sample energies: every count is
    a sum over samples) and the rates. Batching keeps the counting overhead small.

    A model whose computation depends on which samples share a batch states the batch it is
    measured in as ``model.profile_batch_size`` (V-MoE: one routing group of images, whose
    capacity is shared; SDT / STT: 1, since a batch pads every sequence's selected tokens to
    the longest selection and the padding rows would be counted). Then the main pass runs in
    batches of that size and the spread is over those batches
    (per sample for size 1): no separate pass, and the mean and the spread measure the same
    computation. ``profile.json`` says which (``batch_size``, ``spread_unit``).

    Args:
        model: any ``nn.Module`` returning a ``ModelOutput`` (or logits); put in eval mode.
        samples: iterable of ``(x, y)`` with x one sample without batch axis (``[T, C, H, W]``
            or ``[C, H, W]``) and y its label (or None); the first ``max_samples`` are used.
        table: cost table name (``energy.COST_TABLES``).
        first_layer_once: charge the first layer's MACs once instead of T times.
    Returns:
        A JSON-ready dict: ``samples``, ``T``, ``accuracy`` (if labels), ``cost_table``,
        ``energy`` (per convention: mean mJ per inference and its spread, totals, per-layer
        breakdown), ``ops`` (dense MACs per layer and in total), ``firing`` (per-layer rates
        and per time step, mean rate), ``routers`` (per SEMM router: rate per expert and
        time step, usage, routed-to-none), ``audit`` (layers whose input is not binary) and
        ``warnings``: a list of ``{"code", "message", "layers"}`` (``health.ProfileWarning``;
        codes ``no_spikes``, ``stem_silent``, ``silent_layers``), empty when every spiking
        layer fired; the silent layers are also listed in ``firing["silent_layers"]``.
    """
    costs = cost_table(table)
    if batch_size < 1 or spread_samples < 1:
        raise ValueError(f"batch_size and spread_samples must be >= 1, got {batch_size}, "
                         f"{spread_samples}")
    # a model without spiking neurons (an ANN baseline) is charged MACs everywhere
    spiking = any(isinstance(m, BaseNode) for m in model.modules())
    unit = getattr(model, "profile_batch_size", None)
    if unit is not None:  # the model's own measurement batch; spread over those batches
        batch_size, spread_samples = int(unit), 0
    was_training = model.training
    model.eval()
    per_sample = {c: [] for c in CONVENTIONS}
    totals: dict[tuple[str, str], OpRecord] = {}
    correct = labelled = n = 0
    steps = 1

    def add_spread(records: list[OpRecord], time_steps: int, size: int) -> None:
        """One spread point: the energy per sample of a forward of ``size`` samples."""
        for c in CONVENTIONS:
            per_sample[c].append(_energy_mj(records, c, costs, time_steps, first_layer_once,
                                            spiking) / size)

    try:
        with FiringRateMonitor(model) as monitor:
            pending: list = []

            def run_batch() -> None:
                nonlocal correct, labelled, steps
                xb = _batch([x for x, _ in pending])
                steps = _time_steps(model, xb)
                counter, out = count_operations(model, xb)
                records = counter.layer_records()
                merge_records(totals, records)
                if unit is not None:  # the model's measurement batch is the spread's unit
                    add_spread(records, steps, len(pending))
                logits = out.logits if hasattr(out, "logits") else out
                for row, (_, y) in zip(logits.argmax(-1).tolist(), pending):
                    if torch.is_tensor(y) and y.numel() != 1:
                        continue  # per-token targets (a language model): no top-1 here
                    if y is not None and int(y) >= 0:
                        labelled += 1
                        correct += int(row == int(y))
                if progress is not None:
                    progress.update(len(pending))
                pending.clear()

            for x, y in samples:
                if max_samples is not None and n >= max_samples:
                    break
                if n < spread_samples:  # alone, outside the monitor's and the totals' sums
                    xs = _batch([x])
                    with monitor.paused():
                        one, _ = count_operations(model, xs)
                    add_spread(one.layer_records(), _time_steps(model, xs), 1)
                pending.append((x, y))
                n += 1
                if len(pending) == batch_size:
                    run_batch()
            if pending:
                run_batch()
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("profile got no samples: the dataset split is empty or --samples is 0")
    records = list(totals.values())
    energy = {}
    for c in CONVENTIONS:
        layers = [layer_energy(r, c, costs, n, steps, first_layer_once, spiking)
                  for r in records]
        mean = sum(e.energy_pj for e in layers) * 1e-9
        energy[c] = {
            # mean: over all samples; std/min/max (and their own mean): over the first
            # spread_samples samples, each run alone
            "per_sample_mJ": {"mean": mean, **{f"spread_{k}" if k == "mean" else k: v
                                              for k, v in _spread(per_sample[c]).items()},
                              "spread_samples": len(per_sample[c])},
            "mJ": mean,
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
        "spiking": spiking,
        "batch_size": batch_size,
        "spread_unit": ("sample (each run alone)" if unit is None or batch_size == 1 else
                        f"batch of {batch_size} (the model's routing group), per sample"),
        "energy": energy,
        "ops": {
            "dense_macs": sum(r.dense_macs for r in records if r.kind != "mask") / n,
            "layers": [{**r.to_dict(), "dense_macs": r.dense_macs / n, "events": r.events / n}
                       for r in records],
        },
        "firing": {"mean_rate": rates.mean_rate(), "layers": rates.layers,
                   "silent_layers": silent_layers(rates.layers)},
        "routers": rates.routers,
        "audit": audit(records) if spiking else [],  # an ANN: nothing is meant to be spikes
        "warnings": [w.to_dict() for w in firing_warnings(rates.layers, n)],
    }
    if labelled:
        out["accuracy"] = {"top1": 100.0 * correct / labelled, "n": labelled}
    return out
