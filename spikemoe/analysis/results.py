"""The typed result of a profile (``profile_model``): counting, spread, energy, firing and
routing, warnings, and where the measurement came from.

Code reads the attributes (``result.energy["events"].per_inference.mean``; ``"paper"`` is an
alias of ``"events"``); ``to_json()``
gives the dict stored as ``profile.json``, whose keys, order and values are what
``spikemoe report`` and users read:

    model, data, split, weights, params     where from (set by the engine; absent otherwise)
    samples, T, cost_table, first_layer (auto | once | T-times, as asked),
    first_layer_once (as charged), ssa_order, spiking, batch_size, spread_unit
    energy      per convention (literal, events, strict): per_sample_mJ {mean, spread_mean,
                std, min, max, spread_samples}, mJ, macs, sops, mask_ops, layers
    energy_aliases  {"paper": "events"}: the older name of a convention
    ops         dense_macs, layers (per inference)
    firing      mean_rate, layers, silent_layers
    routers, audit, warnings, accuracy {top1, n} (only with labels)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .energy import ALIASES, CostTable, LayerEnergy
from .health import ProfileWarning
from .op_counts import OpRecord

__all__ = ["Accuracy", "ConventionEnergy", "EnergySpread", "FiringSummary", "OpCounts",
           "ProfileResult"]


@dataclass(frozen=True)
class EnergySpread:
    """Energy per inference in mJ: the mean over all samples, and its spread.

    Attributes:
        mean: total energy of all samples / samples (the batched pass).
        spread_mean, std, min, max: over ``spread_samples`` spread units (a sample counted
            as if run alone, or one measurement batch of the model, per sample); std with
            Bessel's correction.
        spread_samples: how many spread units.
    """

    mean: float
    spread_mean: float
    std: float
    min: float
    max: float
    spread_samples: int

    def to_json(self) -> dict:
        return {"mean": self.mean, "spread_mean": self.spread_mean, "std": self.std,
                "min": self.min, "max": self.max, "spread_samples": self.spread_samples}


@dataclass(frozen=True)
class ConventionEnergy:
    """Energy per inference under one convention (``energy.CONVENTIONS``).

    Attributes:
        per_inference: mean energy per inference (mJ) and its spread.
        macs, sops, mask_ops: operations per inference charged at E_MAC, at E_AC, and at 0.
        layers: per-layer charges per inference, in execution order.
    """

    per_inference: EnergySpread
    macs: float
    sops: float
    mask_ops: float
    layers: list[LayerEnergy]

    @property
    def mj(self) -> float:
        """Mean energy per inference in mJ (= ``per_inference.mean``)."""
        return self.per_inference.mean

    def to_json(self) -> dict:
        return {"per_sample_mJ": self.per_inference.to_json(), "mJ": self.mj, "macs": self.macs,
                "sops": self.sops, "mask_ops": self.mask_ops,
                "layers": [e.to_dict() for e in self.layers]}


@dataclass(frozen=True)
class OpCounts:
    """Counted operations: ``records`` summed over ``samples`` inferences (merged by layer)."""

    records: list[OpRecord]
    samples: int

    @property
    def dense_macs(self) -> float:
        """Dense multiply-adds per inference, mask operations left out."""
        return sum(r.dense_macs for r in self.records if r.kind != "mask") / self.samples

    def layers(self) -> list[dict]:
        """Per layer, per inference: ``OpRecord.to_dict()`` with ``dense_macs`` and ``events``
        divided by the number of samples."""
        n = self.samples
        return [{**r.to_dict(), "dense_macs": r.dense_macs / n, "events": r.events / n}
                for r in self.records]

    def to_json(self) -> dict:
        return {"dense_macs": self.dense_macs, "layers": self.layers()}


@dataclass(frozen=True)
class FiringSummary:
    """Firing of the spiking neuron layers (``FiringRates``) over every profiled sample.

    Attributes:
        mean_rate: spikes / neuron outputs over all layers.
        layers: name -> ``{rate, rate_per_step, spikes, elements, router}``, execution order.
        silent_layers: the layers with 0 spikes (``health.silent_layers``).
    """

    mean_rate: float
    layers: dict[str, dict]
    silent_layers: list[str]

    def to_json(self) -> dict:
        return {"mean_rate": self.mean_rate, "layers": self.layers,
                "silent_layers": self.silent_layers}


@dataclass(frozen=True)
class Accuracy:
    """Top-1 in percent over the ``n`` labelled samples."""

    top1: float
    n: int

    def to_json(self) -> dict:
        return {"top1": self.top1, "n": self.n}


_SOURCE = ("model", "data", "split", "weights", "params")


@dataclass(frozen=True)
class ProfileResult:
    """One profile: what ``profile_model`` measured, plus where it came from.

    Attributes:
        samples: samples measured; ``time_steps``: T of the forwards (``"T"`` in JSON).
        cost_table, first_layer_once, spiking: how the energy was charged
            (``first_layer_once``: as resolved from ``first_layer``, the mode asked for).
        ssa_order: SSA's product order while counting (``layers.kernels.SSA_ORDERS``).
        batch_size, spread_unit: the batches of the main pass and what the spread is over.
        energy: per convention, aliases included (``"paper"`` -> ``"events"``); ``ops``: counted operations; ``firing``: neuron layers.
        routers: router name -> ``{expert_rate, expert_rate_per_step, expert_usage,
            routed_to_none, num_experts}`` (``FiringRateMonitor``).
        audit: layers whose input is not binary (``energy.audit``), [] for an ANN.
        warnings: a list of ``ProfileWarning``, the most serious first; [] when every layer
            fired.
        accuracy: top-1 over the labelled samples, None without labels.
        model, data, split, weights, params: where the measurement came from (the engine sets
            them with ``dataclasses.replace``); None when not known.
    """

    samples: int
    time_steps: int
    cost_table: CostTable
    first_layer_once: bool
    spiking: bool
    batch_size: int
    spread_unit: str
    energy: dict[str, ConventionEnergy]
    ops: OpCounts
    firing: FiringSummary
    routers: dict[str, dict]
    audit: list[dict]
    warnings: list[ProfileWarning] = field(default_factory=list)
    accuracy: Accuracy | None = None
    first_layer: str = "auto"
    ssa_order: str = "auto"
    model: str | None = None
    data: str | None = None
    split: str | None = None
    weights: str | None = None
    params: int | None = None

    def to_json(self) -> dict:
        """The ``profile.json`` dict (module docstring): JSON-ready, keys in their order."""
        t = self.cost_table
        out = {k: getattr(self, k) for k in _SOURCE if getattr(self, k) is not None}
        out.update({
            "samples": self.samples,
            "T": self.time_steps,
            "cost_table": {"name": t.name, "e_mac_pj": t.e_mac_pj, "e_ac_pj": t.e_ac_pj,
                           "source": t.source},
            "first_layer": self.first_layer,
            "first_layer_once": self.first_layer_once,
            "ssa_order": self.ssa_order,
            "spiking": self.spiking,
            "batch_size": self.batch_size,
            "spread_unit": self.spread_unit,
            "energy": {c: e.to_json() for c, e in self.energy.items() if c not in ALIASES},
            "energy_aliases": {a: c for a, c in ALIASES.items() if a in self.energy},
            "ops": self.ops.to_json(),
            "firing": self.firing.to_json(),
            "routers": self.routers,
            "audit": self.audit,
            "warnings": [w.to_dict() for w in self.warnings],
        })
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy.to_json()
        return out
