"""Energy per inference from counted operations, under a named convention and cost table.

The field's estimate (Spikformer, Zhou et al., ICLR 2023; Spike-driven Transformer, Yao et al.,
NeurIPS 2023):

    E = E_MAC * FLOPs(first layer) + E_AC * sum_l SOP_l,     SOP_l = fr_l * T * FLOPs_l

with fr_l the firing rate of layer l's *input* and FLOPs_l its dense multiply-adds per
time step (``dense_macs`` of ``op_counts.OpRecord`` already holds the T steps).

Three conventions, all always computed, per Linear / Conv / activation-by-activation matmul:

``literal`` the papers' formula as written: the first layer as MACs, every other layer as
            ``literal_rate * dense_macs`` ACs, with fr_l the FRACTION OF NONZERO inputs
            (the Spike-driven Transformer's appendix: a spike count of 2 counts once), and
            for a product of two activations the rate of its spike operand (the sparser
            one when both are spikes: Spikingformer's ``min(fr_K, fr_V)`` for ``K^T V``).
``events``  value-weighted spike counts: the first layer as MACs; every other layer as the
            accumulates its input triggers (``events``: a count of n is n accumulates per
            synapse) when that input is integer-valued, else ``input_rate * dense_macs``
            (the audit lists those layers). ``paper`` is an alias kept for old callers.
``strict``  a layer whose input is strictly binary is charged ``events`` ACs; any other
            layer (first layer, spike-sum residual, real-valued input) its dense MACs, as
            Spikingformer's recount of Spikformer does (its ``ops.spike_rate``, Nspks_max 1).

First layer: a static image repeated over T gives T identical first-layer outputs, so
``first_layer_once=True`` charges its MACs once; event frames differ per step and are charged
T times. ``profile_model`` decides from the input (``first_layer="auto"``), with an override.

Mask operations (element-wise AND of two spike tensors: SEMM's ``R (.) O``, EMSP's gate,
SDSA's ``Q (.) KV``) are counted and charged 0 pJ, as in the papers. SDSA's column sum
``SUM_n K (.) V`` is additions: a ``"sum"`` record, one AC per nonzero entry, in every
convention. Neuron updates and BatchNorm (folded into the weights at inference) are not
charged. An ANN (no binary inputs anywhere) is charged MACs for every layer.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .op_counts import OpRecord

__all__ = ["ALIASES", "COST_TABLES", "CONVENTIONS", "FIRST_LAYER", "CostTable", "LayerEnergy",
           "audit", "convention_name", "cost_table", "first_layer_mode", "layer_energy"]


@dataclass(frozen=True)
class CostTable:
    """Energy per operation in picojoules, with the source it is taken from."""

    name: str
    e_mac_pj: float
    e_ac_pj: float
    source: str


COST_TABLES = {
    "45nm-fp32": CostTable("45nm-fp32", 4.6, 0.9, "Horowitz, ISSCC 2014, 45 nm, 32-bit float"),
    "45nm-fp16": CostTable("45nm-fp16", 1.5, 0.4, "Horowitz, ISSCC 2014, 45 nm, 16-bit float"),
    "45nm-int8": CostTable("45nm-int8", 0.23, 0.03, "Horowitz, ISSCC 2014, 45 nm, 8-bit int"),
}
CONVENTIONS = ("literal", "events", "strict")
ALIASES = {"paper": "events"}  # the name ``events`` had before ``literal`` was added
FIRST_LAYER = ("auto", "once", "T-times")


def convention_name(name: str) -> str:
    """``name`` with aliases resolved; an unknown name raises, listing the valid ones."""
    name = ALIASES.get(name, name)
    if name not in CONVENTIONS:
        raise ValueError(f"unknown convention {name!r}; expected one of {CONVENTIONS} "
                         f"(or the alias {', '.join(ALIASES)})")
    return name


def first_layer_mode(value) -> str:
    """``"auto"``, ``"once"`` or ``"T-times"``; also takes ``None`` (auto), ``True`` (once)
    and ``False`` (T times), the older boolean ``first_layer_once``."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "once" if value else "T-times"
    if value not in FIRST_LAYER:
        raise ValueError(f"first layer: expected one of {FIRST_LAYER} (auto: once for a static "
                         f"image repeated over T, T times for event frames), got {value!r}")
    return value


def cost_table(name: str) -> CostTable:
    if name not in COST_TABLES:
        raise ValueError(f"unknown cost table {name!r}; expected one of {sorted(COST_TABLES)}")
    return COST_TABLES[name]


@dataclass
class LayerEnergy:
    """One layer's charged operations (per inference) and energy in picojoules."""

    layer: str
    kind: str
    dense_macs: float
    input_rate: float
    binary: bool
    integer: bool
    first: bool
    macs: float  # operations charged at E_MAC
    sops: float  # operations charged at E_AC
    mask_ops: float  # AND of two spike tensors, counted, charged 0
    energy_pj: float

    def to_dict(self) -> dict:
        return asdict(self)


def layer_energy(rec: OpRecord, convention: str, table: CostTable, samples: int = 1,
                 time_steps: int = 1, first_layer_once: bool = False,
                 spiking: bool = True) -> LayerEnergy:
    """Charge one ``OpRecord`` (counted over ``samples`` inferences) per inference.

    ``spiking=False`` (a model without spiking neurons, e.g. an ANN baseline): every layer
    is charged its dense MACs in every convention, whatever its input sparsity."""
    convention = convention_name(convention)
    dense = rec.dense_macs / samples
    macs = sops = masks = 0.0
    if rec.kind == "mask":
        masks = dense
    elif rec.kind == "sum":  # SDSA's column sum: one addition per nonzero entry
        sops = rec.events / samples
    elif rec.first:
        macs = dense / time_steps if first_layer_once else dense
    elif not spiking:
        macs = dense
    elif convention == "literal":
        sops = rec.literal_rate * dense
    elif convention == "events":
        sops = rec.events / samples if rec.integer else rec.input_rate * dense
    elif rec.binary:  # strict
        sops = rec.events / samples
    else:
        macs = dense
    energy = macs * table.e_mac_pj + sops * table.e_ac_pj
    return LayerEnergy(rec.layer, rec.kind, dense, rec.input_rate, rec.binary, rec.integer,
                       rec.first, macs, sops, masks, energy)


def audit(records: list[OpRecord]) -> list[dict]:
    """Layers whose input is not binary, each with the reason: what a reviewer checks first.

    Returns:
        One ``{"layer", "kind", "input_rate", "reason"}`` per such layer, in execution order,
        with ``reason`` one of:

        ``first layer: reads the model input (non-negative integers, e.g. event counts)``
        ``first layer: reads the model input (real-valued)`` (e.g. pixels)
        ``integer spike counts (values > 1, e.g. a spike-sum residual)``
        ``real-valued activation (not spikes)`` (e.g. a membrane-potential shortcut or a
        float feature)
    """
    out = []
    for r in records:
        if r.kind in ("mask", "sum") or r.binary:
            continue
        if r.first:
            reason = "first layer: reads the model input" + (
                " (non-negative integers, e.g. event counts)" if r.integer else
                " (real-valued)")
        elif r.integer:
            reason = "integer spike counts (values > 1, e.g. a spike-sum residual)"
        else:
            reason = "real-valued activation (not spikes)"
        out.append({"layer": r.layer, "kind": r.kind, "input_rate": r.input_rate,
                    "reason": reason})
    return out
