"""The task a run trains, chosen from the dataset's declared kind: its loss, what it sums per
batch, its results, which result is "better", its summary fields and its log words.

    dataset kind 'events' | 'images'  ->  ClassificationTask    (logits [B, K], labels [B])
    dataset kind 'text'               ->  LanguageModelTask     (logits [B, N, V], targets [B, N])

Train, evaluate and profile all use it (``task_for(kind)``), so no part of the engine guesses
the task from tensor shapes.

Classification: loss = cross-entropy (label smoothing; V-MoE's recipe: per-class sigmoid
cross-entropy, ``models.vit.sigmoid_cross_entropy``); top-1 and (with more than 5 classes)
top-5 accuracy in percent; better = higher test top-1.

Language model: every token is a prediction. loss = mean token cross-entropy (nats), top-1 /
top-5 are next-token accuracies, perplexity = exp(mean token loss); better = lower test
perplexity. A training epoch's perplexity is reported only without label smoothing (with it
the training loss is not a log-likelihood).

Sums are kept in a ``Meter``: named float64 tensors on the device, added per batch without a
host sync and reduced across ranks once, in one ``all_reduce``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..analysis.profile import top1_counts
from .distributed import all_reduce_sum
from .losses import token_view, topk_correct

__all__ = ["ClassificationTask", "LanguageModelTask", "Meter", "Task", "metric_means",
           "task_for"]

TASK_OF_KIND = {"events": "classification", "images": "classification", "text": "language_model"}
MAX_LIST = 16  # model metrics of up to this many entries are logged as lists, longer as a mean


class Meter:
    """Named sums on one device, reduced across ranks in one collective.

    ``add(name, value)`` accumulates a number or tensor (any shape, float64); ``reduce()``
    returns every sum added up over all ranks. Every rank must add the same names (the same
    model and task do), so the flattened sums line up in the one ``all_reduce``.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, name: str, value: torch.Tensor | float) -> None:
        value = torch.as_tensor(value, dtype=torch.float64, device=self.device)
        if name in self.sums:
            self.sums[name] += value
        else:
            self.sums[name] = value.clone()

    def reduce(self) -> dict[str, torch.Tensor]:
        """The sums over every rank (CPU float64 tensors); every rank must call it."""
        names = sorted(self.sums)
        flat = (torch.cat([self.sums[k].reshape(-1) for k in names]) if names
                else torch.zeros(0, dtype=torch.float64, device=self.device))
        flat = all_reduce_sum(flat.clone()).cpu()
        out, start = {}, 0
        for k in names:
            n = self.sums[k].numel()
            out[k] = flat[start:start + n].reshape(self.sums[k].shape)
            start += n
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.sums.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.sums = {k: v.to(self.device, torch.float64) for k, v in state.items()}


METRIC = "metrics/"  # the meter's prefix for the model's own metrics (ModelOutput.metrics)


def add_model_metrics(meter: Meter, metrics: dict[str, torch.Tensor], weight: int) -> None:
    """Sum the model's metrics weighted by batch size; per-time-step tables (2-d and more)
    are left to ``spikemoe.analysis``."""
    for key, value in metrics.items():
        if value.dim() <= 1:
            meter.add(METRIC + key, value.detach().double() * weight)


def metric_means(sums: dict[str, torch.Tensor], count: float) -> dict:
    """The model metrics' means over ``count`` samples: numbers (0-d), lists (1-d of up to
    ``MAX_LIST`` entries, e.g. per-expert rates) or ``<key>.mean`` (longer 1-d, e.g. the
    per-channel rates of EMSP)."""
    out = {}
    for name, total in sums.items():
        if not name.startswith(METRIC):
            continue
        key, mean = name[len(METRIC):], (total / max(count, 1)).float()
        if mean.dim() == 0:
            out[key] = mean.item()
        elif mean.numel() <= MAX_LIST:
            out[key] = [round(v, 6) for v in mean.tolist()]
        else:
            out[f"{key}.mean"] = mean.mean().item()
    return out


class Task:
    """Loss, sums, results and "better than" of one kind of run (module docstring)."""

    name = "task"

    def __init__(self, label_smoothing: float = 0.0, loss: str = "softmax_xent") -> None:
        self.label_smoothing = label_smoothing
        self.loss_name = loss
        if loss == "sigmoid_xent":
            from spikemoe.models.vit import sigmoid_cross_entropy

            self._criterion = lambda logits, targets: sigmoid_cross_entropy(
                logits, targets, label_smoothing)
        else:
            self._criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    # ------------------------------------------------------------ training
    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The task loss of a batch (``targets``: labels, or MixUp/CutMix soft labels)."""
        return self._criterion(*token_view(logits, targets))

    def add_train_batch(self, meter: Meter, loss: torch.Tensor, out, y: torch.Tensor) -> None:
        """Sum a training batch: loss and aux loss (x batch size), top-1 hits, samples and the
        model's metrics. ``loss`` is the total (task + weighted aux) loss of the batch."""
        logits, targets = token_view(out.logits.detach(), y)
        (hits,) = topk_correct(logits, targets, (1,))
        b = len(y)
        per_sample = targets.numel() // b  # predictions per sample: 1, or N tokens for an LM
        meter.add("loss", loss.double() * b)
        meter.add("aux_loss", out.aux_loss.detach().double() * b)
        meter.add("correct", hits.double() / per_sample)
        meter.add("samples", b)
        add_model_metrics(meter, out.metrics, b)

    def train_record(self, sums: dict[str, torch.Tensor], aux_weight: float) -> dict:
        """The ``train/*`` entries of an epoch record from the reduced sums."""
        n = float(sums["samples"])
        record = {"train/loss": float(sums["loss"]) / n, "train/aux_loss": float(sums["aux_loss"]) / n,
                  "train/top1": 100 * float(sums["correct"]) / n}
        record.update({f"train/{k}": v for k, v in metric_means(sums, n).items()})
        return record

    # ------------------------------------------------------------ evaluation
    def add_eval_batch(self, meter: Meter, out, y: torch.Tensor) -> None:
        """Sum a held-out batch: token/sample cross-entropy, top-1/top-5 hits, samples,
        predictions and the model's metrics."""
        logits, targets = token_view(out.logits.float(), y)  # [B N, V], [B N] for an LM
        c1, c5 = topk_correct(logits, targets, (1, min(5, logits.shape[1])))
        meter.add("loss", F.cross_entropy(logits, targets, reduction="sum").double())
        meter.add("correct", c1.double())
        meter.add("correct5", c5.double())
        meter.add("samples", len(y))
        meter.add("predictions", targets.numel())
        add_model_metrics(meter, out.metrics, len(y))

    def eval_result(self, sums: dict[str, torch.Tensor], num_classes: int | None) -> dict:
        """``{"loss", "top1", "top5" (more than 5 classes or not known), "n", "metrics"}``
        from reduced sums; accuracies in percent of the predictions."""
        n, m = float(sums.get("samples", 0)), float(sums.get("predictions", 0))
        result = {"loss": float(sums.get("loss", 0)) / max(m, 1),
                  "top1": 100 * float(sums.get("correct", 0)) / max(m, 1), "n": int(n)}
        if num_classes is None or num_classes > 5:
            result["top5"] = 100 * float(sums.get("correct5", 0)) / max(m, 1)
        result.update(self._eval_extras(result, m))
        result["metrics"] = metric_means(sums, n)
        return result

    def _eval_extras(self, result: dict, predictions: float) -> dict:
        return {}

    def better(self, result: dict, best: dict) -> bool:
        raise NotImplementedError

    def profile_score(self, logits: torch.Tensor, targets) -> tuple[int, int]:
        """``(correct, labelled)`` of a profiled batch (``analysis.profile_model(score=)``):
        per-sample top-1; unlabelled samples (None or negative) are not counted."""
        return top1_counts(logits, targets)

    def best_record(self, result: dict, epoch: int) -> dict:
        """What the run remembers of its best epoch (checkpointed)."""
        return {"top1": result["top1"], "epoch": epoch}

    def summary_fields(self, test: dict, best: dict) -> dict:
        """The task's entries of ``summary.json``."""
        return {"best_top1": best["top1"], "best_epoch": best["epoch"],
                "final_top1": test.get("top1"), "final_top5": test.get("top5"),
                "final_top1_ema": test.get("top1_ema")}

    def epoch_line(self, r: dict, total: int) -> str:
        """An epoch's log line from its record."""
        line = (f"epoch {r['epoch']}/{total}: train loss {r['train/loss']:.4f} top-1 "
                f"{r['train/top1']:.1f}%")
        if "test/top1" in r:
            line += self.test_words(r)
        if r.get("best/top1") is not None:
            line += f" | best {r['best/top1']:.2f}% (epoch {r['best/epoch']})"
        return line + f" | {r['samples_per_s']:.0f} samples/s, lr {r['lr']:.2e}"

    def test_words(self, record: dict) -> str:
        """The test part of an epoch's log line."""
        words = f" | test loss {record['test/loss']:.4f} top-1 {record['test/top1']:.2f}%"
        if "test/top5" in record:
            words += f" top-5 {record['test/top5']:.2f}%"
        return words

    def done_words(self, summary: dict) -> str:
        """The final log line's figures."""
        return (f"best test top-1 {summary['best_top1']:.2f}% (epoch {summary['best_epoch']}), "
                f"final {summary['final_top1']:.2f}%")


class ClassificationTask(Task):
    """One label per sample; better = higher test top-1."""

    name = "classification"

    def better(self, result: dict, best: dict) -> bool:
        return best.get("top1") is None or result["top1"] > best["top1"]


class LanguageModelTask(Task):
    """Next-token prediction on ``[B, N]`` windows; better = lower test perplexity."""

    name = "language_model"

    def train_record(self, sums: dict[str, torch.Tensor], aux_weight: float) -> dict:
        record = super().train_record(sums, aux_weight)
        if self.label_smoothing == 0:  # exp of the mean token loss, without the aux term
            n = float(sums["samples"])
            task_loss = (float(sums["loss"]) - aux_weight * float(sums["aux_loss"])) / n
            record["train/perplexity"] = math.exp(min(task_loss, 700.0))
        return record

    def profile_score(self, logits: torch.Tensor, targets) -> tuple[int, int]:
        """A profile reports no accuracy for a language model (its figures are per token:
        ``spikemoe evaluate``)."""
        return 0, 0

    def _eval_extras(self, result: dict, predictions: float) -> dict:
        return {"perplexity": math.exp(min(result["loss"], 700.0)), "tokens": int(predictions)}

    def better(self, result: dict, best: dict) -> bool:
        return best.get("perplexity") is None or result["perplexity"] < best["perplexity"]

    def best_record(self, result: dict, epoch: int) -> dict:
        return {**super().best_record(result, epoch), "perplexity": result["perplexity"]}

    def summary_fields(self, test: dict, best: dict) -> dict:
        fields = super().summary_fields(test, best)
        if "perplexity" in test:
            fields["final_perplexity"] = test["perplexity"]
        if "perplexity" in best:
            fields["best_perplexity"] = best["perplexity"]
        return fields

    def test_words(self, record: dict) -> str:
        words = f" | test loss {record['test/loss']:.4f} top-1 {record['test/top1']:.2f}%"
        if "test/perplexity" in record:
            words += f" perplexity {record['test/perplexity']:.3f}"
        if "test/top5" in record:
            words += f" top-5 {record['test/top5']:.2f}%"
        return words

    def done_words(self, summary: dict) -> str:
        words = super().done_words(summary)
        if "final_perplexity" in summary:
            words += f", final test perplexity {summary['final_perplexity']:.3f}"
        return words


def task_for(kind: str | None, label_smoothing: float = 0.0,
             loss: str = "softmax_xent") -> Task:
    """The task of a dataset kind ('events', 'images', 'text'; None: classification)."""
    name = TASK_OF_KIND.get(kind or "events")
    if name is None:
        raise ValueError(f"no task for dataset kind {kind!r}; known kinds: "
                         f"{', '.join(TASK_OF_KIND)}.")
    cls = LanguageModelTask if name == "language_model" else ClassificationTask
    return cls(label_smoothing=label_smoothing, loss=loss)
