"""Energy per inference from counted operations, under a named convention and cost table.

The field's estimate (Spikformer, Zhou et al., ICLR 2023; Spike-driven Transformer, Yao et al.,
NeurIPS 2023):

    E = E_MAC * FLOPs(first layer) + E_AC * sum_l SOP_l,     SOP_l = fr_l * T * FLOPs_l

with fr_l the firing rate of layer l's *input* and FLOPs_l its dense multiply-adds per
time step. Here SOP_l is counted, not estimated: ``events`` of ``op_counts.OpRecord`` (the
accumulates the spikes actually trigger, = fr_l * T * FLOPs_l for a Linear on spikes).

Two conventions, per Linear / Conv / activation-by-activation matmul:

``paper``   the first layer (the one that reads the model input) is charged as MACs;
            every other layer as SOPs: ``events`` when its input is integer-valued
            (spikes, or spike counts such as a spike-sum residual, where a count of n is
            n accumulates), else ``input_rate * dense_macs`` (what the papers' formula
            gives for a real-valued input; the audit lists these layers).
``strict``  a layer whose input is strictly binary is charged ``events`` ACs; any other
            layer (first layer, spike-sum residual, real-valued input) is charged its
            dense MACs, as Spikingformer's recount of Spikformer does.

``first_layer_once=True`` charges the first layer's MACs once instead of T times (some
papers do: a static image repeated T times gives T identical first-layer outputs); the
default charges what runs, T times.

Mask operations (element-wise AND of two spike tensors: SEMM's ``R (.) O``, EMSP's gate,
SDSA's ``Q (.) KV``) are counted and reported but charged 0 pJ, as in the papers; neuron
updates and BatchNorm (folded into the weights at inference) are not charged either.
An ANN (no binary inputs anywhere) is charged MACs for every layer in both conventions.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .op_counts import OpRecord

__all__ = ["COST_TABLES", "CONVENTIONS", "CostTable", "LayerEnergy", "audit", "layer_energy"]


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
CONVENTIONS = ("paper", "strict")


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
    is charged its dense MACs in both conventions, whatever its input sparsity."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; expected one of {CONVENTIONS}")
    dense = rec.dense_macs / samples
    macs = sops = masks = 0.0
    if rec.kind == "mask":
        masks = dense
    elif not spiking:
        macs = dense
    elif convention == "paper":
        if rec.first:
            macs = dense / time_steps if first_layer_once else dense
        elif rec.integer:
            sops = rec.events / samples
        else:
            sops = rec.input_rate * dense
    else:  # strict
        if rec.binary and not rec.first:
            sops = rec.events / samples
        else:
            macs = dense / time_steps if (rec.first and first_layer_once) else dense
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
        if r.kind == "mask" or r.binary:
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
