"""Multi-view fusion by a gradient-sensitive gate, and multi-stage view dropout.

After Shan et al., "Optimizing Speech Multi-View Feature Fusion through Conditional
Computation" (ICASSP 2025, arXiv 2501.08057). What the paper states: per view v a gate
network G gives a score; with a bias term, a softmax over the views gives weights w_v; the
output is the soft sum of the views (no top-k); the gate is "gradient-sensitive" (it reacts
to the views' conflicting updates); views are dropped during training in stages. Its method
section was not readable here, so the rest is this module's choice, each one a switch:

    s_v = G_v(x_v) + b_v + lambda * a_v        G_v: Linear(D -> 1), b_v a learned bias
    w   = softmax_v(s_v  with s_v = -inf where view v is dropped)             [B, V]
    y   = sum_{v kept} w_v x_v                                                 [B, D]

Gradient sensitivity (``gradient_sensitive=True``): ``a_v`` is a detached running estimate of
how well view v agrees with the update the network asks of the fused features. In training
a hook on ``y`` reads g = dL/dy and measures, per sample b and kept view v,

    c_{b,v} = cos(-g_b, x_{b,v})      (the descent direction of y against the view's features)

then ``a <- m a + (1 - m) mean_b c_{b,v}`` (momentum ``m = agreement_momentum``). A view whose
features point against the update (negative cosine: it conflicts with what the shared layers
need) is pushed down by ``lambda * (a_v - a_u)`` logits relative to view u; softmax is
shift-invariant, so only the differences act. Why this form: it is label-free (``forward``
sees no targets), costs one [B, V, D] product per step (no extra backward pass), is bounded
(|lambda a| <= lambda) and is scale-free (a cosine), where the gate's own gradient
``dL/ds_v = w_v <g, x_v - y>`` is neither remembered across steps nor normalised. It is a
buffer, so checkpoints carry it and a resume is exact. Off: a plain learned softmax gate.

Multi-stage view dropout (``StagedViewDropout``): training is cut into stages by epoch; in
each stage a sample drops view v with probability p_v (at most one view per sample: one
uniform draw u, view v dropped when ``sum_{u<v} p_u <= u < sum_{u<=v} p_u``). A dropped view's
weight is forced to 0 and the other weights renormalised (the -inf score above). The stage is
read from a counter of training samples seen (a buffer), ``epoch = seen // samples_per_epoch``.

Test time: the model passes ``keep`` (a view missing: weight 0, so the output is EXACTLY the
kept view's features: w = 1.0 and no other term is added) or replaces a view by noise before
its encoder.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEFAULT_STAGES", "GradientSensitiveFusion", "StagedViewDropout"]

# (first epoch, per-view drop probabilities), for the 12-epoch digits recipe (about 40% / 35% /
# 25% of training). Stage 1: each view alone often enough that neither encoder starves while
# the faster one dominates the fused loss; stage 2: mostly fused, the gate learns to mix;
# stage 3: no dropout, the fused path as used at test time.
DEFAULT_STAGES = ((0, (0.3, 0.3)), (5, (0.15, 0.15)), (9, (0.0, 0.0)))


class GradientSensitiveFusion(nn.Module):
    """Softmax gate over V views of width D (module docstring).

    Args:
        num_views: V >= 2.
        dim: feature width D of every view.
        gradient_sensitive: add ``sensitivity * agreement`` to the scores (module docstring).
        sensitivity: lambda, logits per unit of agreement (a cosine, in [-1, 1]).
        agreement_momentum: m of the running agreement (0.9: about the last 10 steps).
        gate_zero_init: G_v and b_v start at zero, so training starts from the plain mean
            ``w_v = 1 / V`` (the paper does not say; a neutral start favours no view).
    """

    def __init__(self, num_views: int, dim: int, *, gradient_sensitive: bool = True,
                 sensitivity: float = 1.0, agreement_momentum: float = 0.9,
                 gate_zero_init: bool = True) -> None:
        super().__init__()
        if num_views < 2:
            raise ValueError(f"fusion needs at least 2 views, got num_views={num_views}; a "
                             "single view needs no gate (use the view's features directly)")
        if not 0.0 <= agreement_momentum < 1.0:
            raise ValueError(f"agreement_momentum must lie in [0, 1), got {agreement_momentum}")
        self.num_views, self.dim = num_views, dim
        self.gradient_sensitive = bool(gradient_sensitive)
        self.sensitivity, self.momentum = float(sensitivity), float(agreement_momentum)
        self.gates = nn.ModuleList(nn.Linear(dim, 1) for _ in range(num_views))
        self.bias = nn.Parameter(torch.zeros(num_views))
        if gate_zero_init:
            for g in self.gates:
                nn.init.zeros_(g.weight)
                nn.init.zeros_(g.bias)
        self.register_buffer("agreement", torch.zeros(num_views))

    def forward(self, xs: list[torch.Tensor | None], keep: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fuse the views.

        Args:
            xs: V features ``[B, D]``; None for a view not computed (it must be dropped in
                every sample of ``keep``).
            keep: ``[B, V]`` bool, False where a view is dropped (at least one True per row);
                None: every computed view is kept.
        Returns:
            ``(y [B, D], metrics)``: ``weights [V]`` (batch mean of w) and, when gradient
            sensitive, ``agreement [V]`` (the running estimate a).
        """
        if len(xs) != self.num_views:
            raise ValueError(f"expected {self.num_views} views, got {len(xs)}")
        ref = next((x for x in xs if x is not None), None)
        if ref is None:
            raise ValueError("every view is None: at least one view must be computed")
        B = ref.shape[0]
        present = torch.tensor([x is not None for x in xs], device=ref.device)
        keep = present.expand(B, -1) if keep is None else keep & present  # [B, V]
        scores = torch.stack([g(x).squeeze(-1) if x is not None else ref.new_zeros(B)
                              for g, x in zip(self.gates, xs)], 1) + self.bias  # [B, V]
        if self.gradient_sensitive:
            scores = scores + self.sensitivity * self.agreement.to(scores.dtype)
        w = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=1)  # [B, V]
        y = None
        for v, x in enumerate(xs):
            if x is None:  # not computed: no term at all, so one kept view is passed exactly
                continue
            term = torch.where(keep[:, v, None], w[:, v, None] * x, torch.zeros_like(x))
            y = term if y is None else y + term
        if self.gradient_sensitive and self.training and y.requires_grad:
            feats = torch.stack([x.detach() if x is not None else torch.zeros_like(ref)
                                 for x in xs], 1)  # [B, V, D]
            kept = keep.detach()
            y.register_hook(lambda g: self._update_agreement(g, feats, kept))
        metrics = {"weights": w.detach().mean(0)}
        if self.gradient_sensitive:
            metrics["agreement"] = self.agreement.detach().clone()
        return y, metrics

    @torch.no_grad()
    def _update_agreement(self, grad: torch.Tensor, feats: torch.Tensor, keep: torch.Tensor
                          ) -> None:
        """``a <- m a + (1 - m) mean_{b kept} cos(-g_b, x_{b,v})``; views kept nowhere stay."""
        c = F.cosine_similarity(-grad.float()[:, None, :], feats.float(), dim=-1)  # [B, V]
        k = keep.float()
        n = k.sum(0)  # [V]
        mean = (c * k).sum(0) / n.clamp(min=1)
        new = self.momentum * self.agreement + (1 - self.momentum) * mean
        self.agreement.copy_(torch.where(n > 0, new, self.agreement))


class StagedViewDropout(nn.Module):
    """Per-sample view dropout whose probabilities change by training stage (module docstring).

    Args:
        num_views: V.
        stages: ``((first_epoch, (p_1, ..., p_V)), ...)`` with first epochs increasing from 0;
            ``sum_v p_v <= 1`` in each stage (at most one view dropped per sample).
        samples_per_epoch: training samples per epoch of this process (digits-dvs: 1442; under
            N processes 1442 / N, each counts its own).
    """

    def __init__(self, num_views: int, stages=DEFAULT_STAGES, samples_per_epoch: int = 1442
                 ) -> None:
        super().__init__()
        stages = tuple((int(e), tuple(float(p) for p in ps)) for e, ps in stages)
        if not stages or stages[0][0] != 0 or any(a[0] >= b[0] for a, b in zip(stages, stages[1:])):
            raise ValueError(f"view dropout stages must start at epoch 0 and increase, got {stages}")
        for e, ps in stages:
            if len(ps) != num_views or min(ps) < 0 or sum(ps) > 1:
                raise ValueError(f"stage from epoch {e}: expected {num_views} probabilities >= 0 "
                                 f"summing to <= 1 (one view dropped at most), got {ps}")
        if samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        self.stages, self.samples_per_epoch = stages, int(samples_per_epoch)
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))

    def probabilities(self) -> tuple[float, ...]:
        """The drop probability of each view in the current stage."""
        epoch = int(self.seen) // self.samples_per_epoch
        return [ps for e, ps in self.stages if e <= epoch][-1]

    def forward(self, batch: int, device: torch.device) -> torch.Tensor:
        """``keep [B, V]`` bool: all True outside training; in training drawn, and ``seen += B``."""
        V = len(self.stages[0][1])
        if not self.training:
            return torch.ones(batch, V, dtype=torch.bool, device=device)
        p = torch.tensor(self.probabilities(), device=device)
        hi = torch.cumsum(p, 0)  # [V]: view v dropped when hi_v - p_v <= u < hi_v
        u = torch.rand(batch, 1, device=device)  # [B, 1]
        self.seen += batch
        return ~((u >= hi - p) & (u < hi))
