"""Spiking patch splitting (SPS): the convolutional stem that turns an image or event
frames into a grid of tokens.

Four 3x3 conv + BN + LIF stages with widths D/8, D/4, D/2, D (max-pool 3x3 / stride 2
where ``pools`` says), then a relative-position branch added to the features:

    Spikformer (Zhou et al. 2023, eq. 1-2), membrane_shortcut=False:
        S   = stage_4(...stage_1(I))          each stage: LIF(BN(Conv(x))), pool after the LIF
        out = S + LIF(BN(Conv_rpe(S)))        (integer 0..2: a sum of two spike maps)
    Spike-driven Transformer (Yao et al. 2023, MS-SPS), membrane_shortcut=True:
        U   = BN(Conv_4(...))                 the last stage keeps the membrane, pool before LIF
        out = U + BN(Conv_rpe(LIF(U)))        (membrane value; every conv input but the first is binary)

Pools per recipe: CIFAR (4x4 patches) after stages 3-4; ImageNet and DVS (16x16) after
all four. Input ``[T, B, C_in, H, W]``, output ``[T, B, D, H/p, W/p]``.

Why not ``spikingjelly...SpikformerPatchStem``: it pools before the LIF (the official
Spikformer pools spikes, after it) and has no membrane-shortcut form.

Memory: the stem holds most of a 224x224 model's activations. Convolutions whose input is
spikes save it as bytes and the max-pools save their argmax as a 1-byte window offset
(``layers.saved``); values and gradients are unchanged.
"""
from __future__ import annotations

import torch
from spikingjelly.activation_based.layer import SeqToANNContainer
from torch import nn

from ..neurons import make_lif
from .saved import CompactMaxPool2d, compact_saved

PAPER_POOLS = {
    "cifar": (False, False, True, True),  # 32x32 -> 8x8 tokens
    "imagenet": (True, True, True, True),  # 224x224 -> 14x14
    "dvs": (True, True, True, True),  # 128x128 -> 8x8
}


def _conv_bn(c_in: int, c_out: int, pool_before_lif: bool) -> SeqToANNContainer:
    ops = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
    if pool_before_lif:
        ops.append(CompactMaxPool2d(3, stride=2, padding=1))
    return SeqToANNContainer(*ops)  # folds [T, B] into one batch axis around the ops


class SpikingPatchSplit(nn.Module):
    """SPS (Spikformer) or MS-SPS (Spike-driven Transformer), see the module docstring."""

    def __init__(self, in_channels: int, embed_dim: int, pools: tuple[bool, ...],
                 membrane_shortcut: bool = False, backend: str = "auto") -> None:
        super().__init__()
        if len(pools) != 4:
            raise ValueError(f"pools must give 4 booleans (one per stage), got {pools}")
        if embed_dim % 8:
            raise ValueError(f"embed_dim must be divisible by 8 (stage widths D/8..D), got {embed_dim}")
        self.membrane_shortcut = membrane_shortcut
        self.pools = tuple(bool(p) for p in pools)
        self.downsample = 2 ** sum(self.pools)
        widths = [in_channels, embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim]
        ms = membrane_shortcut
        self.stages = nn.ModuleList(
            # MS-SPS pools stages 1-3 after their LIF (spikes) and stage 4 before its LIF: that
            # stage has no LIF of its own, its pooled membrane is the residual of the RPE branch.
            _conv_bn(widths[i], widths[i + 1], pool_before_lif=ms and i == 3 and self.pools[i])
            for i in range(4)
        )
        # Spikformer: a LIF after every stage; spike-driven: none after the last (membrane kept).
        self.lifs = nn.ModuleList(make_lif(backend=backend) for _ in range(3 if ms else 4))
        self.pool = SeqToANNContainer(CompactMaxPool2d(3, stride=2, padding=1))
        self.rpe = _conv_bn(embed_dim, embed_dim, pool_before_lif=False)
        self.rpe_lif = make_lif(backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, stage in enumerate(self.stages):
            with compact_saved(stage[0].weight):  # stages 2-4 read spikes: saved as bytes
                x = stage(x)  # [T, B, C_i, H_i, W_i] -> [T, B, C_i+1, H_i+1, W_i+1]
            if i < len(self.lifs):
                x = self.lifs[i](x)
            if self.pools[i] and not (self.membrane_shortcut and i == 3):
                x = self.pool(x)  # spikes pooled: still binary
        if self.membrane_shortcut:
            s = self.rpe_lif(x)
            with compact_saved(self.rpe[0].weight):
                return x + self.rpe(s)  # membrane U + BN(Conv(LIF(U)))
        with compact_saved(self.rpe[0].weight):
            r = self.rpe(x)
        return x + self.rpe_lif(r)  # spikes S + LIF(BN(Conv(S)))
