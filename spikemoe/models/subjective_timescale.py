"""Subjective Timescale Transformer (STT; Wieser et al., arXiv 2511.21408; reference code
fredericowieser/Dynamic-Transformers, commit b401af0 closest to the paper): a decoder-only
causal transformer whose every other layer (1, 3, ...) is routed per token, over TIME: a
token whose update its predecessor predicted skips it. Selection, router, aux loss and
metrics shared with SDT: ``routed_sequence.py``.

Routed layer l, training (teacher; every token runs the block once to be judged):

    y      = Block_l(x)                      dx_t = y_t - x_t          (the actual residual)
    dx_hat_t = TPN(RMSNorm(y_{t-1})),  dx_hat_1 = 0      (transition network: SwiGLU ~ d/16,
                                                          from the previous token's output)
    L_TPN  = MSE(dx_hat, stopgrad(dx))  (its KL with change_surprise="kl")      weight 0.05
    g      = SurpriseGate(dx, dx_hat)        (moe/surprise.py)
    S      = top-k of g per sequence (k = max(1, floor(gamma N)), gamma = 0.5) or g >= 0.75
    L_g    = mean(g)                         weight 0.001, in BOTH selection modes, as the
             reference (b401af0 src/models/stt/model.py adds stt_g_reg_loss whenever it
             trains; ``gate_reg_always=False``: threshold only)
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
metrics per routed layer i: ``layers.i.selected`` and ``layers.i.mask``; with a teacher pass
also the teacher's (``routed_sequence.py``) and ``layers.i.tpn_loss``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..contract import AUX_LOSS
from ..layers.causal_transformer import DecoderBlock, RMSNorm, SwiGLU
from ..moe.surprise import GaussianHead, SurpriseGate, kl_change_surprise
from ..moe.token_selection import TimescaleRouter, run_selected
from .causal_sequence import StreamState, register_family
from .routed_sequence import ROUTING, AuxTerms, RoutedSequenceModel

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


class SubjectiveTimescaleTransformer(RoutedSequenceModel):
    """STT (module docstring): ``depth`` blocks, the odd ones (1, 3, ...) routed.

    Args:
        tpn_hidden: transition network width (None: max(1, dim // 16)).
        gate_reg_always: the mean-g regulariser in both selection modes (True, reference) or
            with threshold only.
        tpn_weight: weight of L_TPN in the aux loss (0.05).
        Others: see ``RoutedSequenceModel`` and ``CausalSequenceModel``. The router reads the
        layer's input ``[x_t, x_{t-1}]``, as the reference.
    """

    def __init__(self, *, tpn_hidden: int | None, gate_reg_always: bool, tpn_weight: float,
                 **routed) -> None:
        super().__init__(**routed)
        self.tpn_weight, self.gate_reg_always = float(tpn_weight), bool(gate_reg_always)
        hidden = tpn_hidden or max(1, self.dim // 16)
        self.layers = nn.ModuleList(
            TimescaleLayer(self.dim, self.num_heads, self.mlp_hidden, hidden, self.rope_base,
                           self.gate_config) if i % 2 else
            DecoderBlock(self.dim, self.num_heads, self.mlp_hidden, self.rope_base)
            for i in range(self.depth))
        self.init_weights()

    @property
    def prediction_weight(self) -> float:
        return self.tpn_weight

    def forward_tokens(self, h, positions, select=None):
        terms, metrics = AuxTerms(), {}
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, TimescaleLayer):
                h = layer(h, positions)
                continue
            logits = layer.router(h)  # [B, N], causal: reads x_t and x_{t-1}
            g = teacher = None
            if self.uses_teacher():
                gate, tpn_loss = layer.teacher(h, positions)
                g, teacher = gate.g, self.teacher_mask(gate)
                terms.prediction.append(tpn_loss)
                self.add_teacher_losses(terms, logits, teacher, g)
                metrics.update({**self.teacher_metrics(i, teacher, logits, g, layer.gate),
                                f"layers.{i}.tpn_loss": tpn_loss.detach()})
            mask = self.choose(i, teacher, logits, select)
            h = run_selected(layer.block, h, positions, mask, g)
            metrics.update(self.selection_metrics(i, mask))
        metrics[AUX_LOSS] = self.aux_loss(h, terms)
        return h, metrics

    def step_tokens(self, h: torch.Tensor, positions: torch.Tensor, state: StreamState,
                    select=None) -> torch.Tensor:
        self.check_streamable(select)
        for i, layer in enumerate(self.layers):
            kv, extra = state.kv[i], state.extra[i]
            if not isinstance(layer, TimescaleLayer):
                h = layer(h, positions, cache=kv)
                continue
            logits = layer.router(h, prev=extra.get("prev"))  # [B, 1]
            extra["prev"] = h  # x_{t-1} of the next step
            h = run_selected(layer.block, h, positions, self.stream_mask(i, logits, select),
                             None, cache=kv)
        return h


# The paper's routing choices and the reference's gate (routed_sequence.ROUTING), the TPN
# loss weight 0.05, the mean-g regulariser always on (reference b401af0).
register_family("subjective_timescale", SubjectiveTimescaleTransformer,
                dict(ROUTING, tpn_hidden=None, gate_reg_always=True, tpn_weight=0.05), {
    "subjective_timescale_digits":
        "STT on digits-dvs: 4 frame tokens (routed per frame), width 64, 4 layers, gamma 0.5.",
    "subjective_timescale_lm_small":
        "STT byte-level LM: vocab 256, 128-byte context, width 128, 4 layers (2 routed).",
    "test_subjective_timescale":
        "Tiny STT for tests: [T=2, 2, 16, 16] frames, width 32, layers 0 dense and 1 routed.",
})
