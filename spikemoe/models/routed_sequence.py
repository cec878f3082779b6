"""The frame shared by the routed causal sequence models, the Subjective Depth (SDT,
``subjective_depth.py``) and Subjective Timescale (STT, ``subjective_timescale.py``)
Transformers (Wieser et al., arXiv 2511.21408; reference code
fredericowieser/Dynamic-Transformers, commit b401af0 closest to the paper): ``depth`` blocks,
the odd ones (1, 3, ...) routed per token. A subclass builds the layers and the prediction of
each routed block's update (SDT's prior network, STT's transition network) with its loss
L_pred; this class holds what the two share:

    teacher   S = top-k of the gate's score per sequence (k = max(1, floor(gamma N)),
              gamma = 0.5; ``GateOutput.score`` ranks as g does) or g >= threshold (0.75)
    router    a causal router's logits [B, N], trained by BCE against the teacher mask
    mask      a replayed ``select[i]``; else the teacher (training, or
              ``eval_selection="teacher"``); else logit > 0 (``"router"``: per token, causal,
              streamable) or the top-k of the logits (``"router_topk"``: fixed capacity)
    aux_loss  = w_pred mean_l L_pred + 0.01 mean_l BCE_l + 0.001 mean_l mean(g_l)
              (mean(g): threshold selection, or always with ``gate_reg_always``; a term
              enters where its layers produced one)

``aux_loss`` travels in the metrics under ``spikemoe.contract.AUX_LOSS``. Metrics per routed
layer i: ``layers.i.selected`` (fraction of tokens that ran), ``layers.i.mask`` (``[B, N]``
bool, the tokens that ran: a table that the trainer's sums skip; ``forward(x, select=...)``
replays it), and with a teacher ``layers.i.teacher_selected``, ``layers.i.router_agreement``
(router vs teacher), ``layers.i.gate_mean``, ``layers.i.gate_extreme`` (fraction of tokens
with g < 0.1 or g > 0.9: 1 for a binary gate), ``layers.i.beta_ce`` (the gate's inverse
temperature, ``moe/surprise.py``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from ..moe.surprise import GateOutput, SurpriseGate
from ..moe.token_selection import (
    gate_regulariser,
    router_agreement,
    router_loss,
    threshold_mask,
    topk_mask,
)
from .causal_sequence import CausalSequenceModel

__all__ = ["AuxTerms", "EVAL_SELECTIONS", "GATE", "GATE_KEYS", "ROUTING", "RoutedSequenceModel",
           "SELECTIONS"]

SELECTIONS = ("topk", "threshold")
EVAL_SELECTIONS = ("router", "router_topk", "teacher")
# the SurpriseGate arguments a model takes as hyperparameters (ma_window is its ``window``)
GATE_KEYS = ("beta_ce_start", "beta_ce_end", "beta_cu_start", "beta_cu_end", "beta_warmup_steps",
             "beta_ramp_steps", "beta_schedule", "gate_mode", "change_surprise",
             "posterior_variance_c", "o_ce_init", "m_cu_init")

# The paper's routing choices: gamma = 0.5 top-k, gate offsets o_ce = 1.025 and m_cu = 1.1,
# 100-token moving average, loss weights 0.05 (L_pred, in the family) / 0.01 / 0.001.
# The reference code's (fredericowieser/Dynamic-Transformers b401af0, config/default.yaml and
# src/models/{sdt,stt}/model.py): betas 0.1 -> 100 linear after 100 warm-up steps, ending at
# the run's last step (its config/default.yaml at HEAD: max_steps 10,000, so 9,900 ramp
# steps; recipes set beta_ramp_steps to their own length), probabilistic-OR gate, top-k
# keeps max(1, floor(gamma N)).
GATE = dict(beta_ce_start=0.1, beta_ce_end=100.0, beta_cu_start=0.1, beta_cu_end=100.0,
            beta_warmup_steps=100, beta_ramp_steps=9_900, beta_schedule="linear",
            gate_mode="or", change_surprise="mse", posterior_variance_c=1.0, o_ce_init=1.025,
            m_cu_init=1.1, ma_window=100, topk_min_one=True)
ROUTING = dict(GATE, gamma=0.5, selection="topk", threshold=0.75, eval_selection="router",
               router_weight=0.01, gate_reg_weight=0.001)


@dataclass
class AuxTerms:
    """The auxiliary-loss terms of one forward, one scalar per routed layer that made one."""

    prediction: list[torch.Tensor] = field(default_factory=list)  # L_pred: prior / TPN loss
    router: list[torch.Tensor] = field(default_factory=list)      # BCE(logits, teacher)
    gate: list[torch.Tensor] = field(default_factory=list)        # mean(g)


class RoutedSequenceModel(CausalSequenceModel):
    """Base of SDT and STT (module docstring).

    Args:
        depth: blocks (even; the odd ones are routed).  gamma: top-k capacity (0.5).
        selection: "topk" or "threshold".  threshold: gate threshold (0.75).
        eval_selection: "router" | "router_topk" | "teacher" (module docstring).
        beta_ce_start, beta_ce_end, beta_cu_start, beta_cu_end, beta_warmup_steps,
        beta_ramp_steps, beta_schedule, gate_mode, change_surprise, posterior_variance_c,
        o_ce_init, m_cu_init, ma_window: the surprise gate's (``moe.surprise.SurpriseGate``;
            ma_window is its ``window``), in ``self.gate_config`` for the subclass's layers.
        topk_min_one: top-k keeps ``max(1, floor(gamma N))`` tokens (reference) instead of
            ``floor(gamma N)``.
        router_weight, gate_reg_weight: aux-loss weights (0.01, 0.001).
        Others: see ``CausalSequenceModel``.
    """

    depth_rule = "every other layer is routed"  # why depth is even (error message)
    gate_reg_always = False  # mean(g) in both selection modes, not with threshold only
    prediction_weight: float  # w_pred: the subclass's prior / TPN loss weight

    def __init__(self, *, depth: int, gamma: float, selection: str, threshold: float,
                 eval_selection: str, ma_window: int, topk_min_one: bool, router_weight: float,
                 gate_reg_weight: float, **base) -> None:
        gate = {key: base.pop(key) for key in GATE_KEYS}
        super().__init__(**base)
        if depth < 2 or depth % 2:
            raise ValueError(f"{self.name}: {self.depth_rule}, so depth must be even and >= 2, "
                             f"got {depth}")
        for key, value, choices in (("selection", selection, SELECTIONS),
                                    ("eval_selection", eval_selection, EVAL_SELECTIONS)):
            if value not in choices:
                raise ValueError(f"{self.name}: {key} must be one of {choices}, got {value!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"{self.name}: capacity gamma must be in [0, 1], got {gamma}")
        self.depth, self.gamma, self.selection = int(depth), float(gamma), selection
        self.threshold, self.eval_selection = float(threshold), eval_selection
        self.topk_min_one = bool(topk_min_one)
        self.router_weight, self.gate_reg_weight = float(router_weight), float(gate_reg_weight)
        self.gate_config = {**gate, "window": ma_window}
        self.routed_layers = tuple(range(1, self.depth, 2))

    # ------------------------------------------------------------------ selection
    def uses_teacher(self) -> bool:
        """Whether this forward selects by the teacher (training, or eval "teacher")."""
        return self.training or self.eval_selection == "teacher"

    def teacher_mask(self, gate: GateOutput) -> torch.Tensor:
        """Top-k by ``gate.score`` (the order of g, unsaturated), or g above the threshold."""
        if self.selection == "topk":
            return topk_mask(gate.score, self.gamma, self.topk_min_one)
        return threshold_mask(gate.g, self.threshold)

    def choose(self, i: int, teacher: torch.Tensor | None, logits: torch.Tensor,
               select: dict | None) -> torch.Tensor:
        """The tokens layer ``i`` runs: replayed, the teacher's, or the router's ``[B, N]``."""
        if select is not None and i in select:
            return select[i].to(torch.bool)
        if self.uses_teacher():
            return teacher
        if self.eval_selection == "router":
            return logits > 0
        return topk_mask(logits, self.gamma, self.topk_min_one)

    def stream_mask(self, i: int, logits: torch.Tensor, select: dict | None) -> torch.Tensor:
        """The tokens layer ``i`` runs in a streaming step ``[B, 1]``: replayed, else the
        causal router's (logit > 0)."""
        if select is not None and i in select:
            return select[i].to(torch.bool)
        return logits > 0

    def check_streamable(self, select: dict | None) -> None:
        """Streaming selects causally: the router's choice, or a replayed ``select``."""
        if select is None and self.eval_selection != "router":
            raise ValueError(f"{self.name}: streaming chooses tokens causally, one at a time; "
                             f"eval_selection={self.eval_selection!r} needs the whole sequence. "
                             "Build the model with eval_selection='router', or pass select=.")

    def forward(self, x: torch.Tensor, select: dict[int, torch.Tensor] | None = None):
        whole_sequence_topk = self.eval_selection == "router_topk" or (
            self.eval_selection == "teacher" and self.selection == "topk")
        if self.task == "lm" and not self.training and select is None and whole_sequence_topk:
            warnings.warn(
                f"{self.name}: eval_selection={self.eval_selection!r} picks tokens by a top-k "
                "over the whole sequence, so a prediction can depend on later tokens: this "
                "perplexity is not a causal language-model score. Use eval_selection='router' "
                "to report perplexity.", stacklevel=2)
        return super().forward(x, select)

    # ------------------------------------------------------------------ losses and metrics
    def add_teacher_losses(self, terms: AuxTerms, logits: torch.Tensor, teacher: torch.Tensor,
                           g: torch.Tensor) -> None:
        """The router's BCE against the teacher, and mean(g) where it applies."""
        terms.router.append(router_loss(logits, teacher))
        if self.gate_reg_always or self.selection == "threshold":
            terms.gate.append(gate_regulariser(g))

    def aux_loss(self, h: torch.Tensor, terms: AuxTerms) -> torch.Tensor:
        """``sum_j w_j mean_l terms_j`` over the kinds with terms; zero (on ``h``) without."""
        total = None
        for w, parts in ((self.prediction_weight, terms.prediction),
                         (self.router_weight, terms.router), (self.gate_reg_weight, terms.gate)):
            if parts:
                term = w * torch.stack(parts).mean()
                total = term if total is None else total + term
        return h.new_zeros(()) if total is None else total

    @staticmethod
    def selection_metrics(i: int, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``layers.i.selected`` and ``layers.i.mask`` (``[B, N]``: which tokens ran)."""
        return {f"layers.{i}.selected": mask.float().mean(), f"layers.{i}.mask": mask}

    @staticmethod
    def teacher_metrics(i: int, teacher: torch.Tensor, logits: torch.Tensor, g: torch.Tensor,
                        gate: SurpriseGate) -> dict[str, torch.Tensor]:
        """The teacher's share, the router's agreement with it, and the spread of the gate
        ``g [B, N]`` with the beta_ce that computed it."""
        g = g.detach()
        return {f"layers.{i}.teacher_selected": teacher.float().mean(),
                f"layers.{i}.router_agreement": router_agreement(logits, teacher),
                f"layers.{i}.gate_mean": g.mean(),
                f"layers.{i}.gate_extreme": ((g < 0.1) | (g > 0.9)).float().mean(),
                f"layers.{i}.beta_ce": g.new_tensor(gate.last_betas()[0])}
