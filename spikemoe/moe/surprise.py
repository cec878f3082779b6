"""Bayesian surprise and the surprise gate of the Subjective Depth / Timescale Transformers
(Wieser et al., arXiv 2511.21408; ``shared/reference/papers.md`` section 5).

With isotropic Gaussians the KL terms reduce to scaled squared errors. For a block update
``dx = Block(x) - x`` (the actual residual, ``[B, N, d]``) and a prediction ``dx_hat`` (the
prior network's in SDT, the transition network's in STT):

    static surprise   D_st = ||dx||^2 / d
    change surprise   D_ch = ||dx - dx_hat||^2 / d
    Expected Change   CE = D_st - (D_ch - log o_ce)          o_ce learnable, init 1.025
    Unexpected Change CU = D_st - m_cu * MA(D_st)            m_cu learnable, init 1.1
    gate              g = s(b_ce CE) + s(b_cu CU) - s(b_ce CE) s(b_cu CU)   (probabilistic OR)

``MA`` is a causal moving average of the DETACHED ``D_st`` over the last ``window`` (100)
tokens: ``MA_t = mean(D_st[max(0, t - W + 1) .. t])``, over the tokens that exist (the first
token averages itself). Unlike the reference code (replicate-padding with a window
``min(100, N)``) it does not depend on the sequence length, so streaming one token at a time
gives the same gate as the whole sequence. The betas ``b_ce, b_cu`` are fixed
hyperparameters (the reference code schedules them; its default is 1).

Everything is per token and causal: ``g_t`` reads tokens ``<= t`` only.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GateOutput", "SurpriseGate", "causal_moving_average", "change_surprise",
           "static_surprise"]


def static_surprise(dx: torch.Tensor) -> torch.Tensor:
    """``D_st = ||dx||^2 / d``: ``[B, N, d] -> [B, N]``."""
    return dx.pow(2).mean(dim=-1)


def change_surprise(dx: torch.Tensor, dx_hat: torch.Tensor) -> torch.Tensor:
    """``D_ch = ||dx - dx_hat||^2 / d``: ``[B, N, d] -> [B, N]``."""
    return (dx - dx_hat).pow(2).mean(dim=-1)


def causal_moving_average(d: torch.Tensor, window: int = 100) -> torch.Tensor:
    """``MA_t = mean(d[max(0, t - W + 1) .. t])`` along the last axis: ``[B, N] -> [B, N]``.

    Causal: ``MA_t`` reads ``d_{<= t}`` only. Called on the detached ``D_st`` by
    ``SurpriseGate`` (no gradient flows through the baseline). Example, W = 2,
    d = [2, 4, 8]: MA = [2, 3, 6].
    """
    if window < 1:
        raise ValueError(f"the moving-average window must be >= 1 token, got {window}")
    n = d.shape[-1]
    padded = F.pad(d, (window - 1, 0))  # [B, N] -> [B, W - 1 + N], zeros before token 0
    sums = padded.unfold(-1, window, 1).sum(dim=-1)  # [B, N, W] -> [B, N]
    counts = torch.arange(1, n + 1, device=d.device).clamp(max=window).to(d.dtype)  # [N]
    return sums / counts


class GateOutput(NamedTuple):
    """``g``, and its parts, each ``[B, N]``."""

    g: torch.Tensor
    d_st: torch.Tensor
    d_ch: torch.Tensor
    ce: torch.Tensor
    cu: torch.Tensor


class SurpriseGate(nn.Module):
    """The CE/CU probabilistic-OR gate (module docstring) with learnable ``o_ce`` and ``m_cu``.

    Args:
        beta_ce, beta_cu: inverse temperatures of the two sigmoids.
        o_ce_init, m_cu_init: initial offsets (1.025 and 1.1, as the paper).
        window: tokens of the causal moving average (100).
    """

    def __init__(self, beta_ce: float = 1.0, beta_cu: float = 1.0, o_ce_init: float = 1.025,
                 m_cu_init: float = 1.1, window: int = 100) -> None:
        super().__init__()
        self.beta_ce, self.beta_cu, self.window = float(beta_ce), float(beta_cu), int(window)
        self.o_ce = nn.Parameter(torch.tensor(float(o_ce_init)))
        self.m_cu = nn.Parameter(torch.tensor(float(m_cu_init)))

    def forward(self, dx: torch.Tensor, dx_hat: torch.Tensor,
                history: torch.Tensor | None = None) -> GateOutput:
        """Gate of every token of ``dx, dx_hat [B, N, d]``.

        ``history [B, h]``: detached ``D_st`` of the tokens before these (streaming); the
        moving average then runs over ``history ++ D_st``.
        """
        d_st = static_surprise(dx)
        d_ch = change_surprise(dx, dx_hat)
        base = d_st.detach()
        if history is not None:
            base = torch.cat([history, base], dim=1)  # [B, h] + [B, N] -> [B, h + N]
        ma = causal_moving_average(base, self.window)[:, base.shape[1] - d_st.shape[1]:]
        log_o = torch.log(self.o_ce.clamp_min(1e-6))  # o_ce > 0; clamped if it ever steps past
        ce = d_st - (d_ch - log_o)
        cu = d_st - self.m_cu * ma
        s_ce = torch.sigmoid(self.beta_ce * ce)
        s_cu = torch.sigmoid(self.beta_cu * cu)
        return GateOutput(s_ce + s_cu - s_ce * s_cu, d_st, d_ch, ce, cu)

    def extra_repr(self) -> str:
        return f"beta_ce={self.beta_ce}, beta_cu={self.beta_cu}, window={self.window}"
