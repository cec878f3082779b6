"""The model contract: what every spikemoe model returns and declares, in one place.

The engine (train, evaluate, profile) and the measurement tools (``spikemoe.analysis``) read a
model only through this module, never by probing attributes:

* ``ModelOutput(logits, aux_loss, metrics)`` is what ``forward`` returns (``logits``
  ``[B, K]`` for a classifier, ``[B, N, V]`` for a language model; ``aux_loss`` a scalar, zero
  without a router loss; ``metrics`` detached statistics by name).
* ``SpikeMoEModel`` is the base class of every registered model. It declares the facts the
  engine needs: the input of the model's recipe (``input_shape``: one sample, ``[T, C, H, W]``
  frames or ``[N]`` byte ids), its output classes, its time steps ``T`` (1 for a model that
  does not unroll time), its measurement batch (``profile_batch_size``: a model whose routing
  couples the samples of a batch, e.g. V-MoE's capacity per routing group, is measured in
  batches of this size; None: each sample alone) and the task loss it was designed for
  (``classifier_loss``: softmax or V-MoE's sigmoid cross-entropy).
* ``model_facts(model)`` returns those facts as a ``ModelFacts``; any other ``nn.Module`` (a
  user's own model handed to the trainer or the profiler) gets the defaults: nothing declared,
  nothing checked.
* A router's spiking neuron declares which axis of its output indexes the experts
  (``mark_router_neuron``); ``router_expert_axis`` reads it back for measurement.

This module is a leaf: it imports torch only, so every layer of the package may use it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

__all__ = ["AUX_LOSS", "CLASSIFIER_LOSSES", "ExampleChoices", "ModelFacts", "ModelOutput",
           "SpikeMoEModel", "mark_router_neuron", "model_facts", "router_expert_axis", "split_aux"]

CLASSIFIER_LOSSES = ("softmax_xent", "sigmoid_xent")

AUX_LOSS = "aux_loss"
"""The key of a block's auxiliary loss in its metrics dict.

Every block and branch returns ``(out, metrics)``; a block with a router loss (V-MoE's
importance and load losses, a router's capacity loss) puts that scalar, with its gradient,
under this key. The model sums the blocks' entries into ``ModelOutput.aux_loss`` and keeps
the rest as ``ModelOutput.metrics`` (``split_aux``).
"""


class ModelOutput(NamedTuple):
    """What every spikemoe model's ``forward`` returns.

    Attributes:
        logits: ``[B, num_classes]`` (spiking models average their per-step logits over T), or
            ``[B, N, V]`` next-token logits for a language model.
        aux_loss: scalar added to the task loss by the trainer (zero without a router loss).
        metrics: detached statistics, e.g. ``blocks.3.attn.expert_rate`` ``[E]``,
            ``blocks.3.mlp.routed_to_none`` ``[]``.
    """

    logits: torch.Tensor
    aux_loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelFacts:
    """The facts a model declares (``SpikeMoEModel``); the defaults mean "not declared"."""

    input_shape: tuple[int, ...] | None = None  # one sample: (T, C, H, W) frames or (N,) ids
    num_classes: int | None = None              # output classes (vocabulary size for an LM)
    time_steps: int = 1                          # T of the forward (1: no time axis)
    measurement_batch: int | None = None         # profile batch size; None: each sample alone
    classifier_loss: str = "softmax_xent"        # one of CLASSIFIER_LOSSES
    e_step_every: int | None = None              # EM-trained: an E-step every n-th step
    m_step_on_e_step: bool = False               # EM: the E-step's batch also takes an M-step
    epoch_measurements: bool = False             # measure_epoch(x, y) at each epoch's end
    sparse_updates: bool = False                 # a step may leave parameters without gradient


class SpikeMoEModel(nn.Module):
    """Base class of the registered models: ``forward(x) -> ModelOutput`` and the declared facts.

    A subclass sets ``input_shape``, ``num_classes`` and ``T`` in its ``__init__`` and, where
    they differ from the defaults, ``profile_batch_size`` and ``classifier_loss``.
    """

    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    T: int = 1
    profile_batch_size: int | None = None
    classifier_loss: str = "softmax_xent"
    # a step may leave parameters without gradient (a layer runs only the modules it chose):
    # DistributedDataParallel must then look for unused parameters
    sparse_updates: bool = False

    def facts(self) -> ModelFacts:
        shape = None if self.input_shape is None else tuple(int(v) for v in self.input_shape)
        em = self if isinstance(self, ExampleChoices) else None
        return ModelFacts(input_shape=shape, num_classes=self.num_classes, time_steps=int(self.T),
                          measurement_batch=self.profile_batch_size,
                          classifier_loss=self.classifier_loss,
                          e_step_every=None if em is None else int(em.e_step_every),
                          m_step_on_e_step=False if em is None else bool(em.m_step_on_e_step),
                          epoch_measurements=type(self).measure_epoch
                          is not SpikeMoEModel.measure_epoch,
                          sparse_updates=bool(self.sparse_updates))

    def measure_epoch(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Measurements a model takes of itself at the end of each training epoch, on the first
        held-out batch ``(x, y)`` (no augmentation); the trainer logs them as
        ``measure/<key>`` in the epoch record. A model that overrides it declares
        ``epoch_measurements``. The model must leave its parameters, gradients, buffers and
        the random streams as it found them."""
        return {}


class ExampleChoices:
    """Mixin of a model trained by generalised (hard) EM over a latent choice per training
    example (Modular Networks, Kirsch et al., NeurIPS 2018). The trainer, seeing the
    declared ``e_step_every``:

    * hands each training batch's example indices (positions in the training set, the same on
      1 or N processes) to the model: ``model(x, index=index)`` in training;
    * calls ``attach_examples(num_examples, seed)`` once, before a checkpoint is loaded, so the
      model can allocate its stored choices (kept in the model's state dict, e.g. through
      ``get_extra_state``: a checkpoint holds them and a resume restores them exactly);
    * every ``e_step_every``-th step (steps 0, n, 2n, ... before they are taken), with the
      batch's true targets: ``chosen, metrics = model.e_step(x, y, index)`` under
      ``torch.no_grad`` (``chosen``: a tensor with a leading batch axis, the new stored choice
      of each example), then ``model.store_choices(index, chosen)`` with every rank's indices
      and choices gathered (so every rank's copy stays identical under DDP); the metrics are
      logged as an event; the step counts, and takes no M-step unless ``m_step_on_e_step``.
    """

    e_step_every: int = 10
    m_step_on_e_step: bool = False

    def attach_examples(self, num_examples: int, seed: int) -> None:
        raise NotImplementedError

    def e_step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def store_choices(self, index: torch.Tensor, chosen: torch.Tensor) -> None:
        raise NotImplementedError


def model_facts(model: nn.Module) -> ModelFacts:
    """The facts ``model`` declares; defaults (nothing declared) for any other ``nn.Module``."""
    return model.facts() if isinstance(model, SpikeMoEModel) else ModelFacts()


def split_aux(metrics: dict[str, torch.Tensor]
              ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """Take a block's auxiliary loss out of its metrics.

    Args:
        metrics: a block's ``(out, metrics)`` metrics, possibly holding ``AUX_LOSS``.

    Returns:
        ``(aux, rest)``: the scalar under ``AUX_LOSS`` (None when absent) and a new dict of the
        other entries (``metrics`` itself is not modified).
    """
    rest = dict(metrics)
    return rest.pop(AUX_LOSS, None), rest


_EXPERT_AXIS = "_spikemoe_expert_axis"


def mark_router_neuron(neuron: nn.Module, expert_axis: int) -> nn.Module:
    """Declare ``neuron`` a router's spiking neuron whose output indexes the experts along
    ``expert_axis`` (of its ``[T, ...]`` output); measurement reports its rate per expert."""
    setattr(neuron, _EXPERT_AXIS, int(expert_axis))
    return neuron


def router_expert_axis(module: nn.Module) -> int | None:
    """The expert axis ``module`` was declared with (``mark_router_neuron``), else None."""
    return getattr(module, _EXPERT_AXIS, None)
