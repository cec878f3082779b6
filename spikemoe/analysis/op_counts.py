"""Per-layer operation counts of one forward pass, for any ``nn.Module``.

Built on SpikingJelly 2.0's ``op_counter``: its ``DispatchCounterMode`` intercepts every
aten matmul / convolution and names the innermost module running it (the "layer"), and
its SynOp rules count the accumulates that spikes trigger. For each Linear / Conv /
activation-by-activation matmul this records:

    dense_macs   multiply-adds as if dense (the papers' "FLOPs"): m k n for mm,
                 b m k n for bmm, numel(out) (C_in / groups) k_h k_w for a convolution
    input_rate   nonzero fraction of its activation input(s)  (fr_l of the papers)
    binary       every activation input was in {0, 1}
    integer      every activation input was a non-negative integer (a spike count, e.g.
                 a spike-sum residual), binary included
    events       accumulates triggered by the spikes, for integer-valued inputs: the same
                 op run with every weight replaced by ones (bias dropped) and summed, so an
                 input of value n triggers n accumulates per synapse it reaches. On binary
                 input this is SpikingJelly's SynOp count (= fr * dense_macs for a Linear;
                 a convolution leaves out padded positions; a spike-by-spike matmul counts
                 coincident pairs); tests check the agreement with ``SynOpCounter``.
    first        it consumed the model input: the first matmul/conv of a forward, if no
                 spiking neuron ran before it (a net that starts with a neuron, e.g. an
                 input-encoding LIF, has no first layer: its first synapses read spikes)
    bias_adds    additions of a bias (one per output element of a layer with a bias):
                 Spikingformer's counting tool adds them to a layer's operations
    operand_*    per activation operand (1 for a Linear / Conv, 2 for a matmul of two
                 activations): nonzero entries, entries, all binary. ``literal_rate`` reads
                 them: the rate of the spike operand (the sparser one when both are spikes)

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

"""
from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass, field
from math import prod

import torch
from spikingjelly.activation_based.neuron import BaseNode
from spikingjelly.activation_based.op_counter import BaseCounter, DispatchCounterMode
from torch import nn

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


@dataclass
class OpRecord:
    """Counts of one layer (all its calls in the forwards seen), see the module docstring."""

    layer: str
    # "linear" (weight matmul), "conv", "matmul" (activation x activation), "mask" (AND of
    # two spike tensors), "sum" (a sum over an axis of a mask: SDSA's column sum)
    kind: str
    calls: int = 0
    dense_macs: int = 0
    input_elements: int = 0
    input_nonzero: int = 0
    events: int = 0
    binary: bool = True
    integer: bool = True
    first: bool = False
    bias_adds: int = 0
    operand_nonzero: list[int] = field(default_factory=list)
    operand_elements: list[int] = field(default_factory=list)
    operand_binary: list[bool] = field(default_factory=list)

    @property
    def input_rate(self) -> float:
        return self.input_nonzero / self.input_elements if self.input_elements else 0.0

    @property
    def operand_rates(self) -> list[float]:
        """Nonzero fraction of each activation operand."""
        return [nz / n if n else 0.0 for nz, n in zip(self.operand_nonzero,
                                                       self.operand_elements, strict=True)]

    @property
    def literal_rate(self) -> float:
        """The papers' ``fr_l``: the nonzero fraction of the layer's spike input.

        One operand: its rate. Two (a matmul of activations): the rate of the binary operand,
        the smaller when both are binary (Spikingformer charges ``K^T V`` at
        ``min(fr_K, fr_V)`` and ``Q (K^T V)`` at ``fr_Q``, ``imagenet/energy_consumption_
        calculation/flops_counter.py``); the overall nonzero fraction when neither is."""
        spikes = [r for r, b in zip(self.operand_rates, self.operand_binary, strict=True) if b]
        return min(spikes) if spikes else self.input_rate

    def merge(self, other: OpRecord) -> None:
        """Add ``other`` (the same layer in another forward) into this record."""
        self.calls += other.calls
        self.dense_macs += other.dense_macs
        self.input_elements += other.input_elements
        self.input_nonzero += other.input_nonzero
        self.events += other.events
        self.binary &= other.binary
        self.integer &= other.integer
        self.first |= other.first
        self.bias_adds += other.bias_adds
        self._add_operands(other.operand_nonzero, other.operand_elements, other.operand_binary)

    def _add_operands(self, nonzero: list[int], elements: list[int],
                      binary: list[bool]) -> None:
        if not self.operand_elements:
            self.operand_nonzero = [0] * len(elements)
            self.operand_elements = [0] * len(elements)
            self.operand_binary = [True] * len(elements)
        for i, (nz, n, b) in enumerate(zip(nonzero, elements, binary, strict=True)):
            self.operand_nonzero[i] += nz
            self.operand_elements[i] += n
            self.operand_binary[i] &= b

    def to_dict(self) -> dict:
        return {**asdict(self), "input_rate": self.input_rate,
                "literal_rate": self.literal_rate}


def _storage_key(t: torch.Tensor) -> int:
    """Which storage ``t`` views: its address; on the meta device (every address 0) the
    storage object's own identity."""
    storage = t.untyped_storage()
    return storage._cdata if t.is_meta else storage.data_ptr()


def _is_binary(x: torch.Tensor) -> bool:
    return x.dtype == torch.bool or bool(x.eq(0).logical_or_(x.eq(1)).all())


def _is_count(x: torch.Tensor) -> bool:
    """Non-negative integer values (spike counts)."""
    if x.dtype == torch.bool:
        return True
    return bool((x >= 0).all()) and bool((x == torch.floor(x)).all())


def _dense_macs(func, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor,
                args: tuple) -> int:
    if func is aten.convolution.default:
        if args[6]:  # transposed, weight [C_in, C_out / groups, k_h, k_w]: per input element
            return a.numel() * prod(b.shape[1:])
        return out.numel() * prod(b.shape[1:])  # per output: (C_in / groups) k_h k_w
    if a.ndim == 3:  # bmm / baddbmm: [b, m, k] @ [b, k, n]
        return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    return a.shape[0] * a.shape[1] * b.shape[1]  # [m, k] @ [k, n]


def _untracked():
    """Run aten ops without re-entering the counting mode (as SpikingJelly's rules do)."""
    return torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.Python))


def _events(func, a: torch.Tensor, b: torch.Tensor, a_weight: bool, b_weight: bool,
            args: tuple) -> int:
    """Accumulates triggered by integer-valued activations: ``sum(op(acts, ones for weights))``.

    Computed without running the op again at full size (the profile must stay cheap):
    ``sum(X @ W) -> sum(X) * n`` for ``[m, k] @ [k, n]``; ``sum(A @ B) = sum_k colsum(A)_k *
    rowsum(B)_k`` for two activations; a convolution sums its input over the channels of
    each group and convolves that with a single ones kernel per group, times C_out / groups
    (exact, padding and stride included).
    """
    with torch.no_grad(), _untracked():
        if func is aten.convolution.default:
            if a_weight or not b_weight or args[6]:  # unusual (transposed, weight as input)
                a = torch.ones_like(a, dtype=torch.float64) if a_weight else a.double()
                b = torch.ones_like(b, dtype=torch.float64) if b_weight else b.double()
                return int(round(float(aten.convolution.default(a, b, None, *args[3:9]).sum())))
            groups = args[8]
            c_out = b.shape[0]
            # float32 is exact here: integer values, partial sums far below 2^24 (a channel
            # sum times a kernel area); only the final total is taken in float64
            x = a.float()  # [B, C_in, *S] -> [B, g, C_in / g, *S] -> [B, g, *S]
            x = x.reshape(x.shape[0], groups, x.shape[1] // groups, *x.shape[2:]).sum(2)
            ones = torch.ones(groups, 1, *b.shape[2:], dtype=x.dtype)
            out = aten.convolution.default(x, ones, None, *args[3:8], groups)
            return int(round(float(out.sum(dtype=torch.float64)) * (c_out // groups)))
        if b_weight:
            return int(round(float(a.sum(dtype=torch.float64)) * b.shape[-1]))
        if a_weight:
            return int(round(float(b.sum(dtype=torch.float64)) * a.shape[-2]))
        col = a.sum(-2, dtype=torch.float64)  # [(b,) k]
        row = b.sum(-1, dtype=torch.float64)  # [(b,) k]
        return int(round(float((col * row).sum())))


class LayerOpCounter(BaseCounter):
    """A SpikingJelly ``BaseCounter`` that keeps one ``OpRecord`` per layer (module scope).

    Use through ``count_operations`` or inside ``DispatchCounterMode([counter])`` after
    ``counter.bind(model)``; call ``counter.new_forward()`` before each forward.

    It sees every aten op (``has_rule`` is always true) so that it knows when a spiking
    neuron has run (then no later op is the first layer); ops inside neurons are not
    counted: neuron updates are not synaptic operations.
    """

    def __init__(self, shapes_only: bool = False) -> None:
        super().__init__()
        self.shapes_only = shapes_only
        self.rules = {func: (lambda *a: 0) for func in (*_MATMULS, *_MASKS, *_SUMS)}
        self.ignore_modules = []  # neurons are recognised in ``count`` (see the docstring)
        self.ops: dict[tuple[str, str], OpRecord] = {}
        self._weights: set[int] = set()
        self._root = ""
        self._first_pending = True
        self._matmul_index: dict[str, int] = {}
        self._masks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

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

    def _is_weight(self, t: torch.Tensor) -> bool:
        return _storage_key(t) in self._weights

    def _layer(self, parent_names) -> str:
        name = max(parent_names, key=len) if parent_names else "Global"
        if name == self._root or name == "Global":
            return "(model)"
        return name[len(self._root) + 1:] if name.startswith(self._root + ".") else name

    def count(self, func, args, kwargs, out, active_modules=None, parent_names=None) -> int:
        if any(isinstance(m, BaseNode) for m in active_modules or ()):
            self._first_pending = False  # a neuron ran: later layers read spikes
            return 0
        if func not in self.rules:
            return 0
        layer = self._layer(parent_names)
        if self.shapes_only and func not in _MATMULS:
            return 0  # masks and sums cost nothing to look up from shapes alone
        if func in _MASKS:
            self._count_mask(layer, args, out)
            return 0
        if func in _SUMS:
            self._count_sum(layer, args[0])
            return 0
        kind, (ia, ib) = _MATMULS[func]
        a, b = args[ia], args[ib]
        a_weight, b_weight = self._is_weight(a), self._is_weight(b)
        acts = [t for t, w in ((a, a_weight), (b, b_weight)) if not w]
        if kind == "matmul" and len(acts) == 1:
            kind = "linear"
        if not acts:  # weight x weight (e.g. a folded product): not an inference-time op
            return 0
        if kind == "matmul":  # one record per activation product of the module
            i = self._matmul_index[layer] = self._matmul_index.get(layer, 0) + 1
            layer = f"{layer}#{i}"
        rec = self.ops.setdefault((layer, kind), OpRecord(layer, kind))
        rec.calls += 1
        rec.dense_macs += _dense_macs(func, a, b, out, args)
        bias = args[0] if func is aten.addmm.default or func is aten.baddbmm.default else (
            args[2] if func is aten.convolution.default else None)
        if torch.is_tensor(bias):
            rec.bias_adds += out.numel()
        if self._first_pending:
            rec.first, self._first_pending = True, False
        if self.shapes_only:
            return 0
        binary = all(_is_binary(t) for t in acts)
        counts = binary or all(_is_count(t) for t in acts)  # binary implies counts
        rec.binary &= binary
        rec.integer &= counts
        nonzero = [int(t.count_nonzero()) for t in acts]
        rec.input_elements += sum(t.numel() for t in acts)
        rec.input_nonzero += sum(nonzero)
        rec._add_operands(nonzero, [t.numel() for t in acts], [_is_binary(t) for t in acts])
        if binary and kind == "linear":  # spikes x weights: nnz(X) * fan-out, no extra pass
            rec.events += nonzero[0] * (b.shape[-1] if b_weight else a.shape[-2])
        elif counts:
            rec.events += _events(func, a, b, a_weight, b_weight, args)
        return 0

    def _count_mask(self, layer: str, args, out) -> None:
        a, b = args[0], args[1] if len(args) > 1 else None
        if not (torch.is_tensor(b) and a.ndim and b.ndim and _is_binary(a) and _is_binary(b)):
            return
        rec = self.ops.setdefault((layer, "mask"), OpRecord(layer, "mask"))
        rec.calls += 1
        rec.dense_macs += out.numel()  # one AND per output element
        rec.input_elements += a.numel() + b.numel()
        rec.input_nonzero += int(a.count_nonzero()) + int(b.count_nonzero())
        self._masks[id(out)] = out  # a sum over it is an accumulate (``_count_sum``)

    def _count_sum(self, layer: str, x) -> None:
        """A sum over an axis of a mask (SDSA's ``SUM_n K (.) V``): one AC per nonzero entry."""
        if not torch.is_tensor(x) or self._masks.get(id(x)) is not x:
            return
        nonzero = int(x.count_nonzero())
        rec = self.ops.setdefault((layer, "sum"), OpRecord(layer, "sum"))
        rec.calls += 1
        rec.dense_macs += x.numel()  # one addition per entry if dense
        rec.input_elements += x.numel()
        rec.input_nonzero += nonzero
        rec.events += nonzero
        rec._add_operands([nonzero], [x.numel()], [True])

    def layer_records(self) -> list[OpRecord]:
        return list(self.ops.values())


@torch.no_grad()
def count_operations(model: nn.Module, x: torch.Tensor, shapes_only: bool = False
                     ) -> tuple[LayerOpCounter, object]:
    """Run ``model(x)`` once under a new counter; returns ``(counter, model output)``.

    ``shapes_only=True``: record only what the shapes give (``dense_macs``, ``bias_adds``,
    ``first``); for a model and input on the ``meta`` device (no arithmetic runs).

    Spiking neurons run with the counting mode switched off (their updates are not synaptic
    operations, and in a spiking transformer they are most of the aten calls, so this is
    what keeps counting cheap); entering one tells the counter that later layers read spikes.
    """
    from torch.utils._python_dispatch import _pop_mode_temporarily

    counter = LayerOpCounter(shapes_only).bind(model)
    counter.new_forward()
    paused: list = []

    def enter_neuron(module, args):
        counter._first_pending = False  # a neuron ran: later layers read spikes
        ctx = _pop_mode_temporarily()
        ctx.__enter__()
        paused.append(ctx)

    def leave_neuron(module, args, out):
        paused.pop().__exit__(None, None, None)

    handles = []
    for m in model.modules():
        if isinstance(m, BaseNode):
            handles.append(m.register_forward_pre_hook(enter_neuron))
            handles.append(m.register_forward_hook(leave_neuron))
    try:
        with DispatchCounterMode([counter]):
            try:
                out = model(x)
            finally:
                while paused:  # a neuron raised: restore the mode before leaving it
                    paused.pop().__exit__(None, None, None)
    finally:
        for h in handles:
            h.remove()
    return counter, out
