"""Firing rates of every spiking neuron layer, and router statistics of SEMM blocks,
accumulated as running sums over a whole evaluation set.

For a neuron layer l with output spikes S_l[t] (any shape after the time axis):

    fr_l[t] = sum(S_l[t]) / numel(S_l[t])          rate per time step, over all samples seen
    fr_l    = sum_t sum(S_l[t]) / sum_t numel(S_l[t])

(spikes are binary, so sum(S) is taken as the number of nonzero outputs; a neuron with
graded outputs would be reported by how often it emits, not by the sum of its values).

For a router neuron (declared by ``spikemoe.contract.mark_router_neuron`` with its expert
axis), with R[t, ..., e] its spikes for expert e, the counts of ``spikemoe.moe.router_counts``
are added over the batches and turned into rates by ``RouterCounts.statistics``:

    ASR_e[t]        = mean over tokens of R[t, ..., e]      the paper's router average spiking rate
    usage_e         = sum R[..., e] / sum R                 share of all routing spikes going to e
    routed_to_none  = fraction of (t, token) with R[t, token, :] = 0

Only sums of shape [T] or [T, E] are kept, never spike tensors: memory does not grow
with the number of samples. Works on any ``nn.Module``; one without spiking neurons
simply reports no layers.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

from ..contract import router_expert_axis
from ..moe.router import RouterCounts, router_counts


@dataclass
class _Sums:
    spikes: torch.Tensor  # [T] float64
    elements: torch.Tensor  # [T] float64


def _grow(t: torch.Tensor, steps: int) -> torch.Tensor:
    """Pad the time axis with zeros up to ``steps`` (runs may use different T)."""
    if t.shape[0] >= steps:
        return t
    return torch.cat([t, t.new_zeros(steps - t.shape[0], *t.shape[1:])])


@dataclass
class FiringRates:
    """The monitor's result; every figure is a plain float or list (JSON-ready)."""

    layers: dict[str, dict] = field(default_factory=dict)
    routers: dict[str, dict] = field(default_factory=dict)

    def mean_rate(self) -> float:
        """Firing rate over all neurons of all layers (element-weighted)."""
        spikes = sum(v["spikes"] for v in self.layers.values())
        elements = sum(v["elements"] for v in self.layers.values())
        return spikes / elements if elements else 0.0


class FiringRateMonitor:
    """Hooks on every spiking neuron of ``model``; use as ``with FiringRateMonitor(m) as mon``.

    The hooks are removed on exit, also when the block raises. ``mon.result()`` gives a
    ``FiringRates`` at any time; ``mon.reset()`` zeroes the sums.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.neurons = {name: m for name, m in model.named_modules() if isinstance(m, BaseNode)}
        # modules declared routers that are not neurons (an ANN controller's 0/1 choice mask,
        # e.g. a modular layer's usage probe): counted in the router table only
        self.router_probes = {name: m for name, m in model.named_modules()
                              if not isinstance(m, BaseNode) and router_expert_axis(m) is not None}
        self._handles: list = []
        self._paused = False
        self.reset()

    def reset(self) -> None:
        self._sums: dict[str, _Sums] = {}
        self._routers: dict[str, RouterCounts] = {}  # float64 sums on the CPU

    def __enter__(self) -> FiringRateMonitor:
        for name, neuron in self.neurons.items():
            self._handles.append(neuron.register_forward_hook(self._hook(name)))
        for name, probe in self.router_probes.items():
            self._handles.append(probe.register_forward_hook(self._probe_hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @contextlib.contextmanager
    def paused(self):
        """Forwards inside this block are not counted (e.g. extra runs of the same samples)."""
        self._paused = True
        try:
            yield self
        finally:
            self._paused = False

    def _hook(self, name: str):
        def hook(module, args, out):
            if not self._paused:
                self._accumulate(name, module, out.detach())
        return hook

    def _probe_hook(self, name: str):
        def hook(module, args, out):
            if not self._paused:
                with torch.no_grad():
                    self._accumulate_router(name, out.detach(), router_expert_axis(module))
        return hook

    @torch.no_grad()
    def _accumulate(self, name: str, module: nn.Module, s: torch.Tensor) -> None:
        steps = s.shape[0]
        flat = s.reshape(steps, -1)  # [T, ...] -> [T, M]
        # spikes are binary: their count is the number of nonzero outputs (exact in int32
        # below 2^31 per step, and no float64 copy of a large spike tensor); a sum of the
        # bool tensor's bytes costs a quarter of count_nonzero on CPU (bench_profile.py)
        wide = torch.int32 if flat.shape[1] < 2**31 else torch.int64
        spikes = flat.bool().view(torch.uint8).sum(1, dtype=wide).to(torch.float64).cpu()
        acc = self._sums.get(name)
        if acc is None:
            acc = self._sums[name] = _Sums(torch.zeros(steps, dtype=torch.float64),
                                           torch.zeros(steps, dtype=torch.float64))
        acc.spikes, acc.elements = _grow(acc.spikes, steps), _grow(acc.elements, steps)
        acc.spikes[:steps] += spikes
        acc.elements[:steps] += float(flat.shape[1])  # neurons per step
        axis = router_expert_axis(module)
        if axis is not None:
            self._accumulate_router(name, s, axis)

    def _accumulate_router(self, name: str, s: torch.Tensor, axis: int) -> None:
        counts = router_counts(s, axis, torch.float64)  # [T, E], [T], [T]
        steps, experts = counts.per_expert.shape
        acc = self._routers.get(name)
        if acc is None:
            acc = self._routers[name] = RouterCounts(
                torch.zeros(steps, experts, dtype=torch.float64),
                torch.zeros(steps, dtype=torch.float64), torch.zeros(steps, dtype=torch.float64))
        acc.per_expert = _grow(acc.per_expert, steps)
        acc.tokens, acc.none = _grow(acc.tokens, steps), _grow(acc.none, steps)
        acc.per_expert[:steps] += counts.per_expert.cpu()
        acc.tokens[:steps] += counts.tokens.cpu()
        acc.none[:steps] += counts.none.cpu()

    def result(self) -> FiringRates:
        out = FiringRates()
        for name, acc in self._sums.items():
            per_step = (acc.spikes / acc.elements.clamp_min(1)).tolist()
            out.layers[name] = {
                "rate": float(acc.spikes.sum() / acc.elements.sum().clamp_min(1)),
                "rate_per_step": per_step,
                "spikes": float(acc.spikes.sum()),
                "elements": float(acc.elements.sum()),
                "router": name in self._routers,
            }
        for name, acc in self._routers.items():
            stats = acc.statistics()
            total = acc.per_expert.sum()
            out.routers[name] = {
                "expert_rate": stats["expert_rate"].tolist(),
                "expert_rate_per_step": stats["expert_rate_per_step"].tolist(),
                "expert_usage": (acc.per_expert.sum(0) / total.clamp_min(1)).tolist(),
                "routed_to_none": float(stats["routed_to_none"]),
                "num_experts": int(acc.per_expert.shape[1]),
            }
        return out
