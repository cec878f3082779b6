"""Training losses: cross-entropy with label smoothing, and the TET loss for spiking models.

Every model returns ``ModelOutput(logits [B, K], aux_loss, metrics)``; the trainer's loss is

    L = task(logits, targets) + aux_weight * aux_loss

with ``targets`` int64 ``[B]`` or soft ``[B, K]`` (MixUp/CutMix). ``task`` is
``nn.CrossEntropyLoss(label_smoothing=...)`` (it takes both target kinds), or TET.

Sequence models (causal language models) return ``logits [B, N, V]`` for targets ``[B, N]``:
``token_view`` flattens both to ``[B N, V]`` / ``[B N]``, so the same cross-entropy is the
mean loss per token, top-1 is next-token accuracy, and ``exp(mean token loss)`` is the
perplexity that the trainer and ``evaluate_model`` report.

TET (Temporal Efficient Training, Deng et al., ICLR 2022; as in the Spike-driven Transformer's
code) applies the loss at every time step of the per-step logits ``O [T, B, K]`` and pulls
them toward a constant ``phi``:

    L_TET = (1 - lambda) (1/T) sum_t CE(O_t, y) + lambda MSE(O, phi)

``ModelOutput`` carries only the logits averaged over T, so ``StepLogits`` reads ``O`` from
the output of the module that produces it (``head`` in the spiking transformers: ``[T, B, K]``)
with a forward hook.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StepLogits", "TETLoss", "token_view", "topk_correct"]


class TETLoss(nn.Module):
    """``forward(step_logits [T, B, K], targets [B] or [B, K]) -> scalar`` (module docstring)."""

    def __init__(self, label_smoothing: float = 0.0, lamb: float = 0.0, means: float = 1.0):
        super().__init__()
        self.ce = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.lamb, self.means = lamb, means

    def forward(self, step_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        T = step_logits.shape[0]
        ce = sum(self.ce(step_logits[t], targets) for t in range(T)) / T
        if self.lamb == 0:
            return ce
        mse = F.mse_loss(step_logits, torch.full_like(step_logits, self.means))
        return (1 - self.lamb) * ce + self.lamb * mse


class StepLogits:
    """Captures the per-time-step logits ``[T, B, K]`` that module ``name`` outputs.

    Raises:
        ValueError: the model has no such module (the message lists the top-level ones).
    """

    def __init__(self, model: nn.Module, name: str) -> None:
        modules = dict(model.named_modules())
        if name not in modules:
            top = [n for n, _ in model.named_children()]
            raise ValueError(
                f"optim.tet=true needs per-time-step logits from module optim.tet_module="
                f"{name!r}, but {type(model).__name__} has no such module (its top-level modules: "
                f"{', '.join(top)}). Set optim.tet_module, or optim.tet=false for a model "
                "without time steps.")
        self.name, self.value = name, None
        self.handle = modules[name].register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        self.value = output

    def take(self, logits: torch.Tensor) -> torch.Tensor:
        """The captured ``[T, B, K]`` of this forward, checked against ``logits [B, K]``."""
        value, self.value = self.value, None
        if not isinstance(value, torch.Tensor) or value.dim() != 3 or value.shape[1:] != logits.shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"TET needs module {self.name!r} to output per-step logits [T, B, K] = "
                f"[T, {', '.join(map(str, logits.shape))}], but it gave {got}. Point "
                "optim.tet_module at the classifier head, or set optim.tet=false.")
        return value

    def remove(self) -> None:
        self.handle.remove()


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...]) -> list[torch.Tensor]:
    """How many of ``labels [B]`` are within the top-k of ``logits [B, K]``, per k (on device)."""
    top = logits.topk(max(ks), dim=1).indices  # [B, kmax]
    hit = top == labels[:, None]  # [B, kmax]
    return [hit[:, :k].any(dim=1).sum() for k in ks]


def token_view(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token view of a sequence model's output: ``logits [B, N, V]`` with integer
    ``targets [B, N]`` -> ``[B N, V]``, ``[B N]``; classifier outputs pass unchanged.

    Raises:
        ValueError: sequence logits whose ``[B, N]`` differs from the targets'.
    """
    if logits.dim() != 3 or targets.dim() != 2 or targets.is_floating_point():
        return logits, targets
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"sequence logits {list(logits.shape)} do not match targets "
                         f"{list(targets.shape)}: a language model must give [B, N, V] logits "
                         "for [B, N] targets (one prediction per input token).")
    return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)  # [B, N, V] -> [B N, V]
