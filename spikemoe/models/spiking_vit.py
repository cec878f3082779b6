"""The spiking vision transformer backbone shared by Spikformer and the Spike-driven
Transformer, and by their SEMM twins.

    I  : [T, B, C_in, H, W] event frames, or [B, C_in, H, W] an image repeated T times
    X0 = SPS(I)                                    [T, B, D, H/p, W/p] -> tokens [T, B, N, D]
    Xl = Block_l(X(l-1)),  l = 1..L                attention: SSA | SDSA | EMSA; MLP: MLP | EMSP
    logits = mean_t Head(mean_n X_L)               (Spike-driven: Head(LIF(mean_n X_L)))

``style="spikformer"``: Spikformer (Zhou et al., ICLR 2023), spike-sum residuals, SSA.
``style="spike_driven"``: Spike-driven Transformer v1 (Yao et al., NeurIPS 2023),
membrane-shortcut residuals, SDSA: every Linear/Conv input except the stem's first conv
is binary.

The model resets its neurons at the start of ``forward``: membrane state never leaks
between batches, and the same input always gives the same logits (in eval mode).
"""
from __future__ import annotations

import torch
from spikingjelly.activation_based import functional
from torch import nn

from ..layers.attention import HeadwiseSpikingAttention
from ..layers.block import SpikingBlock
from ..layers.mlp import SpikingMLP
from ..layers.patch_split import SpikingPatchSplit
from ..moe.emsa import EMSA
from ..moe.emsp import EMSP
from ..neurons import make_lif
from .output import ModelOutput
from .registry import check_overrides

STYLES = ("spikformer", "spike_driven")


class SpikingVisionTransformer(nn.Module):
    """Spikformer / Spike-driven Transformer, optionally with SEMM (EMSA and/or EMSP).

    Args:
        name: the registry name (used in error messages).
        style: "spikformer" or "spike_driven".
        in_channels: input channels (3 for images, 2 polarities for event frames).
        img_size: the recipe's input size ``(H, W)``; other sizes that the stem divides work.
        pools: per SPS stage, whether it max-pools (see ``layers.patch_split.PAPER_POOLS``).
        embed_dim: D.  depth: L.  num_heads: heads of SSA / SDSA.
        mlp_hidden: hidden width of the plain MLP.
        num_classes: classifier outputs.  T: time steps a static image is repeated for.
        attn_scale: SSA scale s (0.125; 0.25 in the Spikformer DVS recipe).
        emsa / emsp: replace attention / MLP by their SEMM experts (each switchable alone).
        num_experts, expert_dim, per_expert: EMSA's experts (see ``moe.emsa``).
        emsp_hidden: EMSP width h (see ``moe.emsp``).
        backend: LIF backend for every neuron (see ``spikemoe.neurons``).
    """

    def __init__(self, *, name: str, style: str, in_channels: int, img_size: tuple[int, int],
                 pools: tuple[bool, ...], embed_dim: int, depth: int, num_heads: int,
                 mlp_hidden: int, num_classes: int, T: int, attn_scale: float = 0.125,
                 emsa: bool = False, emsp: bool = False, num_experts: int = 4,
                 expert_dim: int | None = None, per_expert: tuple[str, ...] = ("q",),
                 emsp_hidden: int | None = None, backend: str = "auto") -> None:
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {style!r}")
        if int(T) < 1:
            raise ValueError(f"T (time steps) must be >= 1, got {T}")
        self.name, self.style, self.T = name, style, int(T)
        self.in_channels, self.img_size, self.num_classes = in_channels, tuple(img_size), num_classes
        ms = style == "spike_driven"
        kernel = "sdsa" if ms else "ssa"
        self.stem = SpikingPatchSplit(in_channels, embed_dim, pools, membrane_shortcut=ms,
                                      backend=backend)
        blocks = []
        for _ in range(depth):
            if emsa:
                attn = EMSA(embed_dim, num_experts, expert_dim, per_expert, kernel=kernel,
                            scale=attn_scale, membrane_shortcut=ms, backend=backend)
            else:
                attn = HeadwiseSpikingAttention(embed_dim, num_heads, kernel=kernel,
                                                scale=attn_scale, membrane_shortcut=ms,
                                                backend=backend)
            if emsp:
                mlp = EMSP(embed_dim, emsp_hidden, membrane_shortcut=ms, backend=backend)
            else:
                mlp = SpikingMLP(embed_dim, mlp_hidden, membrane_shortcut=ms, backend=backend)
            blocks.append(SpikingBlock(attn, mlp))
        self.blocks = nn.ModuleList(blocks)
        self.head_lif = make_lif(backend=backend) if ms else None
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # As the official Spikformer / Spike-driven code: truncated normal 0.02, zero bias.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The recipe's input for one sample, ``[T, C, H, W]``."""
        return (self.T, self.in_channels, *self.img_size)

    def to_time_major(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, B, C, H, W]`` as is, ``[B, C, H, W]`` repeated T times; anything else raises."""
        d = self.stem.downsample
        accepted = (
            f"[T, B, {self.in_channels}, H, W] event frames or [B, {self.in_channels}, H, W] images "
            f"(H and W multiples of {d}; the recipe uses {self.img_size[0]}x{self.img_size[1]})"
        )
        if x.ndim not in (4, 5) or x.shape[-3] != self.in_channels \
                or x.shape[-1] % d or x.shape[-2] % d or x.shape[-1] == 0 or x.shape[-2] == 0:
            raise ValueError(f"{self.name} accepts {accepted}; got a tensor of shape {tuple(x.shape)}.")
        if x.ndim == 4:
            return x.unsqueeze(0).expand(self.T, *x.shape)  # [B, C, H, W] -> [T, B, C, H, W]
        return x

    def forward(self, x: torch.Tensor) -> ModelOutput:
        x = self.to_time_major(x)
        functional.reset_net(self)  # state is reset by structure, never by the caller
        feats = self.stem(x)  # [T, B, D, H', W']
        h, w = feats.shape[-2:]
        tokens = feats.flatten(3).transpose(2, 3)  # [T, B, D, H', W'] -> [T, B, N, D]
        metrics: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            tokens, block_metrics = block(tokens, (h, w))
            metrics.update({f"blocks.{i}.{k}": v for k, v in block_metrics.items()})
        pooled = tokens.mean(dim=2)  # [T, B, N, D] -> [T, B, D]
        if self.head_lif is not None:
            pooled = self.head_lif(pooled)
        logits = self.head(pooled).mean(dim=0)  # [T, B, K] -> [B, K]
        return ModelOutput(logits, logits.new_zeros(()), metrics)


def build_spiking_vit(name: str, family: dict, size: dict, semm: dict,
                      overrides: dict) -> SpikingVisionTransformer:
    """Merge a family's choices, a paper size and SEMM settings, apply checked overrides."""
    defaults = {**size, **semm, **family}
    return SpikingVisionTransformer(name=name, **check_overrides(name, defaults, overrides))
