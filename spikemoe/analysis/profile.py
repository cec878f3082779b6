"""Profile a model over evaluation samples: firing rates, router statistics, operation
counts and energy per inference (every convention of ``energy.CONVENTIONS``), per layer and in
total.

The samples run in batches, each batch under its own ``LayerOpCounter``
(``count_operations``; records merged over the batches) and all of them under a
``FiringRateMonitor``: per-layer totals, the mean energy per inference and the firing rates.
The spread of the energy per inference (std, min, max) is over the first samples, each
counted as if it ran alone: read from its batch once the first sample, run alone, is found
to give the same records there (or, for a model that declares a measurement batch, over its
batches). Nothing keeps spike tensors: memory is flat in the number of samples.

Pieces: ``_measure`` runs the forwards and counts (``_Tally``), ``top1_counts`` scores the
logits, ``_convention_energy`` prices the counts; ``profile_model`` puts them together into a
``ProfileResult`` (``results.py``).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

from ..contract import model_facts
from ..layers.kernels import current_ssa_order, ssa_product_order
from .energy import (
           ALIASES,
           CONVENTIONS,
           CostTable,
           LayerEnergy,
           audit,
           cost_table,
           first_layer_mode,
           layer_energy,
)
from .firing_rates import FiringRateMonitor
from .health import firing_warnings, silent_layers
from .op_counts import OpRecord, count_operations
from .results import (
           Accuracy,
           ConventionEnergy,
           EnergySpread,
           FiringSummary,
           OpCounts,
           ProfileResult,
)

__all__ = ["profile_model", "top1_counts"]


def merge_records(total: dict[tuple[str, str], OpRecord], records: list[OpRecord]) -> None:
    """Add one forward's records into running totals, keyed by (layer, kind)."""
    for r in records:
        total.setdefault((r.layer, r.kind), OpRecord(r.layer, r.kind)).merge(r)


def _batch(xs: list):
    """Samples without batch axis -> one batch: [T, C, H, W] -> [T, B, C, H, W] (time-major,
    the model contract); [C, H, W] -> [B, C, H, W]; byte ids [N] -> [B, N]; a dict of views
    (multi-view models) -> the dict of each view's batch."""
    if isinstance(xs[0], dict):
        return {k: _batch([x[k] for x in xs]) for k in xs[0]}
    return torch.stack(xs, 1) if xs[0].dim() == 4 else torch.stack(xs, 0)


def _views(x) -> list[torch.Tensor]:
    return list(x.values()) if isinstance(x, dict) else [x]


def _first_layer_once(mode: str, x) -> bool:
    """Charge the first layer once? ``auto``: yes unless ``x`` (or one of its views) is
    time-major event frames ``[T, B, C, H, W]`` (a static image, byte ids...: the same input
    at every step)."""
    return mode == "once" or (mode == "auto" and all(v.dim() != 5 for v in _views(x)))


def _time_steps(model: nn.Module, x) -> int:
    """T of a forward on batch ``x``: its (a view's) time axis, else the T the model declares."""
    frames = [int(v.shape[0]) for v in _views(x) if v.dim() == 5]
    return max(frames) if frames else model_facts(model).time_steps


def top1_counts(logits: torch.Tensor, targets: Sequence) -> tuple[int, int]:
    """``(correct, labelled)`` of one batch: top-1 of ``logits [B, K]`` against ``targets``.

    A target that is None or negative is unlabelled; a per-token target (a language model's
    ``[N]``) is skipped: top-1 here is per sample only."""
    correct = labelled = 0
    for row, y in zip(logits.argmax(-1).tolist(), targets):
        if torch.is_tensor(y) and y.numel() != 1:
            continue
        if y is not None and int(y) >= 0:
            labelled += 1
            correct += int(row == int(y))
    return correct, labelled


@dataclass(frozen=True)
class _Pricing:
    """How counted operations are charged (``energy.layer_energy``)."""

    costs: CostTable
    first_layer: str  # energy.FIRST_LAYER: auto | once | T-times
    spiking: bool  # False: an ANN, charged MACs everywhere

    def layers(self, records: list[OpRecord], convention: str, samples: int,
               steps: int, once: bool) -> list[LayerEnergy]:
        return [layer_energy(r, convention, self.costs, samples, steps, once, self.spiking)
                for r in records]

    def forward_mj(self, records: list[OpRecord], convention: str, steps: int,
                   once: bool) -> float:
        """Energy of one forward in mJ (all the samples it ran)."""
        return sum(e.energy_pj for e in self.layers(records, convention, 1, steps, once)) * 1e-9


@dataclass
class _Tally:
    """Running counts of ``_measure``: merged op records, spread points, samples, top-1."""

    pricing: _Pricing
    totals: dict[tuple[str, str], OpRecord] = field(default_factory=dict)
    spread: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CONVENTIONS})
    samples: int = 0
    steps: int = 1
    once: bool = False  # the first layer charged once (resolved from the input)
    correct: int = 0
    labelled: int = 0

    def add_spread(self, records: list[OpRecord], x: torch.Tensor, steps: int,
                   size: int) -> None:
        """One spread point: the energy per sample (mJ) of a forward of ``size`` samples."""
        once = _first_layer_once(self.pricing.first_layer, x)
        for c in CONVENTIONS:
            self.spread[c].append(self.pricing.forward_mj(records, c, steps, once) / size)


def _same(a: list[OpRecord], b: list[OpRecord]) -> bool:
    return [r.to_dict() for r in a] == [r.to_dict() for r in b]


def _measure(model: nn.Module, samples: Iterable, monitor: FiringRateMonitor, tally: _Tally, *,
             batch_size: int, spread_samples: int, spread_per_batch: bool,
             max_samples: int | None, progress, score=top1_counts) -> None:
    """Run the samples through ``model`` in batches of ``batch_size`` under counters and the
    monitor; each of the first ``spread_samples`` is a spread point, or each batch is one
    (``spread_per_batch``).

    A spread point is the sample's records as if it ran alone. The first sample does run
    alone (outside the monitor's and the totals' sums); the others' are read from their batch
    (``count_operations(per_sample=)``) when the first sample's records read from the first
    batch equal its own and no layer of a spiking model is charged by the nonzero fraction of
    an input with negative values (``LayerOpCounter.signed_inputs``: an ANN path, whose exact
    zeros can depend on float rounding, hence on the batch size); else they run alone too.
    Alone, 16 samples cost as much as three batches of 32 (a batch-1 forward is bound by
    Python, not arithmetic)."""
    pending: list = []
    alone0: list[OpRecord] = []  # the first sample run alone
    trust: bool | None = None  # the first batch gave its first sample's records; None: not seen

    def alone(x) -> tuple[list[OpRecord], object]:
        xs = _batch([x])
        with monitor.paused():
            one, _ = count_operations(model, xs)
        return one.layer_records(), xs

    def run_batch() -> None:
        nonlocal trust
        start = tally.samples - len(pending)  # index of pending[0] among all samples
        spread = [i for i in range(len(pending)) if 0 < start + i < spread_samples]
        xb = _batch([x for x, _ in pending])
        tally.steps = _time_steps(model, xb)
        tally.once = _first_layer_once(tally.pricing.first_layer, xb)
        per_sample = ((tally.steps, len(pending)) if spread and len(pending) > 1
                      and (trust or (trust is None and start == 0)) else None)
        keep = [0, *spread] if start == 0 else spread  # the first sample checks the others
        counter, out = count_operations(model, xb, per_sample=per_sample, keep=keep)
        records = counter.layer_records()
        merge_records(tally.totals, records)
        if spread_per_batch:
            tally.add_spread(records, xb, tally.steps, len(pending))
        # a batch of one is the sample alone
        per = {0: records} if len(pending) == 1 else counter.sample_records()
        if per_sample and trust is None:
            trust = (per is not None and _same(per[0], alone0)
                     and not (tally.pricing.spiking and counter.signed_inputs))
        for i in spread:
            if len(pending) == 1 or (per is not None and trust):
                tally.add_spread(per[i], xb, tally.steps, 1)
            else:
                one, xs = alone(pending[i][0])
                tally.add_spread(one, xs, _time_steps(model, xs), 1)
        logits = out.logits if hasattr(out, "logits") else out
        correct, labelled = score(logits, [y for _, y in pending])
        tally.correct += correct
        tally.labelled += labelled
        if progress is not None:
            progress.update(len(pending))
        pending.clear()

    for x, y in samples:
        if max_samples is not None and tally.samples >= max_samples:
            break
        if tally.samples == 0 and spread_samples > 0:
            alone0, xs = alone(x)
            tally.add_spread(alone0, xs, _time_steps(model, xs), 1)
        pending.append((x, y))
        tally.samples += 1
        if len(pending) == batch_size:
            run_batch()
    if pending:
        run_batch()


def _spread(values: list[float]) -> tuple[float, float, float, float]:
    """``(mean, std, min, max)`` of ``values``; std with Bessel's correction (0 for one value)."""
    n = len(values)
    lo, hi = min(values), max(values)
    mean = min(max(math.fsum(values) / n, lo), hi)  # no rounding outside [min, max]
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std, lo, hi


def _convention_energy(tally: _Tally, records: list[OpRecord], convention: str) -> ConventionEnergy:
    """Energy per inference under ``convention``: the mean over all samples (from the merged
    records), the spread over the spread points."""
    layers = tally.pricing.layers(records, convention, tally.samples, tally.steps, tally.once)
    mean = sum(e.energy_pj for e in layers) * 1e-9  # pJ -> mJ
    s_mean, std, lo, hi = _spread(tally.spread[convention])
    return ConventionEnergy(
        per_inference=EnergySpread(mean, s_mean, std, lo, hi, len(tally.spread[convention])),
        macs=sum(e.macs for e in layers), sops=sum(e.sops for e in layers),
        mask_ops=sum(e.mask_ops for e in layers), layers=layers)


@torch.no_grad()
def profile_model(model: nn.Module, samples: Iterable, *, table: str = "45nm-fp32",
                  first_layer_once: bool | str | None = "auto", ssa_order: str | None = None,
                  max_samples: int | None = None,
                  batch_size: int = 32, spread_samples: int = 16,
                  progress=None, score=top1_counts) -> ProfileResult:
    """Run ``model`` on the samples and measure it.

    All samples run in batches of ``batch_size``, each under its own counter (records
    merged) and all under the firing-rate monitor: the per-layer totals, the mean energy per
    inference (= the mean of per-sample energies: every count is a sum over samples) and the
    rates. The first ``spread_samples`` samples give the spread (std, min, max) of the energy
    per inference, each counted as if it ran alone (batch 1): the first one does run alone,
    the others' counts are read from their batch where the first one's counts read from its
    batch are the same as alone (else they run alone too; ``_measure``). Batching keeps the
    counting overhead small (``benchmarks/bench_profile.py``).

    A model whose computation depends on which samples share a batch declares the batch it
    is measured in (``model_facts(model).measurement_batch``; V-MoE: one routing group of
    images, whose capacity is shared; SDT / STT: 1, since a batch pads every sequence's
    selected tokens to the longest selection and the padding rows would be counted). Then
    the main pass runs in batches of that size and the spread is over those batches (per
    sample for size 1): no separate pass, and the mean and the spread measure the same
    computation. The result says which (``batch_size``, ``spread_unit``).

    Args:
        model: any ``nn.Module`` returning a ``ModelOutput`` (or logits); put in eval mode.
        samples: iterable of ``(x, y)`` with x one sample without batch axis (``[T, C, H, W]``,
            ``[C, H, W]`` or byte ids ``[N]``) and y its label (or None); the first
            ``max_samples`` are used.
        table: cost table name (``energy.COST_TABLES``).
        first_layer_once: how often the first layer's MACs are charged: ``"auto"`` (default:
            once for an input that is the same at every step, a static image ``[B, C, H, W]``
            repeated T times; T times for event frames ``[T, B, ...]``), ``"once"`` (or True),
            ``"T-times"`` (or False).
        ssa_order: SSA's product order while counting (``layers.kernels.SSA_ORDERS``:
            ``"auto"`` the cheaper, ``"q(kv)"``, ``"(qk)v"``); None keeps the order set by an
            enclosing ``ssa_product_order`` block (``"auto"`` outside one). The value is the
            same, the counted operations differ.
        batch_size: samples per forward of the main pass.
        spread_samples: samples in the spread, each counted as if it ran alone.
        progress: anything with ``update(n)`` (a tqdm bar), told of every batch.
        score: ``(logits, targets) -> (correct, labelled)`` of a batch, the accuracy the
            result reports (the engine passes its task's ``profile_score``; default
            ``top1_counts``, per-sample top-1).
    Returns:
        A ``ProfileResult``: energy per convention (``energy["paper"]`` is ``"events"``; mean
        mJ per inference and its spread,
        totals, per-layer breakdown), ops (dense MACs per layer and in total), firing
        (per-layer rates, per time step, mean rate, silent layers), routers (per router:
        rate per expert and time step, usage, routed-to-none), audit (layers whose input is not
        binary), warnings (``health.ProfileWarning``: ``no_spikes``, ``stem_silent``,
        ``silent_layers``; empty when every spiking layer fired) and accuracy (with labels).
        ``to_json()`` is the ``profile.json`` dict.
    """
    costs = cost_table(table)
    first_layer = first_layer_mode(first_layer_once)
    ssa_order = current_ssa_order() if ssa_order is None else ssa_order
    if batch_size < 1 or spread_samples < 1:
        raise ValueError(f"batch_size and spread_samples must be >= 1, got {batch_size}, "
                         f"{spread_samples}")
    # a model without spiking neurons (an ANN baseline) is charged MACs everywhere
    spiking = any(isinstance(m, BaseNode) for m in model.modules())
    unit = model_facts(model).measurement_batch
    if unit is not None:  # the model's own measurement batch; spread over those batches
        batch_size, spread_samples = int(unit), 0
    tally = _Tally(_Pricing(costs, first_layer, spiking))
    was_training = model.training
    model.eval()
    try:
        with ssa_product_order(ssa_order), FiringRateMonitor(model) as monitor:
            _measure(model, samples, monitor, tally, batch_size=batch_size,
                     spread_samples=spread_samples, spread_per_batch=unit is not None,
                     max_samples=max_samples, progress=progress, score=score)
    finally:
        model.train(was_training)
    n = tally.samples
    if n == 0:
        raise ValueError("profile got no samples: the dataset split is empty or --samples is 0")
    records = list(tally.totals.values())
    rates = monitor.result()
    energy = {c: _convention_energy(tally, records, c) for c in CONVENTIONS}
    energy.update({alias: energy[c] for alias, c in ALIASES.items()})
    return ProfileResult(
        samples=n, time_steps=tally.steps, cost_table=costs, first_layer_once=tally.once,
        first_layer=first_layer, ssa_order=ssa_order,
        spiking=spiking, batch_size=batch_size,
        spread_unit=("sample (each run alone)" if unit is None or batch_size == 1 else
                     f"batch of {batch_size} (the model's routing group), per sample"),
        energy=energy,
        ops=OpCounts(records, n),
        firing=FiringSummary(rates.mean_rate(), rates.layers, silent_layers(rates.layers)),
        routers=rates.routers,
        audit=audit(records) if spiking else [],  # an ANN: nothing is meant to be spikes
        warnings=firing_warnings(rates.layers, n),
        accuracy=Accuracy(100.0 * tally.correct / tally.labelled, tally.labelled)
        if tally.labelled else None)
