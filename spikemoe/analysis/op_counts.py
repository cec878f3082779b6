"""Per-layer operation counts of one forward pass, for any ``nn.Module``.

Built on SpikingJelly 2.0's ``op_counter``: ``LayerOpCounter`` is one of its counters (a
``BaseCounter``: it also runs inside its ``DispatchCounterMode``) that sees every aten matmul /
convolution, names the innermost module running it (the "layer") and counts, as its SynOp
rules do, the accumulates that spikes trigger. For each Linear / Conv /
activation-by-activation matmul it keeps one record of what the layer did
(``op_record.OpRecord``, which says what each field counts).

Each activation-by-activation matmul is its own record, named ``<module>#<i>`` for the
i-th such product (1-based) that module runs in a forward: SSA's ``Q K^T`` (spike by
spike, binary) and ``(Q K^T) V`` (spike counts by spikes) differ in kind, and one
merged record would charge the binary one as MACs under the ``strict`` convention.

Element-wise products of two spike tensors outside neurons (SEMM's ``R (.) O`` and
``G (.) Z2``, SDSA's ``Q (.) KV``) are counted as ``mask_ops`` (one AND per output). A sum
over an axis of such a product is a record of kind ``"sum"``: SDSA's column sum
``SUM_n K (.) V`` (Yao et al., NeurIPS 2023, eq. 10) accumulates one addition per nonzero
entry (``events``), which every convention charges as ACs.
BatchNorm is not counted: at inference it folds into the preceding layer's weights.

``count_operations(..., shapes_only=True)`` runs on meta tensors (no data, no arithmetic):
only the shapes are recorded (``dense_macs``, ``bias_adds``, ``first``), the dense operation
table that ``rate_energy`` charges with published firing rates.

Cost (``benchmarks/bench_profile.py``): ``count_operations`` hands the counter the ops it
counts through a dispatch mode of its own (``op_dispatch``: SpikingJelly's costs twice as
much), and an operand's values are read in two to four cheap passes (``operand_stats``; a
convolution's events without running it again). ``per_sample=(T, B)`` also keeps each
sample's records of a batch (``sample_records``), as ``layer_records`` would be had it run
alone: ``profile_model`` reads its spread from them.
"""
from __future__ import annotations

import weakref
from collections.abc import Iterable
from math import prod

import torch
from spikingjelly.activation_based.neuron import BaseNode
from spikingjelly.activation_based.op_counter import BaseCounter
from torch import nn

from .op_dispatch import run_counted
from .op_record import OpRecord
from .operand_stats import OperandStats, nonzero, operand_stats, operation_events, shared_layout

__all__ = ["LayerOpCounter", "OpRecord", "count_operations"]

aten = torch.ops.aten

# op -> (kind, indices of the two operands)
_MATMULS = {
    aten.mm.default: ("matmul", (0, 1)),
    aten.addmm.default: ("matmul", (1, 2)),
    aten.bmm.default: ("matmul", (0, 1)),
    aten.baddbmm.default: ("matmul", (1, 2)),
    aten.convolution.default: ("conv", (0, 1)),
}
_MASKS = (aten.mul.Tensor,)
_SUMS = (aten.sum.dim_IntList,)
_COUNTED = frozenset((*_MATMULS, *_MASKS, *_SUMS))
# leaf modules that run none of those (BatchNorm folds into the weights at inference), run
# outside the counting mode (``op_dispatch.run_counted``)
_QUIET = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
          nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
          nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
          nn.modules.dropout._DropoutNd, nn.Identity)


def _storage_key(t: torch.Tensor) -> int:
    """Which storage ``t`` views: its address; on the meta device (every address 0) the
    storage object's own identity."""
    storage = t.untyped_storage()
    return storage._cdata if t.is_meta else storage.data_ptr()


def _dense_macs(func, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor,
                args: tuple) -> int:
    if func is aten.convolution.default:
        if args[6]:  # transposed, weight [C_in, C_out / groups, k_h, k_w]: per input element
            return a.numel() * prod(b.shape[1:])
        return out.numel() * prod(b.shape[1:])  # per output: (C_in / groups) k_h k_w
    if a.ndim == 3:  # bmm / baddbmm: [b, m, k] @ [b, k, n]
        return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    return a.shape[0] * a.shape[1] * b.shape[1]  # [m, k] @ [k, n]


class LayerOpCounter(BaseCounter):
    """A SpikingJelly ``BaseCounter`` that keeps one ``OpRecord`` per layer (module scope).

    Use through ``count_operations`` or inside ``DispatchCounterMode([counter])`` after
    ``counter.bind(model)``; call ``counter.new_forward()`` before each forward.

    It sees every aten op (``has_rule`` is always true) so that, inside SpikingJelly's mode,
    it knows when a spiking neuron has run (then no later op is the first layer); ops inside
    neurons are not counted: neuron updates are not synaptic operations.

    Args:
        shapes_only: record only what the shapes give (``count_operations``).
        per_sample: ``(T, B)`` of the forward: also keep samples' own records
            (``sample_records``), read from the batch as ``operand_stats.sample_layout``
            lays the samples out.
        keep: which samples' records (indices in the batch; default all B).
    """

    def __init__(self, shapes_only: bool = False, per_sample: tuple[int, int] | None = None,
                 keep: Iterable[int] | None = None) -> None:
        super().__init__()
        self.shapes_only = shapes_only
        self.rules = {func: (lambda *a: 0) for func in _COUNTED}
        self.ignore_modules = []  # neurons are recognised in ``count`` (see the docstring)
        self.ops: dict[tuple[str, str], OpRecord] = {}
        self.per_sample = per_sample
        # sample (index in the batch) -> its records, as ``ops``; None: not asked or not
        # possible here
        self.sample_ops: dict[int, dict[tuple[str, str], OpRecord]] | None = (
            {b: {} for b in (range(per_sample[1]) if keep is None else keep)}
            if per_sample and not shapes_only else None)
        self.unattributed: str | None = None  # why the per-sample records stopped
        # layers charged by the nonzero fraction of an input with negative entries: not
        # spikes, counts or their means but an ANN's features, whose exact zeros can depend
        # on float rounding, hence on the batch size
        self.signed_inputs: list[str] = []
        self._weights: set[int] = set()
        self._root = ""
        self._first_pending = True
        self._matmul_index: dict[str, int] = {}
        self._masks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._mask_groups: dict[int, list[bool]] = {}  # id(mask output) -> counted per group

    def has_rule(self, func) -> bool:
        return True

    def record(self, scope: str, func, value: int) -> None:
        """Counts live in ``self.ops``; SpikingJelly's per-scope records stay empty."""

    def bind(self, model: nn.Module) -> LayerOpCounter:
        """Remember ``model``'s parameters (to tell weights from activations) and its name."""
        self._weights = {_storage_key(p) for p in model.parameters()}
        self._root = type(model).__name__
        return self

    def new_forward(self) -> None:
        self._first_pending = True
        self._matmul_index = {}

    def neuron_ran(self) -> None:
        self._first_pending = False  # later layers read spikes

    def layer_records(self) -> list[OpRecord]:
        return list(self.ops.values())

    def sample_records(self) -> dict[int, list[OpRecord]] | None:
        """Per kept sample of the batch (``per_sample``, ``keep``), its records as
        ``layer_records`` would give them had it run alone; None when not asked, or when an
        op's operands do not lay their samples out as ``sample_layout`` reads them
        (``unattributed`` says which)."""
        if self.sample_ops is None:
            return None
        return {b: list(ops.values()) for b, ops in self.sample_ops.items()}

    def _is_weight(self, t: torch.Tensor) -> bool:
        return _storage_key(t) in self._weights

    def _layer(self, parent_names) -> str:
        name = max(parent_names, key=len) if parent_names else "Global"
        if name == self._root or name == "Global":
            return "(model)"
        return name[len(self._root) + 1:] if name.startswith(self._root + ".") else name

    def count(self, func, args, kwargs, out, active_modules=None, parent_names=None) -> int:
        if any(isinstance(m, BaseNode) for m in active_modules or ()):
            self.neuron_ran()
            return 0
        if func not in _COUNTED:
            return 0
        layer = self._layer(parent_names)
        if self.shapes_only and func not in _MATMULS:
            return 0  # masks and sums cost nothing to look up from shapes alone
        if func in _MASKS:
            self._count_mask(layer, args, out)
        elif func in _SUMS:
            self._count_sum(layer, args[0])
        else:
            self._count_matmul(func, layer, args, out)
        return 0

    # ------------------------------------------------------- per sample of the batch

    def _stop_samples(self, why: str) -> None:
        self.sample_ops, self.unattributed = None, why

    def _layout(self, layer: str, tensors, rows: bool = False,
                stop: bool = True) -> tuple[int, int] | None:
        """``shared_layout`` of ``tensors`` when counting per sample; None when not (any more)
        or when none fits, which stops the per-sample records (unless ``stop=False``)."""
        layout = None if self.sample_ops is None else shared_layout(tensors, *self.per_sample,
                                                                      rows)
        if layout is None and stop and self.sample_ops is not None:
            self._stop_samples(f"{layer}: operands {[tuple(t.shape) for t in tensors]}")
        return layout

    def _per_sample(self, layout, layer: str, *counts: int):
        """``(records per sample, counts / B)`` for counts that follow from the shapes; None
        when not counting per sample, or when a count does not split evenly."""
        if layout is None or self.sample_ops is None:
            return None
        batch = self.per_sample[1]
        if any(c % batch for c in counts):
            self._stop_samples(f"{layer}: counts {counts} do not split over {batch} samples")
            return None
        return self.sample_ops, [c // batch for c in counts]

    @staticmethod
    def _record(ops: dict, layer: str, kind: str) -> OpRecord:
        return ops.setdefault((layer, kind), OpRecord(layer, kind))

    @staticmethod
    def _stats(t: torch.Tensor, layout: tuple[int, int] | None) -> OperandStats:
        return operand_stats(t, None if layout is None else t.reshape(*layout, -1))

    # ------------------------------------------------------------------ the ops

    def _count_matmul(self, func, layer: str, args, out) -> None:
        kind, (ia, ib) = _MATMULS[func]
        a, b = args[ia], args[ib]
        a_weight, b_weight = self._is_weight(a), self._is_weight(b)
        acts = [t for t, w in ((a, a_weight), (b, b_weight)) if not w]
        if kind == "matmul" and len(acts) == 1:
            kind = "linear"
        if not acts:  # weight x weight (e.g. a folded product): not an inference-time op
            return
        if kind == "matmul":  # one record per activation product of the module
            i = self._matmul_index[layer] = self._matmul_index.get(layer, 0) + 1
            layer = f"{layer}#{i}"
        conv = func is aten.convolution.default
        dense = _dense_macs(func, a, b, out, args)
        bias = args[0] if func is aten.addmm.default or func is aten.baddbmm.default else (
            args[2] if conv else None)
        bias_adds = out.numel() if torch.is_tensor(bias) else 0
        first, self._first_pending = self._first_pending, False
        rec = self._record(self.ops, layer, kind)
        if self.shapes_only:
            self._add_matmul(rec, dense, bias_adds, first)
            return
        # per sample only where the activations' leading axes hold the samples
        if self.sample_ops is not None and not (
                (b_weight and not a_weight and not args[6]) if conv else
                b_weight if kind == "linear" else a.dim() == 3):
            self._stop_samples(f"{layer}: a {kind} whose rows are not the samples")
        layout = self._layout(layer, acts, rows=conv)
        stats = [self._stats(t, layout) for t in acts]
        groups = range(len(stats[0].binary))
        binary = [all(s.binary[g] for s in stats) for g in groups]
        counts = [binary[g] or all(s.integer[g] for s in stats) for g in groups]
        events = (operation_events(func, a, b, a_weight, b_weight, out, args, stats, binary,
                                   layout) if any(counts) else None)
        if not (all(counts) or first) and any(s.signed for s in stats):
            self.signed_inputs.append(layer)
        elements = [t.numel() for t in acts]
        self._add_matmul(rec, dense, bias_adds, first, all(binary), all(counts),
                         [sum(s.nonzero) for s in stats], elements,
                         [s.all_binary for s in stats], sum(events) if all(counts) else 0)
        split = self._per_sample(layout, layer, dense, bias_adds, *elements)
        for g, ops in (split[0].items() if split else ()):
            self._add_matmul(self._record(ops, layer, kind), *split[1][:2], first, binary[g],
                             counts[g], [s.nonzero[g] for s in stats], split[1][2:],
                             [s.binary[g] for s in stats], events[g] if counts[g] else 0)

    @staticmethod
    def _add_matmul(rec: OpRecord, dense: int, bias_adds: int, first: bool,
                    binary: bool = True, integer: bool = True, nonzero_: list[int] = (),
                    elements: list[int] = (), operand_binary: list[bool] = (),
                    events: int = 0) -> None:
        rec.calls += 1
        rec.dense_macs += dense
        rec.bias_adds += bias_adds
        rec.first |= first
        if not elements:  # shapes only
            return
        rec.binary &= binary
        rec.integer &= integer  # binary implies integer
        rec.input_elements += sum(elements)
        rec.input_nonzero += sum(nonzero_)
        rec._add_operands(nonzero_, elements, operand_binary)
        rec.events += events

    def _count_mask(self, layer: str, args, out) -> None:
        a, b = args[0], args[1] if len(args) > 1 else None
        if not (torch.is_tensor(b) and a.ndim and b.ndim):
            return
        layout = self._layout(layer, (a, b), stop=False)
        sa = self._stats(a, layout)
        if not any(sa.binary):  # not a mask (e.g. a scale): nothing to count, per sample or not
            return
        if layout is None and self.sample_ops is not None:
            self._stop_samples(f"{layer}: a mask of operands {tuple(a.shape)}, {tuple(b.shape)}")
        sb = self._stats(b, layout)
        counted = [x and y for x, y in zip(sa.binary, sb.binary)]  # per group
        if not any(counted):
            return
        self._masks[id(out)] = out  # a sum over it is an accumulate (``_count_sum``)
        self._mask_groups[id(out)] = counted
        if all(counted):
            self._add_mask(self._record(self.ops, layer, "mask"), out.numel(),
                           a.numel() + b.numel(), sum(sa.nonzero) + sum(sb.nonzero))
        split = self._per_sample(layout, layer, out.numel(), a.numel() + b.numel())
        for g, ops in (split[0].items() if split else ()):
            if counted[g]:
                self._add_mask(self._record(ops, layer, "mask"), *split[1],
                               sa.nonzero[g] + sb.nonzero[g])

    @staticmethod
    def _add_mask(rec: OpRecord, outputs: int, elements: int, nonzero_: int) -> None:
        rec.calls += 1
        rec.dense_macs += outputs  # one AND per output element
        rec.input_elements += elements
        rec.input_nonzero += nonzero_

    def _count_sum(self, layer: str, x) -> None:
        """A sum over an axis of a mask (SDSA's ``SUM_n K (.) V``): one AC per nonzero entry."""
        if not torch.is_tensor(x) or self._masks.get(id(x)) is not x:
            return
        counted = self._mask_groups[id(x)]
        layout = self._layout(layer, (x,))  # counted per sample when the mask was
        nz = nonzero(x, None if layout is None else x.reshape(*layout, -1))
        if all(counted):
            self._add_sum(self._record(self.ops, layer, "sum"), sum(nz), x.numel())
        split = self._per_sample(layout, layer, x.numel())
        for g, ops in (split[0].items() if split else ()):
            if counted[g]:
                self._add_sum(self._record(ops, layer, "sum"), nz[g], split[1][0])

    @staticmethod
    def _add_sum(rec: OpRecord, nonzero_: int, elements: int) -> None:
        rec.calls += 1
        rec.dense_macs += elements  # one addition per entry if dense
        rec.input_elements += elements
        rec.input_nonzero += nonzero_
        rec.events += nonzero_
        rec._add_operands([nonzero_], [elements], [True])


@torch.no_grad()
def count_operations(model: nn.Module, x: torch.Tensor, shapes_only: bool = False, *,
                     per_sample: tuple[int, int] | None = None,
                     keep: Iterable[int] | None = None) -> tuple[LayerOpCounter, object]:
    """Run ``model(x)`` once under a new counter; returns ``(counter, model output)``.

    ``shapes_only=True``: record only what the shapes give (``dense_macs``, ``bias_adds``,
    ``first``); for a model and input on the ``meta`` device (no arithmetic runs).
    ``per_sample=(T, B)``: also the records of each sample (of those in ``keep``) as if it
    had run alone (``counter.sample_records()``).

    Spiking neurons run with the counting mode switched off (their updates are not synaptic
    operations, and in a spiking transformer they are most of the aten calls, so this is
    what keeps counting cheap); entering one tells the counter that later layers read spikes.
    """
    counter = LayerOpCounter(shapes_only, per_sample, keep).bind(model)
    counter.new_forward()
    out = run_counted(model, x, counter, _COUNTED, BaseNode, counter.neuron_ran, _QUIET)
    return counter, out
