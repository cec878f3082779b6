"""The frame shared by the causal sequence models (the dense ``causal_transformer``, the
Subjective Depth and the Subjective Timescale Transformers): inputs -> tokens -> layers ->
RMSNorm -> head, as a sequence classifier or as a byte-level causal language model, plus
streaming inference with a KV cache, and the sizes every family registers.

    task="classify", input_kind="frames"   (event datasets)
        [T, B, C, H, W] event frames -> T tokens, ONE PER FRAME: e_t = W_f vec(frame_t)
    task="classify", input_kind="images"   (static image datasets)
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
any number of tokens works. A classifier builds the one embedding its declared input needs
(``input_kind``), so every parameter is trained and DistributedDataParallel runs with
``run.find_unused_parameters=false``. A subclass builds ``self.layers`` (``nn.ModuleList``),
names its routed layer indices in ``self.routed_layers``, and implements

    forward_tokens(h [B, N, D], positions [B, N], select) -> (h, metrics)
    step_tokens(h [B, 1, D], positions [B, 1], state, select) -> h     (one streaming step)

with its auxiliary loss in ``metrics[spikemoe.contract.AUX_LOSS]`` (absent: zero).
``select`` (``{layer index: [B, N] bool}``, None = the model's own choice) replays a given
selection in the routed layers: tests and the compute benchmark use it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..contract import ModelOutput, SpikeMoEModel, split_aux
from ..layers.causal_transformer import LayerKV, RMSNorm
from .registry import check_overrides, register_model

__all__ = ["CausalSequenceModel", "DIGITS", "INPUT_KINDS", "LM_SMALL", "StreamState", "TASKS",
           "TEST", "register_family"]

TASKS = ("classify", "lm")
INPUT_KINDS = ("frames", "images")


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


class CausalSequenceModel(SpikeMoEModel):
    """Base of the causal sequence models (module docstring).

    Args:
        name: registry name (error messages).  task: "classify" or "lm".
        dim: model width D.  num_heads: attention heads.  mlp_hidden: SwiGLU width.
        num_classes: classifier outputs (task="classify"; "lm" uses ``vocab_size``).
        T: frames per sample of the recipe (classify) / context length in bytes (lm).
        input_kind: the classifier's input, "frames" (``[T, B, C, H, W]``, one token per
            frame) or "images" (``[B, C, H, W]``, one token per patch).
        in_channels, img_size, patch_size: the classifier's input sizes (frames of
            ``in_channels x img_size``; images cut into ``patch_size`` patches).
        vocab_size: the LM's vocabulary (256 bytes).  rope_base: rotary base.

    Declared facts (``spikemoe.contract``): ``input_shape`` ``(T, C, H, W)`` (classify; an
    images model declares the same, a ``[C, H, W]`` sample fits it) or ``(T,)`` (lm),
    ``num_classes``, ``T``, and ``profile_batch_size = 1``.
    """

    routed_layers: tuple[int, ...] = ()
    # measurement (spikemoe.analysis.profile): each sequence selects its own tokens and a
    # batch pads the routed rows to the longest selection, so profile one sequence at a time
    profile_batch_size: int | None = 1

    def __init__(self, *, name: str, task: str, dim: int, num_heads: int, mlp_hidden: int,
                 num_classes: int, T: int, input_kind: str = "frames", in_channels: int = 2,
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
        if task == "lm":
            self.vocab_size = self.num_classes = int(vocab_size)
            self.input_shape = (self.T,)
            self.embed = nn.Embedding(self.vocab_size, dim)
        else:
            if input_kind not in INPUT_KINDS:
                raise ValueError(f"{name}: input_kind must be one of {INPUT_KINDS} (event "
                                 f"frames [T, B, C, H, W] or images [B, C, H, W]), got "
                                 f"{input_kind!r}")
            self.input_kind, self.num_classes = input_kind, int(num_classes)
            self.in_channels, self.img_size = int(in_channels), tuple(int(s) for s in img_size)
            self.patch_size = int(patch_size)
            self.input_shape = (self.T, self.in_channels, *self.img_size)
            C, (H, W), p = self.in_channels, self.img_size, self.patch_size
            # Both embeddings are drawn, frames' first (here and in init_weights), and the one
            # the input needs is kept: one seed gives the same other weights for either input.
            embeddings = {"frames": nn.Linear(C * H * W, dim), "images": nn.Linear(C * p * p, dim)}
            self._embedding_shapes = {k: m.weight.shape for k, m in embeddings.items()}
            if input_kind == "frames":
                self.frame_embed = embeddings["frames"]
            else:
                self.patch_embed = embeddings["images"]
            self.register_load_state_dict_pre_hook(_drop_other_embedding)
        self.norm = RMSNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, self.num_classes)

    def input_embedding(self) -> nn.Module:
        """The module that turns the input into tokens (``embed``, ``frame_embed`` or
        ``patch_embed``)."""
        if self.task == "lm":
            return self.embed
        return self.frame_embed if self.input_kind == "frames" else self.patch_embed

    def init_weights(self) -> None:
        """Truncated normal 0.02 for every Linear / Embedding weight, zero biases (GPT-2), in
        module order. A classifier draws the initial weights of both input embeddings in the
        embedding's place (frames' then patches') and keeps its own."""
        embedding = self.input_embedding()
        for m in self.modules():
            if not isinstance(m, (nn.Linear, nn.Embedding)):
                continue
            if m is embedding and self.task == "classify":
                for kind, shape in self._embedding_shapes.items():
                    w = m.weight if kind == self.input_kind else \
                        torch.empty(shape, dtype=m.weight.dtype, device=m.weight.device)
                    nn.init.trunc_normal_(w, std=0.02)
            else:
                nn.init.trunc_normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

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
        frames = (f"[T, B, {C}, H, W] event frames with H x W = {H} x {W} (one token per "
                  "frame)")
        images = (f"[B, {C}, H, W] images with H and W multiples of {p} (one token per patch, "
                  "raster order)")
        if self.input_kind == "frames":
            if x.ndim == 5 and x.shape[2:] == (C, H, W) and x.shape[0] > 0:
                T, B = x.shape[:2]
                flat = x.permute(1, 0, 2, 3, 4).reshape(B, T, C * H * W)  # [T, B, C, H, W] -> [B, T, CHW]
                return self.frame_embed(flat.to(self.frame_embed.weight.dtype))
            accepts, other = frames, f"{images}: build it with model.input_kind=images"
        else:
            if x.ndim == 4 and x.shape[1] == C and x.shape[2] % p == 0 and x.shape[3] % p == 0 \
                    and x.shape[2] > 0 and x.shape[3] > 0:
                B, _, Hi, Wi = x.shape
                # [B, C, H, W] -> [B, C, H/p, p, W/p, p] -> [B, H/p, W/p, C, p, p] -> [B, N, C p p]
                patches = x.reshape(B, C, Hi // p, p, Wi // p, p).permute(0, 2, 4, 1, 3, 5)
                patches = patches.reshape(B, (Hi // p) * (Wi // p), C * p * p)
                return self.patch_embed(patches.to(self.patch_embed.weight.dtype))
            accepts, other = images, f"{frames}: build it with model.input_kind=frames"
        raise ValueError(f"{self.name} accepts {accepts}; got a tensor of shape "
                         f"{tuple(x.shape)}. For {other}.")

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """Logits: last token (classify, ``[B, K]``) or every token (lm, ``[B, N, V]``)."""
        if self.task == "classify":
            h = h[:, -1]  # [B, N, D] -> [B, D]: the last token (module docstring)
        return self.head(self.norm(h))

    # ------------------------------------------------------------------ forward
    def forward_tokens(self, h: torch.Tensor, positions: torch.Tensor,
                       select: dict[int, torch.Tensor] | None = None
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def step_tokens(self, h: torch.Tensor, positions: torch.Tensor, state: StreamState,
                    select: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, select: dict[int, torch.Tensor] | None = None
                ) -> ModelOutput:
        h = self.embed_input(x)  # [B, N, D]
        B, N, _ = h.shape
        positions = torch.arange(N, device=h.device).expand(B, N)  # [N] -> [B, N]
        h, metrics = self.forward_tokens(h, positions, select)
        aux, metrics = split_aux(metrics)
        return ModelOutput(self.readout(h), h.new_zeros(()) if aux is None else aux, metrics)

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


def _drop_other_embedding(model: CausalSequenceModel, state_dict: dict, prefix: str,
                          *args) -> None:
    """``load_state_dict`` pre-hook of a classifier: drop the embedding of the other input
    kind (``patch_embed.*`` for frames, ``frame_embed.*`` for images) from a state dict that
    holds both embeddings, so such a checkpoint loads; a classifier trains its own only."""
    other = "patch_embed" if model.input_kind == "frames" else "frame_embed"
    for key in [k for k in state_dict if k.startswith(f"{prefix}{other}.")]:
        del state_dict[key]


# Sizes shared by the dense twin, SDT and STT (one size, three families, same input recipe).
# digits-dvs: [T=4, 2, 32, 32] frames -> 4 tokens (one per frame); with input_kind="images" a
# [B, 2, 32, 32] image would give 16 tokens of 8 x 8 patches.
DIGITS = dict(task="classify", input_kind="frames", in_channels=2, img_size=(32, 32),
              patch_size=8, num_classes=10, T=4, dim=64, depth=4, num_heads=4, mlp_hidden=176,
              vocab_size=256, rope_base=10000.0)
# Byte-level LM on stdlib-bytes: 128-byte context, width 128, 4 layers, SwiGLU 8D/3 ~ 344.
LM_SMALL = dict(task="lm", num_classes=256, T=128, dim=128, depth=4, num_heads=4,
                mlp_hidden=344, vocab_size=256, rope_base=10000.0)
# test_* twins: [T=2, 2, 16, 16] frames, 10 classes, width 32, 2 layers (one routed).
TEST = dict(task="classify", input_kind="frames", in_channels=2, img_size=(16, 16),
            patch_size=4, num_classes=10, T=2, dim=32, depth=2, num_heads=2, mlp_hidden=64,
            vocab_size=256, rope_base=10000.0)
# registered name pattern (``{}``: the family) -> its size
SIZES = {"{}_digits": DIGITS, "{}_lm_small": LM_SMALL, "test_{}": TEST}


def register_family(family: str, cls: type[CausalSequenceModel], defaults: dict,
                    docs: dict[str, str]) -> None:
    """Register one factory per entry of ``SIZES``: ``{family}_digits``,
    ``{family}_lm_small`` and ``test_{family}``, each building
    ``cls(name=NAME, **size, **defaults, **overrides)``; an override the model does not have
    raises (``registry.check_overrides``).

    Args:
        family: the name stem, e.g. ``"subjective_depth"``.
        cls: the model class.  defaults: the family's hyperparameters beyond the size's.
        docs: each factory's docstring by registered name.
    """
    for pattern, size in SIZES.items():
        name = pattern.format(family)
        register_model(_factory(name, cls, {**size, **defaults}, docs[name]))


def _factory(name: str, cls: type[CausalSequenceModel], defaults: dict, doc: str):
    def factory(**overrides):
        return cls(name=name, **check_overrides(name, defaults, overrides))

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__, factory.__module__ = doc, cls.__module__
    return factory
