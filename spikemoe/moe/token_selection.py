"""Which tokens run a routed layer, and running a block on them (SDT / STT, Mixture-of-Depths).

Selection (``[B, N]`` bool masks, one row per sequence):

- ``topk_mask(scores, gamma)``: per-sequence top-k at capacity gamma,
  ``k = max(1, floor(gamma N))`` as the reference code (``k = max(1, int(T * capacity))``,
  fredericowieser/Dynamic-Transformers b401af0 ``src/models/base/routers.py``); a static
  graph: every sequence runs exactly k tokens. Ties go to the earlier token.
  ``min_one=False`` gives the paper's bare ``floor(gamma N)`` (0 tokens for gamma N < 1).
- ``threshold_mask(g, 0.75)``: ``g >= threshold`` (a variable number per sequence), trained
  with the mean-gate regulariser ``gate_regulariser(g) = mean(g)`` (weight 0.001; STT adds it
  in both selection modes, as the reference).

Top-k needs the whole sequence (whether token t is among the k best depends on later
tokens' scores): it is the training-time teacher. At inference a causal router replaces it:

- ``DepthRouter`` (SDT): MLP ``d -> d/4 -> 1`` (GELU) on the detached ``x_t``, the pair's
  INPUT (the model passes it; reference b401af0 ``causal_router(hidden_states.detach())``);
- ``TimescaleRouter`` (STT): ``Linear(2d -> 1)`` on the detached ``[x_t, x_{t-1}]``
  (``x_0 := 0``);

both trained by ``router_loss`` = BCE against the teacher mask (weight 0.01); a token runs
when its logit > 0 (sigmoid > 0.5). ``router_agreement`` is the fraction of tokens where
router and teacher agree.

``run_selected(block, x, positions, mask, gate)`` implements
``x_t <- x_t + g_t (Block(x_S)_t - x_t)`` for t in the selected set S and ``x_t`` unchanged
otherwise, where ``Block(x_S)`` runs on S alone: attention among selected tokens only. S is
gathered PER SEQUENCE and kept in TIME order, with each token's original position, so a
selected token attends neither to another sequence nor to a later token, whatever the scores
(Wieser et al., arXiv 2511.21408; the reference code routes this way from commit 78b7ddf).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.causal_transformer import LayerKV

__all__ = ["DepthRouter", "TimescaleRouter", "gate_regulariser", "router_agreement",
           "router_loss", "run_selected", "selected_indices", "threshold_mask", "topk_mask"]


def topk_mask(scores: torch.Tensor, gamma: float, min_one: bool = True) -> torch.Tensor:
    """Per-sequence top-k of ``scores [B, N]`` at capacity ``gamma``: ``[B, N]`` bool with
    exactly ``k = max(1, floor(gamma N))`` True per row (ties: the earlier token wins).

    ``min_one=False``: ``k = floor(gamma N)``, which can be 0 (nothing runs).
    Example: scores [[.9, .1, .8, .2]], gamma = 0.5 -> k = 2 -> [[True, False, True, False]];
    one token, gamma = 0.5: floor(0.5) = 0 -> k = max(1, 0) = 1.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"capacity gamma must be in [0, 1] (the fraction of tokens that run "
                         f"a routed layer), got {gamma}")
    B, N = scores.shape
    k = math.floor(gamma * N + 1e-9)  # 1e-9: 0.5 * 6 is 3, not 2.9999...
    if min_one:
        k = min(N, max(1, k))
    mask = torch.zeros(B, N, dtype=torch.bool, device=scores.device)
    if k > 0:
        # stable sort: equal scores keep time order, so the earlier token wins a tie
        order = torch.sort(scores.detach(), dim=1, descending=True, stable=True).indices
        mask.scatter_(1, order[:, :k], True)
    return mask


def threshold_mask(g: torch.Tensor, threshold: float = 0.75) -> torch.Tensor:
    """``g >= threshold``: ``[B, N]`` bool (per token, causal)."""
    return g.detach() >= threshold


def gate_regulariser(g: torch.Tensor) -> torch.Tensor:
    """Mean gate, the regulariser of threshold selection (fewer tokens above threshold)."""
    return g.mean()


def selected_indices(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the selected tokens of each sequence, in time order, padded to the largest
    count: ``mask [B, N]`` -> ``(idx [B, K], valid [B, K])``, ``K = max_b |S_b|``.

    Padding entries (``valid`` False) come after the real ones and point at unselected
    tokens. Example: mask [[F, T, T, F], [T, F, F, F]] -> idx [[1, 2], [0, 1]],
    valid [[T, T], [T, F]].
    """
    B, N = mask.shape
    K = int(mask.sum(dim=1).max()) if mask.numel() else 0
    t = torch.arange(N, device=mask.device)
    key = torch.where(mask, t, t + N)  # selected first, each group in time order
    idx = key.argsort(dim=1)[:, :K]  # [B, K]
    return idx, mask.gather(1, idx)


def run_selected(block: nn.Module, x: torch.Tensor, positions: torch.Tensor,
                 mask: torch.Tensor, gate: torch.Tensor | None = None,
                 cache: LayerKV | None = None) -> torch.Tensor:
    """``x_t + g_t (Block(x_S)_t - x_t)`` on the selected tokens, ``x_t`` elsewhere.

    Args:
        block: a ``DecoderBlock`` (called as ``block(x, positions, key_valid, cache, write)``).
        x: ``[B, N, D]``.  positions: ``[B, N]`` token positions.
        mask: ``[B, N]`` bool, the selected set S of each sequence.
        gate: ``[B, N]`` scale g of the update (None: 1, a plain residual update).
        cache: streaming only: a ``LayerKV`` that the selected tokens (and only they) write.
    Returns:
        ``[B, N, D]``. With nothing selected the block does not run at all.
    """
    idx, valid = selected_indices(mask)  # [B, K]
    B, N, D = x.shape
    K = idx.shape[1]
    if K == 0:
        return x
    gidx = idx[..., None].expand(B, K, D)  # [B, K] -> [B, K, D]
    xs = x.gather(1, gidx)  # [B, N, D] -> [B, K, D]
    # padding never serves as a key, and only the selected tokens write the cache
    out = block(xs, positions.gather(1, idx), valid, cache)
    w = valid.to(x.dtype) if gate is None else gate.gather(1, idx) * valid  # [B, K]
    delta = (out - xs) * w[..., None]  # [B, K, D]; padding rows are zeroed
    return x.scatter_add(1, gidx, delta)  # [B, K, D] -> [B, N, D]


class DepthRouter(nn.Module):
    """SDT's causal router: ``logit_t = w2 GELU(W1 x_t)`` on the detached ``x [B, N, d]``
    (SDT passes the pair's input by default; module docstring). Per token: a streaming step
    needs nothing of the tokens before it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, max(1, dim // 4)), nn.GELU(),
                                 nn.Linear(max(1, dim // 4), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.detach()).squeeze(-1)  # [B, N, d] -> [B, N]


class TimescaleRouter(nn.Module):
    """STT's causal router: ``logit_t = w^T [x_t, x_{t-1}]`` on the detached ``x [B, N, d]``.

    ``prev [B, 1, d]``: ``x`` of the token before the first one given (streaming); None =
    zeros (the first token of a sequence).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * dim, 1, bias=False)

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        x = x.detach()
        if prev is None:
            prev = torch.zeros_like(x[:, :1])
        shifted = torch.cat([prev.detach(), x[:, :-1]], dim=1)  # [B, N, d]: x_{t-1}
        return self.linear(torch.cat([x, shifted], dim=-1)).squeeze(-1)  # [B, N, 2d] -> [B, N]


def router_loss(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """BCE of the router ``logits [B, N]`` against the teacher mask ``[B, N]`` (detached)."""
    return F.binary_cross_entropy_with_logits(logits, teacher.detach().to(logits.dtype))


def router_agreement(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Fraction of tokens where ``logit > 0`` equals the teacher's choice (detached)."""
    return ((logits.detach() > 0) == teacher).float().mean()
