"""Energy per inference from published firing rates, with no forward pass over data.

Papers publish per-layer input firing rates; the dense operations of each layer follow
from the shapes alone. ``operation_table(model, x)`` runs the model once on the ``meta``
device (no arithmetic: ``count_operations(..., shapes_only=True)``) and records every
Linear / Conv (dense multiply-adds, bias additions, which one reads the model input) and
every spiking attention module's shape (T, B, N, heads, head widths, kernel).
``energy_from_rates`` charges them under a named rule:

``spikingformer``  Spikingformer's tool (zhouchenlin2096/Spikingformer,
    ``energy_consumption_calculation/flops_counter.py`` ``get_energy_cost`` and ``ops.py``): a
    layer's operations include its bias additions; a layer whose input rate is 100% (the
    first conv, the classifier head) is charged MACs, every other layer ACs = ops x rate;
    SSA per block ``T H N d^2 (fr_Q + min(fr_K, fr_V))`` ACs (order ``Q (K^T V)``);
    BatchNorm, LIF and pooling free.
``literal``  the papers' formula ``E_MAC FLOPs_first + E_AC sum_l fr_l FLOPs_l`` (no bias
    additions), attention as below.
``spikformer``  Spikformer's published ImageNet energies (Zhou et al., ICLR 2023, Table 3):
    ``E_AC x SOPs + E_MAC x FIRST_LAYER_MACS_SPIKFORMER``, the T = 4 MACs of the 512-wide
    model's 3 -> 64 3x3 first conv at 224 x 224, which the paper reuses for every width
    (7.734 / 11.577 / 21.477 mJ = 0.9 pJ x 6.82 / 11.09 / 22.09 G + 1.595 mJ). SOPs as
    ``literal``; ``spikformer_energy_mj(sops)`` applies it to a published SOP total.

Attention (``ssa_order``): ``"q(kv)"`` charges ``K^T V`` at ``min(fr_K, fr_V)`` and ``Q (K^T V)``
at ``fr_Q``, ``T H N d_k d_v`` each; ``"(qk)v"`` charges ``Q K^T`` at ``min(fr_Q, fr_K)``
(``T H N^2 d_k``) and ``(Q K^T) V`` at ``fr_V`` (``T H N^2 d_v``); ``"auto"`` the cheaper, as
``layers.kernels`` computes it. SDSA: the column sum ``SUM_n K (.) V``, ``T H N d`` at
``min(fr_K, fr_V)``; its ``Q (.) kv`` mask is free.

Rates (``load_rates``): ``{"layers": {name: rate}, "attention": {name: {"q", "k", "v"}}}``,
rates as fractions in [0, 1], names as ``operation_table`` gives them (``rates_template``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .energy import CostTable, cost_table
from .op_counts import OpRecord, count_operations

__all__ = ["FIRST_LAYER_MACS_SPIKFORMER", "RULES", "AttentionShape", "OperationTable",
           "RateEnergy", "RateLayer", "energy_from_rates", "load_rates", "operation_table",
           "rates_template", "spikformer_energy_mj"]

RULES = ("spikingformer", "spikformer", "literal")
ORDERS = ("auto", "q(kv)", "(qk)v")
# T x MACs of Spikformer-8-512's first conv: 3 -> 64 channels, 3x3, 224 x 224 outputs, T = 4
FIRST_LAYER_MACS_SPIKFORMER = 4 * 224 * 224 * 64 * 3 * 9  # 346,816,512


@dataclass(frozen=True)
class AttentionShape:
    """One spiking attention module's forward: ``steps`` = T x B, N tokens, heads."""

    name: str
    kernel: str  # "ssa" or "sdsa"
    steps: int
    tokens: int
    heads: int
    d_k: int
    d_v: int


@dataclass
class OperationTable:
    """Dense operations of one inference (``operation_table``): per layer and attention."""

    records: list[OpRecord]
    attention: list[AttentionShape]
    time_steps: int

    def layers(self) -> list[OpRecord]:
        """Linear / Conv records; the attention products are in ``attention``."""
        return [r for r in self.records if r.kind in ("linear", "conv")]


@dataclass
class RateLayer:
    """One layer's charge: dense operations, rate, MACs, ACs and energy (pJ)."""

    layer: str
    kind: str
    ops: float
    rate: float
    macs: float
    acs: float
    energy_pj: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RateEnergy:
    """Energy per inference from rates under ``rule``: totals and per layer."""

    rule: str
    cost_table: CostTable
    ssa_order: str
    layers: list[RateLayer] = field(default_factory=list)

    @property
    def macs(self) -> float:
        return sum(x.macs for x in self.layers)

    @property
    def acs(self) -> float:
        return sum(x.acs for x in self.layers)

    @property
    def mj(self) -> float:
        return sum(x.energy_pj for x in self.layers) * 1e-9

    def to_json(self) -> dict:
        t = self.cost_table
        return {"rule": self.rule, "ssa_order": self.ssa_order,
                "cost_table": {"name": t.name, "e_mac_pj": t.e_mac_pj, "e_ac_pj": t.e_ac_pj},
                "mJ": self.mj, "macs": self.macs, "acs": self.acs,
                "layers": [x.to_dict() for x in self.layers]}


def _is_attention(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("kernel", "num_heads", "head_dim"))


@torch.no_grad()
def operation_table(model: nn.Module, x: torch.Tensor, time_steps: int) -> OperationTable:
    """Dense operations of ``model(x)`` from shapes: ``model`` and ``x`` on the meta device
    (build the model under ``with torch.device("meta")``), ``x`` one sample's batch."""
    shapes: list[AttentionShape] = []
    names = {m: n for n, m in model.named_modules()}

    def grab(module, args):
        T, B, N, _ = args[0].shape  # [T, B, N, C]
        shapes.append(AttentionShape(names[module], module.kernel, T * B, N,
                                     module.num_heads, module.head_dim, module.head_dim))

    handles = [m.register_forward_pre_hook(grab) for m in model.modules() if _is_attention(m)]
    try:
        counter, _ = count_operations(model, x, shapes_only=True)
    finally:
        for h in handles:
            h.remove()
    return OperationTable(counter.layer_records(), shapes, time_steps)


def rates_template(table: OperationTable) -> dict:
    """A rates file for ``table`` with every rate to fill in (first layer: 1.0)."""
    return {"layers": {r.layer: (1.0 if r.first else None) for r in table.layers()},
            "attention": {a.name: {"q": None, "k": None, "v": None} for a in table.attention}}


def load_rates(path: str | Path) -> dict:
    """Read a rates JSON file (module docstring); errors name the file and what to fix."""
    path = Path(path)
    try:
        rates = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"rates file {path} does not exist; write one (`spikemoe "
                                "energy MODEL --template` prints its skeleton)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"rates file {path} is not valid JSON ({e}); fix it or print a "
                         "fresh skeleton with `spikemoe energy MODEL --template`") from None
    if not isinstance(rates, dict) or not ({"layers", "attention", "sops"} & set(rates)):
        raise ValueError(f"rates file {path}: expected an object with \"layers\" and "
                         f"\"attention\" (or a published total \"sops\"), found "
                         f"{type(rates).__name__} {list(rates)[:5] if isinstance(rates, dict) else ''}")
    return rates


def _rate(value, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"rate of {where}: expected a fraction in [0, 1], found {value!r} "
                         "(a percentage? divide by 100)")
    return float(value)


def _attention_terms(a: AttentionShape, fq: float, fk: float, fv: float,
                     order: str) -> list[tuple[str, float, float]]:
    """``(product, dense ops, rate)`` of one attention module (module docstring)."""
    s, n, h, dk, dv = a.steps, a.tokens, a.heads, a.d_k, a.d_v
    if a.kernel == "sdsa":
        return [("sum_n K*V", s * h * n * dv, min(fk, fv))]
    if order == "auto":  # as layers.kernels.ssa_scores_times_values picks it
        order = "(qk)v" if n * (dk + dv) <= 2 * dk * dv else "q(kv)"
    if order == "q(kv)":
        return [("K^T V", s * h * n * dk * dv, min(fk, fv)), ("Q (K^T V)", s * h * n * dk * dv, fq)]
    return [("Q K^T", s * h * n * n * dk, min(fq, fk)), ("(Q K^T) V", s * h * n * n * dv, fv)]


def energy_from_rates(table: OperationTable, rates: dict, rule: str = "spikingformer",
                      costs: str = "45nm-fp32", ssa_order: str = "auto",
                      first_layer_once: bool = False) -> RateEnergy:
    """Per-layer MACs / ACs and energy per inference from ``rates`` under ``rule``.

    Args:
        table: ``operation_table`` of the model.
        rates: ``{"layers": {name: rate}, "attention": {name: {"q", "k", "v"}}}``.
        rule: one of ``RULES`` (module docstring).
        costs: cost table name (``energy.COST_TABLES``).
        ssa_order: ``"auto"``, ``"q(kv)"`` or ``"(qk)v"``.
        first_layer_once: charge the first layer once, not T times (``literal`` only; the
            published tools charge it T times).
    Raises:
        ValueError: an unknown rule or order, a layer or attention module without a rate (all
            of them named), a rate outside [0, 1].
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
    if ssa_order not in ORDERS:
        raise ValueError(f"unknown SSA order {ssa_order!r}; expected one of {ORDERS}")
    table_costs = cost_table(costs)
    layer_rates, attn_rates = rates.get("layers", {}), rates.get("attention", {})
    missing = [r.layer for r in table.layers() if layer_rates.get(r.layer) is None]
    missing += [a.name for a in table.attention
                if not all(attn_rates.get(a.name, {}).get(k) is not None for k in "qkv")]
    if missing:
        raise ValueError(f"no rate for {len(missing)} layer(s): {', '.join(missing[:8])}"
                         f"{' ...' if len(missing) > 8 else ''}. Every Linear / Conv needs "
                         "its input rate and every attention module its q, k, v rates; "
                         "`spikemoe energy MODEL --template` prints the names.")
    e_mac, e_ac = table_costs.e_mac_pj, table_costs.e_ac_pj
    out = RateEnergy(rule, table_costs, ssa_order)
    for r in table.layers():
        rate = _rate(layer_rates[r.layer], r.layer)
        ops = float(r.dense_macs + (r.bias_adds if rule == "spikingformer" else 0))
        macs = acs = 0.0
        if rule == "spikingformer":
            macs, acs = (ops, 0.0) if rate == 1.0 else (0.0, ops * rate)
        elif r.first and rule == "spikformer":
            macs = float(FIRST_LAYER_MACS_SPIKFORMER)
        elif r.first:
            macs = ops / table.time_steps if first_layer_once else ops
        else:
            acs = ops * rate
        out.layers.append(RateLayer(r.layer, r.kind, ops, rate, macs, acs,
                                    macs * e_mac + acs * e_ac))
    for a in table.attention:
        f = {k: _rate(attn_rates[a.name][k], f"{a.name}.{k}") for k in "qkv"}
        for product, ops, rate in _attention_terms(a, f["q"], f["k"], f["v"], ssa_order):
            out.layers.append(RateLayer(f"{a.name}: {product}", "attention", float(ops), rate,
                                        0.0, ops * rate, ops * rate * e_ac))
    return out


def spikformer_energy_mj(sops: float, costs: str = "45nm-fp32") -> float:
    """Spikformer's published rule on a published SOP total: ``E_AC x SOPs + E_MAC x
    FIRST_LAYER_MACS_SPIKFORMER``, in mJ."""
    t = cost_table(costs)
    return (sops * t.e_ac_pj + FIRST_LAYER_MACS_SPIKFORMER * t.e_mac_pj) * 1e-9
