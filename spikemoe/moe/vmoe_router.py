"""V-MoE's noisy top-k router (Riquelme et al., NeurIPS 2021; google-research/vmoe
``vmoe/nn/routing.py`` ``NoisyTopExpertsPerItemRouter`` and ``vmoe/moe.py``).

Tokens are routed in groups (``x [G, S, D]``, each group independently). Per group:

    logits   = X W                         W [D, E], no bias                       [S, E]
    noisy    = logits + eps,  eps ~ N(0, sigma^2),  sigma = noise_std / E  (training only)
    gates    = softmax(noisy)                                                      [S, E]
    top-k    : expert_index[s, j], combine[s, j] = gates[s, expert_index[s, j]]    (j = 0..k-1)

The combine weights are the raw softmax values of the chosen experts, not renormalised
over the k choices (sum_j combine[s, j] < 1).

Capacity (slots per expert per group):

    capacity = ceil(S * k * C / E), rounded up to a multiple of 4

with C = ``capacity_factor_train`` in training and ``capacity_factor_eval`` in evaluation,
computed in floating point exactly as vmoe (``vmoe/moe.py`` ``compute_capacity``,
google-research/vmoe 942a78b: ``int(math.ceil(num_tokens * capacity_factor / num_experts))``
with ``num_tokens = S * k``), float error included: S = 100, k = 2, E = 5, C = 1.1 gives
``200 * 1.1 / 5 = 44.00000000000001``, so ceil 45 -> 48 slots. ``capacity_rounding="decimal"``
rounds the quotient to 9 decimals first (44 -> 44: the arithmetic a person does by hand;
this module's choice before issue 12); it differs from vmoe in 2 of 32,256 (S, k, E, C)
settings.
Slots are filled by a cumulative sum over the assignments in priority order: every first
choice before any second choice; within one choice level, token order (vanilla) or, with
Batch Priority Routing, tokens sorted by their largest gate, highest first. Assignments at
slot >= capacity are dropped (the token's other choices may still be kept; a token with no
kept choice gets zero from the MoE and is carried by the residual).

Auxiliary losses (Appendix A of the paper), per group, then averaged over groups:

    Imp_e    = sum_s softmax(logits)_se                 (clean logits)
    L_imp    = (std(Imp) / mean(Imp))^2                 (population std over the E experts)
    p_se     = 1 - Phi((kth_noisy(s) - logits_se) / sigma)
               kth_noisy(s): the k-th largest noisy logit of token s; Phi: standard normal CDF
    load_e   = mean_s p_se,   L_load = (std(load) / mean(load))^2      (training only)
    aux      = importance_weight * L_imp + load_weight * L_load        (0.005 each)

In evaluation there is no noise, so L_load is undefined and counted as 0 (as in vmoe,
whose deterministic router returns the importance loss only).

Statistics are returned, never stored on the module (``RouterOutput.metrics``).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CAPACITY_ROUNDINGS", "NoisyTopKRouter", "RouterOutput", "assign_slots",
           "capacity_per_group", "cv_squared", "importance_loss", "load_loss"]

CAPACITY_ROUNDINGS = ("vmoe", "decimal")


def capacity_per_group(group_size: int, k: int, num_experts: int, capacity_factor: float,
                       multiple_of: int = 4, rounding: str = "vmoe") -> int:
    """``ceil(group_size * k * C / E)`` rounded up to a multiple of ``multiple_of``.

    E.g. S = 16 tokens, k = 2, E = 8: C = 1.05 -> ceil(4.2) = 5 -> 8; C = 1.0 -> 4 -> 4;
    C = 0.1 -> ceil(0.4) = 1 -> 4. ``rounding``: ``"vmoe"`` (the float quotient, as vmoe) or
    ``"decimal"`` (rounded to 9 decimals before the ceiling); module docstring.
    """
    if rounding not in CAPACITY_ROUNDINGS:
        raise ValueError(f"capacity rounding must be one of {CAPACITY_ROUNDINGS}, got "
                         f"{rounding!r}")
    if group_size < 1 or k < 1 or num_experts < 1:
        raise ValueError(f"group_size, k and num_experts must be >= 1, got {group_size}, {k}, "
                         f"{num_experts}")
    if not capacity_factor > 0:
        raise ValueError(f"capacity_factor must be > 0, got {capacity_factor}")
    quotient = group_size * k * capacity_factor / num_experts  # vmoe: (S k) C / E, in floats
    if rounding == "decimal":  # 50 * 2 * 1.1 / 2 is 55.00000000000001: ceil 55, not 56
        quotient = round(quotient, 9)
    capacity = max(1, math.ceil(quotient))
    if multiple_of > 1:
        capacity += (-capacity) % multiple_of
    return capacity


def cv_squared(values: torch.Tensor) -> torch.Tensor:
    """``(std / mean)^2`` over the last axis (population std), as ``var / mean^2``: the same
    value, without std's undefined gradient when every entry is equal (vmoe does the same)."""
    return values.var(dim=-1, unbiased=False) / values.mean(dim=-1).pow(2)


def importance_loss(logits: torch.Tensor) -> torch.Tensor:
    """``L_imp`` per group: ``cv_squared(sum_s softmax(logits)_se)``. ``[G, S, E] -> [G]``."""
    return cv_squared(logits.softmax(dim=-1).sum(dim=-2))


def load_loss(logits: torch.Tensor, noisy_logits: torch.Tensor, sigma: float,
              k: int) -> torch.Tensor:
    """``L_load`` per group (module docstring). ``[G, S, E] -> [G]``.

    ``p_se = 1 - Phi((kth_noisy(s) - logits_se) / sigma) = Phi((logits_se - kth_noisy(s)) /
    sigma)``: the probability that expert e would be in token s's top-k if its noise alone
    were drawn again."""
    threshold = noisy_logits.topk(k, dim=-1).values[..., -1:]  # [G, S, 1]
    p = torch.special.ndtr((logits - threshold) / sigma)  # [G, S, E]
    return cv_squared(p.mean(dim=-2))


def assign_slots(gates: torch.Tensor, k: int, capacity: int, batch_priority: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k choices and their slot in the chosen expert's buffer, per group.

    Args:
        gates: ``[G, S, E]`` softmax gates (noisy in training).
        k: choices per token.  capacity: slots per expert per group.
        batch_priority: BPR order (tokens by largest gate, descending; ties in token order)
            instead of token order. In both, all first choices come before any second choice.
    Returns:
        ``expert_index [G, S, k]`` (long), ``combine [G, S, k]`` (the raw gates of the chosen
        experts, descending), ``slot [G, S, k]`` (long, position in the expert's buffer, can be
        >= capacity) and ``kept [G, S, k]`` (``slot < capacity``).
    """
    g, s, e = gates.shape
    combine, expert_index = gates.topk(k, dim=-1)  # [G, S, k] each
    if batch_priority:
        perm = torch.argsort(combine[..., 0], dim=1, descending=True, stable=True)  # [G, S]
        ordered = expert_index.gather(1, perm.unsqueeze(-1).expand(g, s, k))
    else:
        ordered = expert_index
    flat = ordered.transpose(1, 2).reshape(g, k * s)  # [G, S, k] -> [G, k, S] -> [G, k*S]
    one_hot = F.one_hot(flat, e)  # [G, k*S, E]: O(S E) integers, no capacity axis
    position = ((one_hot.cumsum(dim=1) - 1) * one_hot).sum(dim=-1)  # [G, k*S]
    slot = position.reshape(g, k, s).transpose(1, 2)  # [G, k*S] -> [G, k, S] -> [G, S, k]
    if batch_priority:  # back to token order
        slot = torch.empty_like(slot).scatter_(1, perm.unsqueeze(-1).expand(g, s, k), slot)
    return expert_index, combine, slot, slot < capacity


class RouterOutput(NamedTuple):
    """What ``NoisyTopKRouter`` returns for ``x [G, S, D]``.

    Attributes:
        expert_index: ``[G, S, k]`` chosen experts.  combine: ``[G, S, k]`` their raw gates.
        slot: ``[G, S, k]`` buffer position.  kept: ``[G, S, k]`` ``slot < capacity``.
        capacity: slots per expert per group.
        aux_loss: scalar, ``w_imp L_imp + w_load L_load`` averaged over groups.
        metrics: detached, averaged over groups: ``load [E]`` (kept assignments to expert e
            per token: the share of the group's tokens that e processes), ``importance [E]``
            (``Imp_e / S``, sums to 1), ``dropped []`` (fraction of tokens with no kept
            choice), ``dropped_choices []`` (fraction of assignments over capacity),
            ``importance_loss []``, ``load_loss []``.
    """

    expert_index: torch.Tensor
    combine: torch.Tensor
    slot: torch.Tensor
    kept: torch.Tensor
    capacity: int
    aux_loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


class NoisyTopKRouter(nn.Module):
    """V-MoE's router (module docstring for the equations).

    Args:
        dim: token width D.  num_experts: E.  k: choices per token.
        capacity_factor_train / capacity_factor_eval: C in training / evaluation.
        batch_priority_train / batch_priority_eval: BPR in training / evaluation (the paper
            pre-trains without BPR and uses it at inference and with C < 1).
        noise_std: noise multiplier; the noise std is ``noise_std / E`` (vmoe's convention).
        importance_weight / load_weight: weights of L_imp and L_load in ``aux_loss``.
        capacity_rounding: ``"vmoe"`` or ``"decimal"`` (``capacity_per_group``).
    """

    def __init__(self, dim: int, num_experts: int, k: int = 2, *,
                 capacity_factor_train: float = 1.05, capacity_factor_eval: float = 1.05,
                 batch_priority_train: bool = False, batch_priority_eval: bool = True,
                 noise_std: float = 1.0, importance_weight: float = 0.005,
                 load_weight: float = 0.005, capacity_rounding: str = "vmoe") -> None:
        super().__init__()
        if capacity_rounding not in CAPACITY_ROUNDINGS:
            raise ValueError(f"capacity_rounding must be one of {CAPACITY_ROUNDINGS} ('vmoe': "
                             f"as vmoe's compute_capacity), got {capacity_rounding!r}")
        self.capacity_rounding = capacity_rounding
        if not 1 <= k <= num_experts:
            raise ValueError(f"need 1 <= k <= num_experts, got k={k}, num_experts={num_experts}")
        for name, c in (("capacity_factor_train", capacity_factor_train),
                        ("capacity_factor_eval", capacity_factor_eval)):
            if not c > 0:
                raise ValueError(f"{name} must be > 0, got {c}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.num_experts, self.k = num_experts, k
        self.capacity_factor_train, self.capacity_factor_eval = capacity_factor_train, capacity_factor_eval
        self.batch_priority_train, self.batch_priority_eval = batch_priority_train, batch_priority_eval
        self.noise_std = noise_std
        self.importance_weight, self.load_weight = importance_weight, load_weight
        self.gate = nn.Linear(dim, num_experts, bias=False)  # logits = X W

    def extra_repr(self) -> str:
        return (f"E={self.num_experts}, k={self.k}, C=({self.capacity_factor_train} train, "
                f"{self.capacity_factor_eval} eval), BPR=({self.batch_priority_train} train, "
                f"{self.batch_priority_eval} eval), noise_std={self.noise_std}/E")

    def capacity(self, group_size: int) -> int:
        """Slots per expert for a group of ``group_size`` tokens, in the current mode."""
        c = self.capacity_factor_train if self.training else self.capacity_factor_eval
        return capacity_per_group(group_size, self.k, self.num_experts, c,
                                  rounding=self.capacity_rounding)

    def forward(self, x: torch.Tensor) -> RouterOutput:
        if x.ndim != 3:
            raise ValueError(f"the router takes groups of tokens [G, S, D], got shape {tuple(x.shape)}")
        g, s, _ = x.shape
        logits = self.gate(x).float()  # [G, S, E]; fp32 for the softmax and the losses
        sigma = self.noise_std / self.num_experts
        noisy = self.training and sigma > 0
        l_imp = importance_loss(logits)  # [G]
        if noisy:
            noisy_logits = logits + sigma * torch.randn_like(logits)
            l_load = load_loss(logits, noisy_logits, sigma, self.k)  # [G]
        else:
            noisy_logits, l_load = logits, torch.zeros_like(l_imp)
        gates = noisy_logits.softmax(dim=-1)  # [G, S, E]
        capacity = self.capacity(s)
        bpr = self.batch_priority_train if self.training else self.batch_priority_eval
        expert_index, combine, slot, kept = assign_slots(gates, self.k, capacity, bpr)
        aux = (self.importance_weight * l_imp + self.load_weight * l_load).mean()
        metrics = self._statistics(logits, expert_index, kept, l_imp, l_load)
        return RouterOutput(expert_index, combine, slot, kept, capacity, aux, metrics)

    @torch.no_grad()
    def _statistics(self, logits, expert_index, kept, l_imp, l_load) -> dict[str, torch.Tensor]:
        g, s, _ = logits.shape
        # kept assignments per expert over the G groups of S tokens (a bincount, not a product
        # of masks: the op counter must see no computation here)
        routed = torch.bincount(expert_index[kept], minlength=self.num_experts)  # [E]
        return {
            "load": routed.float() / (g * s),
            "importance": logits.softmax(dim=-1).mean(dim=(0, 1)),  # [E]
            "dropped": (~kept.any(dim=-1)).float().mean(),
            "dropped_choices": (~kept).float().mean(),
            "importance_loss": l_imp.mean(),
            "load_loss": l_load.mean(),
        }
