"""Bayesian surprise and the surprise gate of the Subjective Depth / Timescale Transformers
(Wieser et al., arXiv 2511.21408; reference code fredericowieser/Dynamic-Transformers,
commit b401af0 closest to the paper).

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
gives the same gate as the whole sequence.

Beta schedule (``beta_at``; fredericowieser/Dynamic-Transformers, b401af0 and 78b7ddf,
``src/models/{sdt,stt}/model.py`` ``_run_layers`` with ``config/default.yaml``
``beta_schedule``): the inverse temperatures ramp LINEARLY from ``start`` to ``end`` over
the run, after a warm-up at ``start``:

    b(s) = start                                              s <= warmup
    b(s) = start + min(1, (s - warmup) / ramp) (end - start)  s >  warmup

with s the number of training steps taken before this one. Reference defaults: start 0.1,
end 100 for both betas, warmup 100 steps, ``ramp = max_steps - warmup`` (the run's length;
its config names the schedule "cosine", but the code is linear, and so is ours). At b = 100
the sigmoids are near-steps, so g becomes near-binary; at a fixed b = 1 every token sits at
g = 0.753 +- 2e-5 on digits-dvs at initialisation.

s lives in the buffer ``step`` (so the state dict resumes it exactly) and advances by one
per forward in TRAINING mode (the trainer runs one forward per optimiser step); evaluation
uses the current s and does not advance it (the reference evaluates with its default
``global_step = 0``, i.e. at ``start``; this module does not). ``beta_schedule="constant"``
holds ``start`` for every step (with starts of 1: the fixed b = 1 gate).

Measured at the end of the digits-dvs recipes (configs/digits_subjective_*.yaml, 900 steps,
ramp to 100): STT's gate spreads (std 0.29 / 0.35 against 0.11 / 0.15 at fixed b = 1); SDT's
becomes near-binary but saturated at 1 (every test g > 0.9): CE = D_st - D_ch + log o_ce is
positive wherever the prior predicts anything, and b = 100 turns CE > 0.05 into g ~ 1.

Gate variant (``gate_mode``): ``"or"`` is the paper's probabilistic OR of CE and CU, as in
the reference code from b401af0 (closest to the paper) through 78b7ddf; ``"ce"`` is
``g = s(b_ce CE)``, the CE-only gate of the reference since commit 027d970 ("to be CE
only"). ``change_surprise="kl"`` is the D_ch of the reference since 208d363 ("Variational
Bayesian Surprise"): the prior / transition network also predicts a log-variance
(``GaussianHead``: ``Linear(d -> 2d)`` after its MLP, split into mu and log sigma^2) and

    D_ch = KL / d = 0.5 mean_d( log sigma^2 + ((dx - mu)^2 + c) / sigma^2 )     c = 1.0

(``kl_change_surprise``; c is ``posterior_variance_c``); the reference's HEAD is
``gate_mode="ce", change_surprise="kl"``. Default ``"mse"``: the paper's and b401af0's.

Everything is per token and causal: ``g_t`` reads tokens ``<= t`` only.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BETA_SCHEDULES", "CHANGE_SURPRISES", "GATE_MODES", "GateOutput", "GaussianHead",
           "SurpriseGate", "beta_at", "causal_moving_average", "change_surprise",
           "kl_change_surprise", "static_surprise"]

BETA_SCHEDULES = ("linear", "constant")
GATE_MODES = ("or", "ce")
CHANGE_SURPRISES = ("mse", "kl")


def beta_at(step: int, start: float, end: float, warmup_steps: int, ramp_steps: int,
            schedule: str = "linear") -> float:
    """The inverse temperature after ``step`` training steps (module docstring).

    Example: start 0.1, end 100, warmup 100, ramp 800: steps 0..100 -> 0.1; step 500 ->
    0.1 + (400 / 800) 99.9 = 50.05; steps >= 900 -> 100.
    """
    if schedule == "constant" or step <= warmup_steps:
        return float(start)
    progress = min(1.0, (step - warmup_steps) / max(1, ramp_steps))
    return float(start + progress * (end - start))


def static_surprise(dx: torch.Tensor) -> torch.Tensor:
    """``D_st = ||dx||^2 / d``: ``[B, N, d] -> [B, N]``."""
    return dx.pow(2).mean(dim=-1)


def change_surprise(dx: torch.Tensor, dx_hat: torch.Tensor) -> torch.Tensor:
    """``D_ch = ||dx - dx_hat||^2 / d``: ``[B, N, d] -> [B, N]``."""
    return (dx - dx_hat).pow(2).mean(dim=-1)


def kl_change_surprise(dx: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor,
                       c: float = 1.0) -> torch.Tensor:
    """``D_ch = 0.5 mean_d(log_var + ((dx - mu)^2 + c) exp(-log_var))``: ``[B, N, d] -> [B, N]``
    (the reference's ``compute_kl_divergence``, commit 208d363; module docstring).

    Example, d = 1: dx = 2, mu = 1, log_var = 0, c = 1: 0.5 (0 + (1 + 1) 1) = 1.
    """
    return 0.5 * (log_var + ((dx - mu).pow(2) + c) * torch.exp(-log_var)).mean(dim=-1)


class GaussianHead(nn.Module):
    """``Linear(d -> 2d)`` split into ``(mu, log_var)``, each ``[.., d]`` (the reference's
    ``mu_logvar_proj`` after the prior / transition MLP, commit 208d363)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * dim)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = self.proj(features).chunk(2, dim=-1)  # [.., 2d] -> 2 x [.., d]
        return mu, log_var


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
    """``g``, and its parts, each ``[B, N]``.

    ``score`` ranks tokens in the order of ``g`` without float32 saturation, for top-k:
    ``-log(1 - g) = softplus(b_ce CE) + softplus(b_cu CU)`` for the OR gate, ``b_ce CE`` for
    the CE-only gate (both strictly increasing in ``g``). At b = 100, ``g`` rounds to exactly
    1.0 once CE > ~0.17, and a top-k on ``g`` would break those ties by position.
    """

    g: torch.Tensor
    d_st: torch.Tensor
    d_ch: torch.Tensor
    ce: torch.Tensor
    cu: torch.Tensor
    score: torch.Tensor


class SurpriseGate(nn.Module):
    """The CE/CU gate (module docstring) with learnable ``o_ce`` and ``m_cu`` and the beta
    schedule.

    Args:
        beta_ce_start, beta_ce_end, beta_cu_start, beta_cu_end: the two inverse
            temperatures at the start and at the end of the ramp (0.1 and 100: the
            reference's ``config/default.yaml``).
        beta_warmup_steps: training steps held at the start values (100, the reference's).
        beta_ramp_steps: training steps of the linear ramp after the warm-up (the reference
            ends it at the run's last step: set ``epochs * steps_per_epoch - warmup``).
        beta_schedule: ``"linear"`` (the reference's) or ``"constant"`` (the start values).
        gate_mode: ``"or"`` (paper; reference b401af0..78b7ddf) or ``"ce"`` (reference since
            027d970).
        change_surprise: ``"mse"`` (paper; reference up to 208d363) or ``"kl"`` (since
            208d363; ``forward`` then needs ``log_var``).
        posterior_variance_c: c of the KL (1.0, the reference's).
        o_ce_init, m_cu_init: initial offsets (1.025 and 1.1, as the paper).
        window: tokens of the causal moving average (100).

    Buffers: ``step`` (long, training steps taken; advanced by each training forward).
    """

    def __init__(self, beta_ce_start: float = 0.1, beta_ce_end: float = 100.0,
                 beta_cu_start: float = 0.1, beta_cu_end: float = 100.0,
                 beta_warmup_steps: int = 100, beta_ramp_steps: int = 9_900,
                 beta_schedule: str = "linear", gate_mode: str = "or",
                 change_surprise: str = "mse", posterior_variance_c: float = 1.0,
                 o_ce_init: float = 1.025, m_cu_init: float = 1.1, window: int = 100) -> None:
        super().__init__()
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got "
                             f"{beta_schedule!r}")
        if gate_mode not in GATE_MODES:
            raise ValueError(f"gate_mode must be one of {GATE_MODES} ('or': the paper's "
                             f"probabilistic OR of CE and CU; 'ce': CE only), got {gate_mode!r}")
        if change_surprise not in CHANGE_SURPRISES:
            raise ValueError(f"change_surprise must be one of {CHANGE_SURPRISES} ('mse': the "
                             f"paper's; 'kl': the reference since 208d363), got "
                             f"{change_surprise!r}")
        self.change_surprise, self.posterior_variance_c = change_surprise, float(posterior_variance_c)
        if beta_warmup_steps < 0 or beta_ramp_steps < 1:
            raise ValueError(f"need beta_warmup_steps >= 0 and beta_ramp_steps >= 1 (training "
                             f"steps), got {beta_warmup_steps} and {beta_ramp_steps}")
        self.beta_ce_start, self.beta_ce_end = float(beta_ce_start), float(beta_ce_end)
        self.beta_cu_start, self.beta_cu_end = float(beta_cu_start), float(beta_cu_end)
        self.beta_warmup_steps, self.beta_ramp_steps = int(beta_warmup_steps), int(beta_ramp_steps)
        self.beta_schedule, self.gate_mode, self.window = beta_schedule, gate_mode, int(window)
        self.o_ce = nn.Parameter(torch.tensor(float(o_ce_init)))
        if gate_mode == "ce":  # m_cu does not enter g: a buffer, not an unused parameter (DDP)
            self.register_buffer("m_cu", torch.tensor(float(m_cu_init)))
        else:
            self.m_cu = nn.Parameter(torch.tensor(float(m_cu_init)))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def betas(self, step: int | None = None) -> tuple[float, float]:
        """``(b_ce, b_cu)`` after ``step`` training steps (None: the buffer's)."""
        s = int(self.step) if step is None else int(step)
        sched = (self.beta_warmup_steps, self.beta_ramp_steps, self.beta_schedule)
        return (beta_at(s, self.beta_ce_start, self.beta_ce_end, *sched),
                beta_at(s, self.beta_cu_start, self.beta_cu_end, *sched))

    def last_betas(self) -> tuple[float, float]:
        """``(b_ce, b_cu)`` that the latest forward used: a training forward advances
        ``step`` after reading them, an evaluation forward does not."""
        return self.betas(max(int(self.step) - (1 if self.training else 0), 0))

    def forward(self, dx: torch.Tensor, dx_hat: torch.Tensor,
                history: torch.Tensor | None = None,
                log_var: torch.Tensor | None = None) -> GateOutput:
        """Gate of every token of ``dx, dx_hat [B, N, d]``; in training mode, one step of the
        beta schedule is taken after reading the betas.

        ``history [B, h]``: detached ``D_st`` of the tokens before these (streaming); the
        moving average then runs over ``history ++ D_st``. ``log_var [B, N, d]``: the
        prediction's log-variance (``change_surprise="kl"`` only; ``dx_hat`` is its mean).
        """
        d_st = static_surprise(dx)
        if self.change_surprise == "kl":
            if log_var is None:
                raise ValueError("change_surprise='kl' needs the prediction's log_var "
                                 "(a GaussianHead after the prior / transition network)")
            d_ch = kl_change_surprise(dx, dx_hat, log_var, self.posterior_variance_c)
        else:
            d_ch = change_surprise(dx, dx_hat)
        base = d_st.detach()
        if history is not None:
            base = torch.cat([history, base], dim=1)  # [B, h] + [B, N] -> [B, h + N]
        ma = causal_moving_average(base, self.window)[:, base.shape[1] - d_st.shape[1]:]
        log_o = torch.log(self.o_ce.clamp_min(1e-6))  # o_ce > 0; clamped if it ever steps past
        ce = d_st - (d_ch - log_o)
        cu = d_st - self.m_cu * ma
        beta_ce, beta_cu = self.betas()
        if self.training:
            self.step += 1
        s_ce = torch.sigmoid(beta_ce * ce)
        if self.gate_mode == "ce":
            return GateOutput(s_ce, d_st, d_ch, ce, cu, beta_ce * ce)
        s_cu = torch.sigmoid(beta_cu * cu)
        score = F.softplus(beta_ce * ce) + F.softplus(beta_cu * cu)  # -log(1 - g), exact order
        return GateOutput(s_ce + s_cu - s_ce * s_cu, d_st, d_ch, ce, cu, score)

    def extra_repr(self) -> str:
        return (f"beta_ce={self.beta_ce_start}->{self.beta_ce_end}, beta_cu={self.beta_cu_start}"
                f"->{self.beta_cu_end}, warmup={self.beta_warmup_steps}, ramp="
                f"{self.beta_ramp_steps} ({self.beta_schedule}), gate={self.gate_mode}, "
                f"change_surprise={self.change_surprise}, "
                f"window={self.window}")
