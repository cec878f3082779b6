"""``OpRecord``: the counts of one layer over the forwards seen (``op_counts``), per field:

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
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["OpRecord"]


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
