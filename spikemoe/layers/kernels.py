"""The two spiking attention kernels, shared by SSA/SDSA and by the EMSA experts.

Both take binary Q, K, V split into heads, ``[T*B, H, N, d]``, and return the
pre-neuron attention value ``[T*B, H, N, d]`` (the caller applies the LIF).

SSA (Spikformer, Zhou et al. 2023, eq. 6-8): no softmax, no normalisation:

    SSA'(Q, K, V) = Q K^T V * s                    s = 0.125 (0.25 in the DVS recipe)

Matrix products are associative, so by default the cheaper order is taken: (Q K^T) V costs
N^2 (d_k + d_v) multiply-adds per head, Q (K^T V) costs 2 N d_k d_v; the papers' per-dataset order
choice (official Spikformer: CIFAR ``(QK^T)V``, ImageNet ``Q(K^T V)``) changes only this cost, not
the value (up to float rounding of integer sums). ``ssa_product_order("q(kv)" | "(qk)v")`` forces
one order inside a ``with`` block: a counting switch (the operations a profile counts follow it).

SDSA (Spike-driven Transformer, Yao et al. 2023, eq. 9-11): the attention is masks
and sums, linear in N; the column sum is re-spiked by the caller's "talking-heads" LIF
(threshold 0.5) before the element-wise product with Q:

    kv = SUM_n (K (.) V)[n]       [T*B, H, 1, d]   (an integer count per channel)
    SDSA(Q, K, V) = Q (.) LIF_0.5(kv)
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

SSA_ORDERS = ("auto", "q(kv)", "(qk)v")
_order = ["auto"]


@contextmanager
def ssa_product_order(order: str) -> Iterator[None]:
    """Inside the block, SSA multiplies in ``order``: ``"auto"`` (the cheaper), ``"q(kv)"``
    (``Q (K^T V)``, Spikformer's ImageNet code) or ``"(qk)v"`` (``(Q K^T) V``, its CIFAR code)."""
    if order not in SSA_ORDERS:
        raise ValueError(f"SSA product order must be one of {SSA_ORDERS}, got {order!r}")
    before, _order[0] = _order[0], order
    try:
        yield
    finally:
        _order[0] = before


def current_ssa_order() -> str:
    """The order ``ssa_product_order`` has set (``"auto"`` outside any such block)."""
    return _order[0]


def ssa_scores_times_values(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            scale: float) -> torch.Tensor:
    """``Q K^T V * scale`` per head, in the cheaper association order (or the one
    ``ssa_product_order`` sets).

    Args:
        q: ``[..., N, d_k]`` binary queries.
        k: ``[..., N, d_k]`` binary keys (broadcast over heads if its head axis is 1).
        v: ``[..., N, d_v]`` binary values (likewise).
        scale: the constant s.

    Returns:
        ``[..., N, d_v]`` real-valued attention output, before the neuron.
    """
    n, d_k, d_v = q.shape[-2], q.shape[-1], v.shape[-1]
    order = _order[0]
    if order == "auto":  # N^2 (d_k + d_v) vs 2 N d_k d_v multiply-adds
        order = "(qk)v" if n * (d_k + d_v) <= 2 * d_k * d_v else "q(kv)"
    if order == "(qk)v":
        return ((q @ k.transpose(-2, -1)) @ v) * scale  # [.., N, N] @ [.., N, d_v]
    return (q @ (k.transpose(-2, -1) @ v)) * scale  # [.., N, d_k] @ [.., d_k, d_v]


def sdsa_column_sum(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``SUM_n K (.) V`` over tokens: ``[..., N, d] -> [..., 1, d]`` (before the LIF)."""
    return (k * v).sum(dim=-2, keepdim=True)
