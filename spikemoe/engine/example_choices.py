"""The E-step of an EM-trained model (``contract.ExampleChoices``; Modular Networks, Kirsch et
al., NeurIPS 2018): the trainer's side of generalised EM over a stored choice per example.

Every ``e_step_every``-th step, before it is taken, the model re-chooses each example's latent
choice from its stored one and fresh controller samples (``model.e_step``, no gradient); every
rank's indices and choices are gathered and stored on every rank, so the copies stay
identical under DistributedDataParallel (whose buffer broadcast would otherwise overwrite the
other ranks' updates with rank 0's). The step counts; it takes no M-step unless the model
declares ``m_step_on_e_step`` (the reference alternates: E-step iterations do no M-step).
"""
from __future__ import annotations

import torch
from torch import nn

from .distributed import all_gather_cat

__all__ = ["run_e_step"]


@torch.no_grad()
def run_e_step(model: nn.Module, x, y: torch.Tensor, index: torch.Tensor | None, name: str,
               logger, step: int) -> None:
    """One E-step on a batch (module docstring); with a ``logger``, its metrics become an
    ``e_step`` event at ``step``."""
    if index is None:
        raise ValueError(f"{name} is EM-trained and needs each training example's index, but "
                         "the batch carries none: build its loader with with_index=True (the "
                         "Trainer does, from the model's declared e_step_every).")
    # the model is in training mode here; how its candidate forwards treat normalisation
    # statistics is the model's choice (its e_step docstring says)
    chosen, metrics = model.e_step(x, y, index)
    model.store_choices(all_gather_cat(index), all_gather_cat(chosen))
    if logger is not None and metrics:
        logger.write("event", step, {"event": "e_step", **{
            k: v.item() if v.numel() == 1 else v.tolist() for k, v in metrics.items()}})
