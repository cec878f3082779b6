"""The frame shared by the causal sequence models (the dense ``causal_transformer``, the
Subjective Depth and the Subjective Timescale Transformers): inputs -> tokens -> layers ->
RMSNorm -> head, as a sequence classifier or as a byte-level causal language model, plus
streaming inference with a KV cache.

    task="classify"  (the trainer's event and image datasets)
        [T, B, C, H, W] event frames -> T tokens, ONE PER FRAME: e_t = W_f vec(frame_t)
        [B, C, H, W] images          -> (H/p)(W/p) tokens, one per p x p patch, raster order
        logits = Head(RMSNorm(h_last))                          [B, num_classes]
    task="lm"        (byte-level language modelling, vocab 256)
        [B, N] int64 byte ids        -> N tokens: e_t = E[x_t]
        logits = Head(RMSNorm(h_t)) for every t                 [B, N, vocab]

Pooling: the classifier reads the LAST token. Under the causal mask it is the only token
that has seen the whole sequence (a mean over tokens would average in early tokens that saw
one frame), and it keeps the classifier streamable: after frame t arrives, the logits of
token t are the prediction so far, computed by the same cached forward as an LM's next step.

Positions are rotary (in every attention), so no absolute position table is learned and
any number of tokens works. A classifier holds both embeddings (frames and patches) and a
dataset trains one of them; under DistributedDataParallel set
``run.find_unused_parameters=true``. A subclass builds ``self.layers`` (``nn.ModuleList``), names its
routed layer indices in ``self.routed_layers``, and implements

    forward_tokens(h [B, N, D], positions [B, N], select) -> (h, aux_loss, metrics)
    step_tokens(h [B, 1, D], positions [B, 1], state, select) -> h     (one streaming step)

``select`` (``{layer index: [B, N] bool}``, None = the model's own choice) replays a given
selection in the routed layers: tests and the compute benchmark use it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers.causal_transformer import LayerKV, RMSNorm
from .output import ModelOutput

__all__ = ["CausalSequenceModel", "StreamState", "TASKS"]

TASKS = ("classify", "lm")


@dataclass
class StreamState:
    """Streaming inference state: one ``LayerKV`` and one dict of extra state per layer."""

    kv: list[LayerKV]
    extra: list[dict] = field(default_factory=list)

    @classmethod
    def empty(cls, num_layers: int) -> StreamState:
        return cls([LayerKV() for _ in range(num_layers)], [{} for _ in range(num_layers)])

    def kv_entries(self) -> list[int]:
        """KV entries written per layer, summed over the batch."""
        return [int(kv.entries().sum()) for kv in self.kv]


class CausalSequenceModel(nn.Module):
    """Base of the causal sequence models (module docstring).

    Args:
        name: registry name (error messages).  task: "classify" or "lm".
        dim: model width D.  num_heads: attention heads.  mlp_hidden: SwiGLU width.
        num_classes: classifier outputs (task="classify"; "lm" uses ``vocab_size``).
        T: frames per sample of the recipe (classify) / context length in bytes (lm).
        in_channels, img_size, patch_size: the classifier's inputs (frames of
            ``in_channels x img_size``; images cut into ``patch_size`` patches).
        vocab_size: the LM's vocabulary (256 bytes).  rope_base: rotary base.
    """

    routed_layers: tuple[int, ...] = ()
    # measurement (spikemoe.analysis.profile): each sequence selects its own tokens and a
    # batch pads the routed rows to the longest selection, so profile one sequence at a time
    profile_batch_size: int | None = 1

    def __init__(self, *, name: str, task: str, dim: int, num_heads: int, mlp_hidden: int,
                 num_classes: int, T: int, in_channels: int = 2,
                 img_size: tuple[int, int] = (16, 16), patch_size: int = 4,
                 vocab_size: int = 256, rope_base: float = 10000.0) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"{name}: task must be one of {TASKS}, got {task!r}")
        if int(T) < 1:
            raise ValueError(f"{name}: T (frames per sample / context length) must be >= 1, "
                             f"got {T}")
        self.name, self.task, self.T, self.dim = name, task, int(T), dim
        self.num_heads, self.mlp_hidden, self.rope_base = num_heads, mlp_hidden, rope_base
        if task == "classify":
            self.in_channels, self.img_size = int(in_channels), tuple(int(s) for s in img_size)
            self.patch_size, self.num_classes = int(patch_size), int(num_classes)
            H, W = self.img_size
            self.frame_embed = nn.Linear(self.in_channels * H * W, dim)
            self.patch_embed = nn.Linear(self.in_channels * self.patch_size ** 2, dim)
        else:
            self.vocab_size = self.num_classes = int(vocab_size)
            self.embed = nn.Embedding(self.vocab_size, dim)
        self.norm = RMSNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, self.num_classes)

    def init_weights(self) -> None:
        """Truncated normal 0.02 for every Linear / Embedding weight, zero biases (GPT-2)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample: ``(T, C, H, W)`` frames (classify) or ``(T,)`` byte ids (lm)."""
        if self.task == "lm":
            return (self.T,)
        return (self.T, self.in_channels, *self.img_size)

    # ------------------------------------------------------------------ inputs -> tokens
    def embed_input(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, N, D]`` of a model input (module docstring); bad shapes raise."""
        if self.task == "lm":
            if x.ndim != 2 or x.is_floating_point() or x.is_complex():
                raise ValueError(f"{self.name} is a byte-level language model: it accepts "
                                 f"[B, N] integer byte ids (int64, 0..{self.vocab_size - 1}); "
                                 f"got a {x.dtype} tensor of shape {tuple(x.shape)}.")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
                raise ValueError(f"{self.name}: token ids must lie in 0..{self.vocab_size - 1}, "
                                 f"got {int(x.min())}..{int(x.max())}.")
            return self.embed(x)
        C, (H, W), p = self.in_channels, self.img_size, self.patch_size
        accepted = (f"[T, B, {C}, H, W] event frames with H x W = {H} x {W} (one token per "
                    f"frame) or [B, {C}, H, W] images with H and W multiples of {p} (one token "
                    "per patch, raster order)")
        if x.ndim == 5 and x.shape[2:] == (C, H, W) and x.shape[0] > 0:
            T, B = x.shape[:2]
            frames = x.permute(1, 0, 2, 3, 4).reshape(B, T, C * H * W)  # [T, B, C, H, W] -> [B, T, CHW]
            return self.frame_embed(frames.to(self.frame_embed.weight.dtype))
        if x.ndim == 4 and x.shape[1] == C and x.shape[2] % p == 0 and x.shape[3] % p == 0 \
                and x.shape[2] > 0 and x.shape[3] > 0:
            B, _, Hi, Wi = x.shape
            # [B, C, H, W] -> [B, C, H/p, p, W/p, p] -> [B, H/p, W/p, C, p, p] -> [B, N, C p p]
            patches = x.reshape(B, C, Hi // p, p, Wi // p, p).permute(0, 2, 4, 1, 3, 5)
            patches = patches.reshape(B, (Hi // p) * (Wi // p), C * p * p)
            return self.patch_embed(patches.to(self.patch_embed.weight.dtype))
        raise ValueError(f"{self.name} accepts {accepted}; got a tensor of shape "
                         f"{tuple(x.shape)}.")

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """Logits: last token (classify, ``[B, K]``) or every token (lm, ``[B, N, V]``)."""
        if self.task == "classify":
            h = h[:, -1]  # [B, N, D] -> [B, D]: the last token (module docstring)
        return self.head(self.norm(h))

    # ------------------------------------------------------------------ forward
    def forward_tokens(self, h: torch.Tensor, positions: torch.Tensor,
                       select: dict[int, torch.Tensor] | None = None):
        raise NotImplementedError

    def step_tokens(self, h: torch.Tensor, positions: torch.Tensor, state: StreamState,
                    select: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, select: dict[int, torch.Tensor] | None = None
                ) -> ModelOutput:
        h = self.embed_input(x)  # [B, N, D]
        B, N, _ = h.shape
        positions = torch.arange(N, device=h.device).expand(B, N)  # [N] -> [B, N]
        eval_selection = getattr(self, "eval_selection", "router")
        whole_sequence_topk = eval_selection == "router_topk" or (
            eval_selection == "teacher" and getattr(self, "selection", "") == "topk")
        if self.task == "lm" and not self.training and select is None and whole_sequence_topk:
            warnings.warn(
                f"{self.name}: eval_selection={self.eval_selection!r} picks tokens by a top-k "
                "over the whole sequence, so a prediction can depend on later tokens: this "
                "perplexity is not a causal language-model score. Use eval_selection='router' "
                "to report perplexity.", stacklevel=2)
        h, aux, metrics = self.forward_tokens(h, positions, select)
        return ModelOutput(self.readout(h), aux, metrics)

    @torch.no_grad()
    def stream(self, x: torch.Tensor, select: dict[int, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, StreamState]:
        """Inference one token at a time with a KV cache per layer.

        Token t attends to the cached keys/values of tokens ``< t`` and to its own; a routed
        layer writes the cache only for the tokens it selects. Equals ``forward`` on the whole
        sequence in eval mode (with causal selection), up to float rounding.

        Returns:
            ``(logits, state)``: the logits ``forward`` gives, and the caches
            (``state.kv_entries()``: entries per layer).
        """
        if self.training:
            raise ValueError(f"{self.name}.stream() is inference: call model.eval() first.")
        h = self.embed_input(x)  # [B, N, D]
        B, N, _ = h.shape
        positions = torch.arange(N, device=h.device).expand(B, N)
        state = StreamState.empty(len(self.layers))
        outs = []
        for t in range(N):
            step_select = None if select is None else {i: m[:, t:t + 1] for i, m in select.items()}
            outs.append(self.step_tokens(h[:, t:t + 1], positions[:, t:t + 1], state,
                                         step_select))
        return self.readout(torch.cat(outs, dim=1)), state  # N x [B, 1, D] -> [B, N, D]


def zero_aux(h: torch.Tensor) -> torch.Tensor:
    """A scalar zero on ``h``'s device (models without router losses)."""
    return h.new_zeros(())


# Sizes shared by the dense twin, SDT and STT (one size, three families, same input recipe).
# digits-dvs: [T=4, 2, 32, 32] frames -> 4 tokens (one per frame); a [B, 2, 32, 32] image
# would give 16 tokens of 8 x 8 patches.
DIGITS = dict(task="classify", in_channels=2, img_size=(32, 32), patch_size=8, num_classes=10,
              T=4, dim=64, depth=4, num_heads=4, mlp_hidden=176, vocab_size=256,
              rope_base=10000.0)
# Byte-level LM on stdlib-bytes: 128-byte context, width 128, 4 layers, SwiGLU 8D/3 ~ 344.
LM_SMALL = dict(task="lm", in_channels=2, img_size=(16, 16), patch_size=4, num_classes=256,
                T=128, dim=128, depth=4, num_heads=4, mlp_hidden=344, vocab_size=256,
                rope_base=10000.0)
# test_* twins: [T=2, 2, 16, 16] frames, 10 classes, width 32, 2 layers (one routed).
TEST = dict(task="classify", in_channels=2, img_size=(16, 16), patch_size=4, num_classes=10,
            T=2, dim=32, depth=2, num_heads=2, mlp_hidden=64, vocab_size=256,
            rope_base=10000.0)
