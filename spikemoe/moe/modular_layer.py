"""The modular layer of Modular Networks (Kirsch, Kunze, Barber, "Modular Networks: Learning to
Decompose Neural Computation", NeurIPS 2018, arXiv 1811.05249; reference code
louiskirsch/libmodular ``libmodular/layers.py`` ``modular_layer`` and ``modular.py``
``run_modules``).

M modules f_1..f_M and a controller choose K of them per input position:

    logits = W_c z + b_c                     z: the controller's features   [B, P, K, M]
    p(a_k = m | x) = softmax_m(logits_k)     K independent categoricals (the same module
                                             may be drawn in two slots)
    y = sum_{m in set(a)} f_m(x)             each distinct chosen module once (as the
                                             reference's ``run_modules``: reduce_any)

``P`` is the number of choice positions per example: 1 for a per-example choice (the
reference's dense and conv layers), N for a per-token choice (a modular MLP in a transformer).
Rows are ``B * P`` inputs, one per (example, position), in that order.

Dispatch is index-based: per module in use, the rows that chose it are gathered, the module runs
once on them, its output is scattered back (``index_add``). A layer with K of M chosen runs
about K/M of the module compute of running all M (``benchmarks/bench_modular.py``).

Where the choice comes from (``Routing.mode``, set by the model per forward):

    "stored"     M-step: each example's stored choice a*_n (``stored[index]``)
    "candidate"  E-step candidate j: j = 0 the stored choice, j >= 1 a controller sample
    "mode"       inference: the controller's mode per slot (deterministic)
    "given"      a choice handed in (tests, replays)

``controller="topk"`` is the baseline without EM: the noisy top-k gate of V-MoE
(``moe/vmoe_router.py``: logits [B, P, M], Gaussian noise of std ``noise_std / M`` in
training, gates = softmax of the noisy logits, the K largest kept, NOT renormalised, so the
controller learns through the gate values also for K = 1, where Shazeer et al.'s renormalised
gate would be constantly 1), y = sum_k gate_k f_{a_k}(x). Its balancing loss (V-MoE's
importance + load losses) is off by default (``balance_weight=0``): the claim under test is
that EM avoids module collapse without one.

The chosen-module mask ``[1, B, P, M]`` (0/1; time axis of length 1) passes through
``usage_probe``, an identity neuron declared a router (``contract.mark_router_neuron``,
expert axis -1), so ``spikemoe profile`` reports module usage per layer in its router table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..contract import AUX_LOSS, mark_router_neuron
from .vmoe_router import importance_loss, load_loss

__all__ = ["CONTROLLERS", "ROUTING_MODES", "ModularLayer", "Routing", "RoutingRecord",
           "UsageProbe", "dispatch_chosen", "selection_metrics"]

CONTROLLERS = ("em", "topk")
ROUTING_MODES = ("stored", "candidate", "mode", "given")


class RoutingRecord(NamedTuple):
    """What one modular layer chose in one forward.

    Attributes:
        choice: ``[B, P, K]`` int64 module indices.
        logp: ``[B]`` log p(a | x) of the choice, summed over positions and slots (EM
            controller; None for top-k).
    """

    choice: torch.Tensor
    logp: torch.Tensor | None


@dataclass
class Routing:
    """Per-forward routing context handed down to every modular layer (the reference's
    ``ModularContext``); the layers append their ``RoutingRecord`` in call order.

    Attributes:
        mode: one of ``ROUTING_MODES`` (module docstring).
        index: ``[B]`` training-set positions of the batch ("stored", "candidate" j = 0).
        candidate: E-step candidate number (0: the stored choice, else a controller sample).
        given: per layer in call order, ``[B, P, K]`` choices ("given").
        records: filled by the layers.
    """

    mode: str = "mode"
    index: torch.Tensor | None = None
    candidate: int = 0
    given: list[torch.Tensor] | None = None
    records: list[RoutingRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in ROUTING_MODES:
            raise ValueError(f"routing mode must be one of {ROUTING_MODES}, got {self.mode!r}")


class UsageProbe(nn.Module):
    """Identity module that shows a modular layer's chosen-module mask to measurement.

    Declared a router (``mark_router_neuron``, expert axis -1), its 0/1 input ``[1, B, P, M]``
    is counted per module in the profile's router table (``analysis.FiringRateMonitor`` hooks
    declared routers that are not neurons for that table only). It is not a neuron: an ANN
    modular net stays an ANN for the energy count. It computes nothing and holds no state.
    """

    def __init__(self) -> None:
        super().__init__()
        mark_router_neuron(self, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def dispatch_chosen(experts: nn.ModuleList, rows: torch.Tensor, choice: torch.Tensor,
                    weights: torch.Tensor | None = None) -> torch.Tensor:
    """Run each chosen module once on the rows that chose it; scatter-add the outputs.

    Args:
        experts: the M modules; each maps ``[R_m, ...] -> [R_m, ...out]``.
        rows: ``[R, ...]`` inputs, one per (example, position).
        choice: ``[R, K]`` int64 module per slot.
        weights: ``[R, K]`` gate per slot (top-k), or None: each distinct chosen module
            counts once (the reference's ``run_modules`` masks with ``reduce_any`` over slots).

    Returns:
        ``[R, ...out]``: ``sum_{m in set(choice_r)} w_rm f_m(rows_r)``; rows that chose no
        module (impossible for K >= 1) would be zero.
    """
    out = None
    for m in torch.unique(choice).tolist():  # modules in use, ascending
        hit = choice == m  # [R, K]
        sel = hit.any(dim=1).nonzero().squeeze(1)  # [R_m] rows that chose m
        y = experts[m](rows.index_select(0, sel))  # [R_m, ...out]
        if weights is not None:
            w = (weights * hit).sum(dim=1).index_select(0, sel)  # [R_m]
            y = y * w.view(-1, *([1] * (y.dim() - 1))).to(y.dtype)
        if out is None:
            out = y.new_zeros(rows.shape[0], *y.shape[1:])
        out = out.index_add(0, sel, y)  # [R, ...out]
    return out


def selection_metrics(logits: torch.Tensor, mode: torch.Tensor, num_modules: int
                      ) -> dict[str, torch.Tensor]:
    """The reference's controller statistics of one layer (detached).

    Args:
        logits: ``[B, P, K, M]`` controller logits (top-k: ``[B, P, 1, M]``).
        mode: ``[B, P, K]`` the controller's argmax per slot.

    Returns:
        ``selection_entropy_exp`` ``[]``: exp(mean over examples, positions, slots of
        H[p(a | x)]) (reference ``selection_entropy``: confidence of a choice, 1 = certain);
        ``batch_selection_entropy_exp`` ``[]``: exp(mean over slots of H[mean over the batch
        of p(a | x)]) (reference ``batch_selection_entropy``: effective modules in use);
        ``usage`` ``[M]``: fraction of (example, position)s whose argmax picks each module.
    """
    with torch.no_grad():
        logp = logits.detach().float().log_softmax(dim=-1)  # [B, P, K, M]
        p = logp.exp()
        h = -(p * logp).sum(dim=-1)  # [B, P, K]
        mean_p = p.flatten(0, 1).mean(dim=0)  # [B, P, K, M] -> [B*P, K, M] -> [K, M]
        h_batch = -(mean_p * mean_p.clamp_min(1e-30).log()).sum(dim=-1)  # [K]
        used = F.one_hot(mode, num_modules).amax(dim=-2).float()  # [B, P, K, M] -> [B, P, M]
        return {"selection_entropy_exp": h.mean().exp(),
                "batch_selection_entropy_exp": h_batch.mean().exp(),
                "usage": used.flatten(0, 1).mean(dim=0)}


class ModularLayer(nn.Module):
    """M modules, a controller choosing K per position, index-based dispatch.

    Args:
        experts: the M modules, each ``[R_m, ...] -> [R_m, ...out]`` (e.g. ``nn.Linear``,
            3x3 ``nn.Conv2d``, an MLP, a spiking MLP adapted to rows).
        controller_features: width F of the controller's input ``[B, P, F]``. The reference
            controller is one dense layer on the (flattened) layer input.
        k: modules chosen per position (``parallel_count`` in the reference).
        positions: choice positions P per example (1: per example; N: per token).
        controller: "em" (K categoricals trained by generalised EM; stored choices per
            example) or "topk" (noisy top-k gate, no stored choices; module docstring).
        noise_std: top-k only: the noise std times M (V-MoE: 1.0, i.e. std 1 / M).
        balance_weight: top-k only: weight of V-MoE's importance + load losses (0: off).
        detach_features: stop the controller's gradient at its input (False: the reference,
            whose controller loss also trains the layers below; True where a per-token joint
            log-probability, summed over many tokens, would swamp the task loss there).

    Forward: ``rows [B*P, ...]``, ``features [B, P, F]``, ``routing`` -> ``(out [B*P, ...out],
    metrics)``; appends a ``RoutingRecord`` to ``routing.records``; metrics as
    ``selection_metrics``, plus ``AUX_LOSS`` for top-k with ``balance_weight > 0``.

    Stored choices (EM): ``stored`` ``[num_examples, P, K]`` int16 on the CPU, allocated by
    ``allocate`` (``ModularEM.attach_examples``) or by loading a state dict (extra state), so a
    checkpoint holds them and a fresh model loads them.
    """

    def __init__(self, experts: list[nn.Module], controller_features: int, k: int = 1,
                 positions: int = 1, controller: str = "em", noise_std: float = 1.0,
                 balance_weight: float = 0.0, detach_features: bool = False) -> None:
        super().__init__()
        if controller not in CONTROLLERS:
            raise ValueError(f"controller must be one of {CONTROLLERS}, got {controller!r}")
        m = len(experts)
        if m < 1 or k < 1 or positions < 1:
            raise ValueError(f"a modular layer needs >= 1 module, k >= 1 and positions >= 1; "
                             f"got {m} modules, k={k}, positions={positions}")
        if controller == "topk" and k > m:
            raise ValueError(f"top-k picks k distinct modules: k={k} > {m} modules; lower k")
        if m > torch.iinfo(torch.int16).max:
            raise ValueError(f"at most 32767 modules (stored as int16), got {m}")
        self.experts = nn.ModuleList(experts)
        self.num_modules, self.k, self.positions = m, k, positions
        self.controller_kind = controller
        self.noise_std, self.balance_weight = float(noise_std), float(balance_weight)
        self.detach_features = bool(detach_features)
        self.controller = nn.Linear(controller_features, (k if controller == "em" else 1) * m)
        self.usage_probe = UsageProbe()
        self.stored: torch.Tensor | None = None

    # ------------------------------------------------------------------ stored choices

    @property
    def choice_shape(self) -> tuple[int, int]:
        """One example's choice: ``(P, K)``."""
        return (self.positions, self.k)

    def allocate(self, num_examples: int, generator: torch.Generator) -> None:
        """Stored choices ``[num_examples, P, K]``, uniformly at random (the reference's
        ``random_uniform_initializer(maxval=module_count)``)."""
        self.stored = torch.randint(0, self.num_modules, (num_examples, *self.choice_shape),
                                    generator=generator).to(torch.int16)

    def get_extra_state(self) -> torch.Tensor:
        if self.stored is None:  # not attached: an empty table, so every model has the key
            return torch.zeros(0, *self.choice_shape, dtype=torch.int16)
        return self.stored

    def set_extra_state(self, state) -> None:
        if not isinstance(state, torch.Tensor) or tuple(state.shape[1:]) != self.choice_shape:
            found = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
            raise ValueError(f"stored choices of a modular layer: expected a tensor "
                             f"[num_examples, {self.positions}, {self.k}], found {found}. The "
                             "checkpoint is from a model with other positions or k; build the "
                             "model with the checkpoint's hyperparameters.")
        self.stored = state.detach().to("cpu", torch.int16).clone() if state.numel() else None

    def stored_choice(self, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``[B, P, K]`` int64 stored choices of the examples ``index [B]``."""
        if self.stored is None:
            raise RuntimeError("this modular layer has no stored choices: the EM trainer calls "
                               "model.attach_examples(num_examples, seed) before training (or "
                               "load a checkpoint that holds them)")
        idx = index.detach().to("cpu", torch.long)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.stored.shape[0]):
            raise IndexError(f"example index out of range: expected 0..{self.stored.shape[0] - 1}"
                             f" (attach_examples' num_examples), found {int(idx.min())}.."
                             f"{int(idx.max())}")
        return self.stored[idx].to(device=device, dtype=torch.long)

    def store(self, index: torch.Tensor, chosen: torch.Tensor) -> None:
        """Write ``chosen [B, P, K]`` as the stored choices of ``index [B]``."""
        self.stored_choice(index[:0], torch.device("cpu"))  # raises if not attached
        self.stored[index.detach().to("cpu", torch.long)] = chosen.detach().to("cpu", torch.int16)

    # ------------------------------------------------------------------ forward

    def _em_choice(self, logits: torch.Tensor, routing: Routing, layer: int) -> torch.Tensor:
        mode = routing.mode
        if mode == "given":
            return routing.given[layer].to(device=logits.device, dtype=torch.long)
        if mode == "mode":
            return logits.argmax(dim=-1)
        if mode == "stored" or routing.candidate == 0:
            if routing.index is None:
                raise ValueError(f"routing mode {mode!r} needs the batch's example index")
            return self.stored_choice(routing.index, logits.device)
        # a controller sample: [B, P, K, M] -> [B*P*K, M] -> [B*P*K, 1] -> [B, P, K]
        probs = logits.detach().float().softmax(dim=-1)
        return torch.multinomial(probs.flatten(0, 2), 1).view(logits.shape[:-1])

    def forward(self, rows: torch.Tensor, features: torch.Tensor, routing: Routing
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b, p = features.shape[:2]
        if p != self.positions or rows.shape[0] != b * p:
            raise ValueError(f"modular layer: expected features [B, {self.positions}, F] and "
                             f"rows [B*{self.positions}, ...]; found features "
                             f"{tuple(features.shape)} and rows {tuple(rows.shape)}. The input "
                             "size must give the positions the model was built for.")
        m, k = self.num_modules, self.k
        if self.detach_features:
            features = features.detach()
        metrics: dict[str, torch.Tensor] = {}
        if self.controller_kind == "em":
            logits = self.controller(features).view(b, p, k, m)  # [B, P, K*M] -> [B, P, K, M]
            choice = self._em_choice(logits, routing, len(routing.records))  # [B, P, K]
            logp = logits.float().log_softmax(dim=-1).gather(-1, choice.unsqueeze(-1))
            record = RoutingRecord(choice, logp.squeeze(-1).sum(dim=(1, 2)))  # [B]
            weights = None
            mode = logits.argmax(dim=-1)
        else:
            logits = self.controller(features)  # [B, P, M]
            noisy = logits
            if self.training and self.noise_std > 0:
                sigma = self.noise_std / m
                noisy = logits + sigma * torch.randn_like(logits)
            gates = noisy.float().softmax(dim=-1)
            combine, choice = gates.topk(k, dim=-1)  # [B, P, K] each
            if routing.mode == "given":
                choice = routing.given[len(routing.records)].to(logits.device, torch.long)
                combine = gates.gather(-1, choice)
            record = RoutingRecord(choice, None)
            weights = combine.reshape(b * p, k)
            mode = logits.argmax(dim=-1, keepdim=True)  # [B, P, 1]
            if self.balance_weight > 0 and self.training:
                flat, flat_noisy = logits.float().view(1, b * p, m), noisy.float().view(1, b * p, m)
                aux = importance_loss(flat) + (load_loss(flat, flat_noisy, self.noise_std / m, k)
                                               if self.noise_std > 0 else 0.0)
                metrics[AUX_LOSS] = self.balance_weight * aux.mean()
            logits = logits.unsqueeze(2)  # [B, P, M] -> [B, P, 1, M] for the statistics
        routing.records.append(record)
        used = F.one_hot(choice, m).amax(dim=-2).to(rows.dtype)  # [B, P, K, M] -> [B, P, M]
        self.usage_probe(used.unsqueeze(0))  # [1, B, P, M]: measured, not used
        out = dispatch_chosen(self.experts, rows, choice.reshape(b * p, k), weights)
        metrics.update(selection_metrics(logits, mode, m))
        return out, metrics
