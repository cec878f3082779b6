"""Dispatch tokens to experts and combine their outputs, by sorted bins (no one-hot).

Given, for S tokens and k choices each, the chosen expert ``e[s, j]``, its combine weight
``w[s, j]`` and whether the assignment was kept (its slot < capacity):

    y[s] = sum_{j : kept[s, j]} w[s, j] * Expert_{e[s, j]}(x[s])           (zero if none kept)

``sort_into_bins`` lists the kept assignments sorted by expert (a stable sort: token order
inside a bin), so expert e reads one contiguous slice ``x[token[a_e : a_e + n_e]]`` of
exactly its ``n_e`` tokens; ``dispatch_combine`` runs each expert on its slice and adds
``w * output`` back into the token's row (``index_add``). Memory is O(S k D): index tensors
of S k entries and the gathered rows, never the dense ``[S, E, C]`` one-hot of GShard /
DeepSpeed (``einsum_dispatch_combine``, kept here as the reference it must equal). Only
routed tokens run through an expert, so an op counter sees exactly the computation done
(MegaBlocks' "sorted bins", without padding to capacity: unused slots cost nothing).

Written by hand: torch has no grouped-GEMM MoE primitive; tutel / MegaBlocks are CUDA
libraries this package does not depend on.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

__all__ = ["SortedBins", "dispatch_combine", "einsum_dispatch_combine", "sort_into_bins"]


class SortedBins(NamedTuple):
    """The kept assignments, sorted by expert.

    Attributes:
        token: ``[A]`` long, the token of each kept assignment, expert 0's first.
        weight: ``[A]`` its combine weight.
        counts: E ints, assignments per expert (``sum(counts) == A``).
        num_tokens: S.
    """

    token: torch.Tensor
    weight: torch.Tensor
    counts: list[int]
    num_tokens: int


def sort_into_bins(expert_index: torch.Tensor, combine: torch.Tensor, kept: torch.Tensor,
                   num_experts: int) -> SortedBins:
    """Sort the kept assignments by expert.

    Args:
        expert_index, combine, kept: ``[S, k]`` (or ``[..., k]``: leading axes are flattened
            into tokens, row-major).
        num_experts: E.
    """
    k = expert_index.shape[-1]
    expert_index = expert_index.reshape(-1, k)  # [..., k] -> [S, k]
    s = expert_index.shape[0]
    token = torch.arange(s, device=expert_index.device).unsqueeze(1).expand(s, k)  # [S, k]
    keep = kept.reshape(s, k)
    experts = expert_index[keep]  # [A]
    order = torch.argsort(experts, stable=True)  # [A]: by expert, token order inside a bin
    counts = torch.bincount(experts, minlength=num_experts).tolist()
    return SortedBins(token[keep][order], combine.reshape(s, k)[keep][order], counts, s)


def dispatch_combine(x: torch.Tensor, bins: SortedBins,
                     experts: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> torch.Tensor:
    """``y[s] = sum_kept w * Expert_e(x[s])`` (module docstring).

    Args:
        x: ``[S, D]`` tokens.  bins: from ``sort_into_bins``.
        experts: E callables ``[n, D] -> [n, D_out]`` (also called with n = 0).
    Returns:
        ``[S, D_out]``; rows of tokens with no kept assignment are zero (the residual carries
        those tokens).
    """
    if x.shape[0] != bins.num_tokens:
        raise ValueError(f"the bins were made for {bins.num_tokens} tokens, x has {x.shape[0]}")
    if len(experts) != len(bins.counts):
        raise ValueError(f"{len(bins.counts)} bins but {len(experts)} experts")
    routed = x.index_select(0, bins.token)  # [A, D], sorted by expert
    # Every expert runs, an idle one on an empty [0, D] slice: it costs no multiply-add (and
    # counts none) but stays in the autograd graph with a zero gradient, so that
    # DistributedDataParallel never sees an unused parameter.
    y = torch.cat([expert(chunk) for expert, chunk in zip(experts, routed.split(bins.counts))])
    y = y * bins.weight.to(y.dtype).unsqueeze(-1)
    return y.new_zeros(x.shape[0], y.shape[-1]).index_add(0, bins.token, y)  # [A, .] -> [S, .]


def einsum_dispatch_combine(x: torch.Tensor, expert_index: torch.Tensor, combine: torch.Tensor,
                            slot: torch.Tensor, kept: torch.Tensor, capacity: int,
                            experts: Sequence[Callable[[torch.Tensor], torch.Tensor]]
                            ) -> torch.Tensor:
    """Reference: GShard's dense dispatch (O(S E C) memory; for tests and benchmarks).

        D[s, e, c] = 1 if an assignment of token s to expert e was kept at slot c
        X_e = einsum('sec,sd->ecd', D, x)          every expert runs on all C slots
        y   = einsum('sec,ecd->sd', D * w, Expert_e(X_e))

    Args:
        x: ``[S, D]``; expert_index, combine, slot, kept: ``[S, k]``; capacity: C.
    """
    s, k = expert_index.shape
    e = len(experts)
    token = torch.arange(s, device=x.device).unsqueeze(1).expand(s, k)[kept]  # [A]
    where = (token, expert_index[kept], slot[kept])
    dispatch = x.new_zeros(s, e, capacity)  # [S, E, C]
    dispatch[where] = 1.0
    weights = x.new_zeros(s, e, capacity)  # [S, E, C]
    weights = weights.index_put(where, combine[kept].to(x.dtype))
    routed = torch.einsum("sec,sd->ecd", dispatch, x)  # [E, C, D]
    outputs = torch.stack([experts[i](routed[i]) for i in range(e)])  # [E, C, D_out]
    return torch.einsum("sec,ecd->sd", weights, outputs)
