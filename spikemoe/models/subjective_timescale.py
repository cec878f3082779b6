"""Subjective Timescale Transformer (STT; Wieser et al., arXiv 2511.21408; ``shared/reference/
papers.md`` section 5): a decoder-only causal transformer whose every other layer (1, 3, ...)
is routed per token, over TIME: a token whose update its predecessor predicted skips it.

Routed layer l, training (teacher; every token runs the block once to be judged):

    y      = Block_l(x)                      dx_t = y_t - x_t          (the actual residual)
    dx_hat_t = TPN(RMSNorm(y_{t-1})),  dx_hat_1 = 0      (transition network: SwiGLU ~ d/16,
                                                          from the previous token's output)
    L_TPN  = MSE(dx_hat, stopgrad(dx))  (its KL with change_surprise="kl")      weight 0.05
    g      = SurpriseGate(dx, dx_hat)        (moe/surprise.py)
    S      = top-k of g per sequence (k = max(1, floor(gamma N)), gamma = 0.5) or g >= 0.75
    L_g    = mean(g)                         weight 0.001, in BOTH selection modes, as the
             reference (fredericowieser/Dynamic-Transformers b401af0 src/models/stt/model.py
             adds stt_g_reg_loss whenever it trains; ``gate_reg_always=False``: threshold only)
    x_t   <- x_t + g_t (Block_l(x_S)_t - x_t)   for t in S (second pass: attention among S)

Inference (``eval_selection="router"``): the causal router ``TimescaleRouter``
(``Linear(2d -> 1)`` on the detached ``[x_t, x_{t-1}]``, trained by BCE against the teacher
mask, weight 0.01) picks S before the block runs (logit > 0); selected tokens take the full
update ``x_t <- Block_l(x_S)_t`` (g needs the teacher pass, which inference skips; the
reference code does the same). In streaming inference (``stream``) only selected tokens
write keys/values into layer l's KV cache. ``"router_topk"``: top-k of the router logits
(fixed capacity; the compute benchmark uses it); ``"teacher"``: the training selection, with
its dense teacher pass.

For event data the tokens are FRAMES (``causal_sequence.py``), so STT decides per frame
whether a routed layer computes.

The gate's betas follow the reference's linear ramp 0.1 -> 100 (``moe/surprise.py``).

aux_loss = 0.05 mean_l L_TPN + 0.01 mean_l L_router + 0.001 mean_l mean(g);
metrics per routed layer i: ``layers.i.mask`` (``[B, N]`` bool, the tokens that ran; the
trainer's sums skip tables; ``forward(x, select=...)`` replays it), ``layers.i.selected``;
with a teacher pass also
``layers.i.teacher_selected``, ``layers.i.router_agreement``, ``layers.i.gate_mean``,
``layers.i.gate_extreme``, ``layers.i.beta_ce``, ``layers.i.tpn_loss``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.causal_transformer import DecoderBlock, RMSNorm, SwiGLU
from ..moe.surprise import GaussianHead, SurpriseGate, kl_change_surprise
from ..moe.token_selection import (
    TimescaleRouter,
    gate_regulariser,
    router_agreement,
    router_loss,
    run_selected,
    threshold_mask,
    topk_mask,
)
from .causal_sequence import DIGITS, LM_SMALL, TEST, CausalSequenceModel, StreamState
from .registry import check_overrides, register_model
from .subjective_depth import GATE, GATE_KEYS, _check_choices, gate_metrics

__all__ = ["SubjectiveTimescaleTransformer", "TimescaleLayer"]


class TimescaleLayer(nn.Module):
    """A routed layer: the block, the transition network, the surprise gate and the router."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, tpn_hidden: int,
                 rope_base: float, gate: dict) -> None:
        super().__init__()
        self.block = DecoderBlock(dim, num_heads, mlp_hidden, rope_base)
        self.tpn_norm = RMSNorm(dim, eps=1e-6)
        self.tpn = SwiGLU(dim, tpn_hidden)
        self.gate = SurpriseGate(**gate)
        # change_surprise="kl": the TPN predicts a mean and a log-variance (reference 208d363)
        self.tpn_head = GaussianHead(dim) if self.gate.change_surprise == "kl" else None
        self.router = TimescaleRouter(dim)

    def teacher(self, x: torch.Tensor, positions: torch.Tensor):
        """The teacher pass over every token: ``(gate, tpn_loss)`` (module docstring)."""
        y = self.block(x, positions)
        dx = y - x
        # dx_hat_t from the previous token's output at this layer; dx_hat_1 = 0
        pred = self.tpn(self.tpn_norm(y[:, :-1]))  # [B, N - 1, D], from y_{t-1}
        zero = torch.zeros_like(y[:, :1])
        if self.tpn_head is not None:  # KL: mean and log-variance, (0, 0) for the first token
            mu, log_var = self.tpn_head(pred)
            dx_hat = torch.cat([zero, mu], dim=1)  # [B, N, D]
            log_var = torch.cat([zero, log_var], dim=1)
            loss = kl_change_surprise(dx.detach(), dx_hat, log_var,
                                      self.gate.posterior_variance_c).mean()
            return self.gate(dx, dx_hat, log_var=log_var), loss
        dx_hat = torch.cat([zero, pred], dim=1)  # [B, 1, D] + [B, N - 1, D] -> [B, N, D]
        return self.gate(dx, dx_hat), F.mse_loss(dx_hat, dx.detach())


class SubjectiveTimescaleTransformer(CausalSequenceModel):
    """STT (module docstring): ``depth`` blocks, the odd ones (1, 3, ...) routed.

    Args: as ``SubjectiveDepthTransformer`` (``tpn_hidden``/``tpn_weight`` in place of the
    prior's; no ``router_input``: the router reads the layer's input ``[x_t, x_{t-1}]``, as
    the reference), see ``models/subjective_depth.py``; and ``gate_reg_always``: the mean-g
    regulariser in both selection modes (True, reference) or with threshold only.
    """

    def __init__(self, *, depth: int, gamma: float, selection: str, threshold: float,
                 eval_selection: str, tpn_hidden: int | None, ma_window: int,
                 topk_min_one: bool, gate_reg_always: bool, tpn_weight: float,
                 router_weight: float, gate_reg_weight: float, **base) -> None:
        gate = {key: base.pop(key) for key in GATE_KEYS}
        super().__init__(**base)
        if depth < 2 or depth % 2:
            raise ValueError(f"{self.name}: every other layer is routed, so depth must be even "
                             f"and >= 2, got {depth}")
        _check_choices(self.name, selection, eval_selection, gamma)
        self.depth, self.gamma, self.selection = int(depth), float(gamma), selection
        self.threshold, self.eval_selection = float(threshold), eval_selection
        self.tpn_weight, self.router_weight = float(tpn_weight), float(router_weight)
        self.gate_reg_weight = float(gate_reg_weight)
        self.topk_min_one, self.gate_reg_always = bool(topk_min_one), bool(gate_reg_always)
        gate["window"] = ma_window
        hidden = tpn_hidden or max(1, self.dim // 16)
        self.layers = nn.ModuleList(
            TimescaleLayer(self.dim, self.num_heads, self.mlp_hidden, hidden, self.rope_base,
                           gate) if i % 2 else
            DecoderBlock(self.dim, self.num_heads, self.mlp_hidden, self.rope_base)
            for i in range(self.depth))
        self.routed_layers = tuple(range(1, self.depth, 2))
        self.init_weights()

    def forward_tokens(self, h, positions, select=None):
        tpn, routing, reg = [], [], []
        metrics: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, TimescaleLayer):
                h = layer(h, positions)
                continue
            logits = layer.router(h)  # [B, N], causal: reads x_t and x_{t-1}
            g = None
            replay = select is not None and i in select
            if self.training or self.eval_selection == "teacher":
                gate, tpn_loss = layer.teacher(h, positions)
                g = gate.g
                teacher = (topk_mask(gate.score, self.gamma, self.topk_min_one)  # order of g
                           if self.selection == "topk" else threshold_mask(g, self.threshold))
                mask = teacher
                tpn.append(tpn_loss)
                routing.append(router_loss(logits, teacher))
                if self.gate_reg_always or self.selection == "threshold":
                    reg.append(gate_regulariser(g))
                metrics.update({
                    f"layers.{i}.teacher_selected": teacher.float().mean(),
                    f"layers.{i}.router_agreement": router_agreement(logits, teacher),
                    **gate_metrics(i, g, layer.gate),
                    f"layers.{i}.tpn_loss": tpn_loss.detach(),
                })
            elif self.eval_selection == "router":
                mask = logits > 0
            else:
                mask = topk_mask(logits, self.gamma, self.topk_min_one)
            if replay:
                mask = select[i].to(torch.bool)
            h = run_selected(layer.block, h, positions, mask, g)
            metrics[f"layers.{i}.selected"] = mask.float().mean()
            metrics[f"layers.{i}.mask"] = mask  # [B, N]: which tokens ran (a table; replayable)
        aux = h.new_zeros(())
        if tpn:
            aux = aux + self.tpn_weight * torch.stack(tpn).mean() \
                + self.router_weight * torch.stack(routing).mean()
        if reg:
            aux = aux + self.gate_reg_weight * torch.stack(reg).mean()
        return h, aux, metrics

    def step_tokens(self, h: torch.Tensor, positions: torch.Tensor, state: StreamState,
                    select=None) -> torch.Tensor:
        if select is None and self.eval_selection != "router":
            raise ValueError(f"{self.name}: streaming chooses tokens causally, one at a time; "
                             f"eval_selection={self.eval_selection!r} needs the whole sequence. "
                             "Build the model with eval_selection='router', or pass select=.")
        for i, layer in enumerate(self.layers):
            kv, extra = state.kv[i], state.extra[i]
            if not isinstance(layer, TimescaleLayer):
                h = layer(h, positions, cache=kv)
                continue
            logits = layer.router(h, prev=extra.get("prev"))  # [B, 1]
            extra["prev"] = h  # x_{t-1} of the next step
            mask = select[i].to(torch.bool) if select is not None and i in select else logits > 0
            h = run_selected(layer.block, h, positions, mask, None, cache=kv)
        return h


# The paper's routing choices (papers.md section 5), as SDT's (the gate and its beta ramp:
# subjective_depth.GATE); TPN loss weight 0.05; the mean-g regulariser always on (reference).
_FAMILY = dict(GATE, gamma=0.5, selection="topk", threshold=0.75, eval_selection="router",
               tpn_hidden=None, gate_reg_always=True, tpn_weight=0.05, router_weight=0.01,
               gate_reg_weight=0.001)


def _build(name: str, size: dict, overrides: dict) -> SubjectiveTimescaleTransformer:
    return SubjectiveTimescaleTransformer(
        name=name, **check_overrides(name, {**size, **_FAMILY}, overrides))


@register_model
def subjective_timescale_digits(**overrides):
    """STT on digits-dvs: 4 frame tokens (routed per frame), width 64, 4 layers, gamma 0.5."""
    return _build("subjective_timescale_digits", DIGITS, overrides)


@register_model
def subjective_timescale_lm_small(**overrides):
    """STT byte-level LM: vocab 256, 128-byte context, width 128, 4 layers (2 routed)."""
    return _build("subjective_timescale_lm_small", LM_SMALL, overrides)


@register_model
def test_subjective_timescale(**overrides):
    """Tiny STT for tests: [T=2, 2, 16, 16] frames, width 32, layers 0 dense and 1 routed."""
    return _build("test_subjective_timescale", TEST, overrides)
