"""Generalised (Viterbi) EM over the modular layers' choices (Kirsch et al., NeurIPS 2018,
arXiv 1811.05249, Sec. 3; reference louiskirsch/libmodular ``modular.py`` ``e_step``,
``m_step``, ``evaluation``).

One choice a*_n is stored per training example and modular layer, uniformly at random at first.

    E-step (no gradient step), per example n of the batch:
        candidates  a^(0) = a*_n (the stored joint choice of all layers),
                    a^(1..S-1) ~ p(a | x_n): every layer sampled in one forward, each layer's
                    controller reading the input produced under the choices sampled before it
        score(a)  = log p(y_n | x_n, a) + log p(a | x_n)
                    log p(y | x, a): minus the task cross-entropy of the network's output
                    (a language model: summed over the example's target tokens);
                    log p(a | x): summed over layers, positions and slots
        a*_n     <- argmax_j score(a^(j))     (ties keep a^(0): the choice never gets worse)
    M-step loss = -mean_n log p(y_n | x_n, a*_n) / Z  -  mean_n log p(a*_n | x_n) / Z
        the first term is the trainer's task loss (a mean over the Z targets per example);
        the second is the controller's cross-entropy to the stored choice, returned as
        ``ModelOutput.aux_loss`` (``controller_loss``), divided by Z so both terms keep the
        reference's 1:1 ratio (Z = 1 for a classifier, N tokens for a language model).
    Inference: each controller's mode per slot.

Cost of an E-step: S forwards of the whole network (S = 10: as 10 / 3 training steps of
forward + backward), every ``e_step_every`` = 10 steps; the reference's defaults (its
``sample_size=10`` and ``step = e_step if i % 10 == 0 else m_step``). An E-step takes no
M-step (``m_step_on_e_step = False``, as the reference).

Normalisation during the E-step: the candidates run in the model's training mode (batch
statistics, as the M-step sees), and every BatchNorm's running statistics are restored
afterwards: S scoring forwards are not S training batches (``frozen_norm_statistics``).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..contract import ExampleChoices
from .modular_layer import ModularLayer, Routing, RoutingRecord

__all__ = ["ModularEM", "controller_loss", "frozen_norm_statistics", "log_likelihood"]


@contextlib.contextmanager
def frozen_norm_statistics(model: nn.Module):
    """Run ``model`` in its current mode, then put every BatchNorm's running mean, variance and
    batch count back as they were."""
    saved = [(bn, [t.clone() if t is not None else None
                   for t in (bn.running_mean, bn.running_var, bn.num_batches_tracked)])
             for bn in model.modules() if isinstance(bn, _BatchNorm)]
    try:
        yield
    finally:
        for bn, (mean, var, count) in saved:
            for t, old in ((bn.running_mean, mean), (bn.running_var, var),
                           (bn.num_batches_tracked, count)):
                if t is not None:
                    t.copy_(old)


def log_likelihood(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log p(y | x, a)`` per example: ``logits [B, C], y [B]`` -> ``-CE [B]``;
    ``logits [B, N, V], y [B, N]`` -> ``-sum_t CE_t [B]``.

    Raises:
        ValueError: soft or mixed targets (MixUp / CutMix): the E-step scores true labels.
    """
    if y.is_floating_point() or y.shape != logits.shape[:-1]:
        raise ValueError(f"the E-step scores true class indices: expected targets of shape "
                         f"{tuple(logits.shape[:-1])} (int64), found {tuple(y.shape)} "
                         f"({y.dtype}). Turn batch mixing off for EM-trained models "
                         "(augment.mixup_alpha=0 augment.cutmix_alpha=0).")
    ce = F.cross_entropy(logits.float().flatten(0, -2), y.flatten(), reduction="none")
    return -ce.view(y.shape).flatten(1).sum(dim=1) if y.dim() > 1 else -ce


def controller_loss(records: list[RoutingRecord], targets_per_example: int) -> torch.Tensor:
    """``-mean_n sum_layers log p(a*_n | x_n) / Z``: the cross-entropy of every EM controller
    to the stored choice (module docstring)."""
    logp = sum(r.logp for r in records if r.logp is not None)  # [B]
    return -logp.mean() / targets_per_example


class ModularEM(ExampleChoices):
    """The EM side of a model with ``ModularLayer``s (``controller="em"``).

    A model mixes it in before ``SpikeMoEModel`` and implements
    ``route(x, routing) -> (logits, metrics)`` (one forward under a routing context) and
    sets ``targets_per_example`` (Z). ``samples`` is S. Layers are found in module order,
    which is the order a forward calls them (the models here call each layer once).
    """

    e_step_every: int = 10
    m_step_on_e_step: bool = False
    samples: int = 10
    targets_per_example: int = 1

    def em_layers(self) -> list[ModularLayer]:
        return [m for m in self.modules()
                if isinstance(m, ModularLayer) and m.controller_kind == "em"]

    def routing_for(self, index: torch.Tensor | None) -> Routing:
        """Training with an index: the stored choices (M-step). Otherwise (evaluation, or a
        training-mode graph probe without an index): the controllers' mode."""
        if self.training and index is not None:
            return Routing("stored", index=index)
        return Routing("mode")

    def attach_examples(self, num_examples: int, seed: int) -> None:
        """Allocate every layer's stored choices, uniformly at random from ``seed``."""
        if num_examples < 1:
            raise ValueError(f"attach_examples: expected >= 1 training example, found "
                             f"{num_examples}")
        g = torch.Generator().manual_seed(int(seed))
        for layer in self.em_layers():  # one stream, layers in order: reproducible
            layer.allocate(int(num_examples), g)

    @torch.no_grad()
    def e_step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Score S joint candidates per example, keep the best (module docstring).

        Returns:
            ``chosen [B, sum_layers P*K]`` int64 (each layer's ``[B, P, K]`` flattened, layers
            in order), and metrics: ``changed`` (fraction of examples whose choice moved),
            ``score_gain`` (mean of best minus stored score, >= 0).
        """
        if y.is_floating_point():  # fail before S forwards
            log_likelihood(y.new_zeros(*y.shape, 1), y)
        scores, choices = [], []
        with frozen_norm_statistics(self):
            for j in range(max(1, int(self.samples))):
                routing = Routing("candidate", index=index, candidate=j)
                logits, _ = self.route(x, routing)
                logp = sum(r.logp for r in routing.records if r.logp is not None)
                scores.append(log_likelihood(logits, y) + logp)  # [B]
                choices.append(torch.cat([r.choice.flatten(1) for r in routing.records], 1))
        score = torch.stack(scores)  # [S, B]
        best = score.argmax(dim=0)  # [B]: the first maximum, so ties keep candidate 0
        rows = torch.arange(score.shape[1], device=score.device)
        chosen = torch.stack(choices)[best, rows]  # [S, B, C] -> [B, C]
        return chosen, {"changed": (best != 0).float().mean(),
                        "score_gain": (score[best, rows] - score[0]).mean()}

    def store_choices(self, index: torch.Tensor, chosen: torch.Tensor) -> None:
        """Write ``chosen [B, sum_layers P*K]`` (``e_step``'s layout) for ``index [B]``."""
        layers = self.em_layers()
        widths = [layer.positions * layer.k for layer in layers]
        if chosen.dim() != 2 or chosen.shape[1] != sum(widths) or chosen.shape[0] != len(index):
            raise ValueError(f"store_choices: expected chosen [{len(index)}, {sum(widths)}] "
                             f"(e_step's output for {len(index)} indices), found "
                             f"{tuple(chosen.shape)}")
        for layer, part in zip(layers, chosen.split(widths, dim=1), strict=True):
            layer.store(index, part.reshape(-1, *layer.choice_shape))  # [B, P*K] -> [B, P, K]
