"""The one output type every model returns."""
from __future__ import annotations

from typing import NamedTuple

import torch


class ModelOutput(NamedTuple):
    """What every spikemoe model's ``forward`` returns.

    Attributes:
        logits: ``[B, num_classes]``; spiking models average their per-step logits over T.
        aux_loss: scalar added to the task loss by the trainer (zero without a router loss).
        metrics: detached statistics, e.g. ``blocks.3.attn.expert_rate`` ``[E]``,
            ``blocks.3.mlp.routed_to_none`` ``[]``.
    """

    logits: torch.Tensor
    aux_loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
