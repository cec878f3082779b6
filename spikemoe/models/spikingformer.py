"""Spikingformer (Zhou et al., arXiv 2304.11954) and its SEMM twin.

Spikingformer is Spikformer with the spike-driven residual: every branch starts with a LIF
(pre-activation) and ends in BatchNorm, so the residual stream carries membrane-like values
and every Linear / Conv input but the first conv's is a binary spike tensor. Following the
official ImageNet code (zhouchenlin2096/Spikingformer ``imagenet/model.py``):

    I : [B, 3, 224, 224] repeated T = 4 times (or [T, B, C, H, W] frames)
    X0 = BN(Conv_0(I))                                          D/8 wide, full resolution
    Xi = BN(Conv_i(MaxPool(LIF(X(i-1))))),  i = 1..4            D/4, D/2, D, D wide
    X' = X + BN(Conv_O(LIF_0.5(Q (K^T V) * 0.125)))             Q, K, V = LIF(BN(Conv(LIF(X))))
    Y  = X' + BN(Conv_2(LIF(BN(Conv_1(LIF(X'))))))              MLP ratio 4
    logits = Head(mean_t mean_n X_L)                            no LIF before the head

Differences from our Spike-driven Transformer (``style="spike_driven"``), which has the same
residual: SSA (Q K^T V, scale 0.125) instead of SDSA; the tokenizer has no relative-position
branch (its fifth conv, D -> D, runs after the fourth max-pool); Q/K/V projections have no
bias; the head reads the mean over tokens and time of the membrane stream (no LIF), once per
inference. Heads per the authors' energy configs (``energy_consumption_calculation/
README.md``): 8 for 8-384 and 8-512, 12 for 8-768.

Parameter counts (ours, ``tests/test_spikingformer.py``): 8-384 16.82M, 8-512 29.69M,
8-768 66.34M; published 16.81 / 29.68 / 66.34M. The official 8-512 log reports 29,705,768:
its blocks also hold two unused LayerNorms (2 x 2D per block = 16,384 at D = 512).

SEMM twins (``spikingformer_semm_*``) put EMSA (4 head-wise experts, SSA kernel, pre-LIF) and
EMSP in every block, as ``models/spikformer.py`` does for Spikformer.
"""
from __future__ import annotations

import torch
from spikingjelly.activation_based.layer import SeqToANNContainer
from torch import nn

from ..contract import ModelOutput
from ..layers.attention import HeadwiseSpikingAttention
from ..layers.block import SpikingBlock
from ..layers.mlp import SpikingMLP
from ..layers.saved import CompactMaxPool2d
from ..moe.emsa import EMSA
from ..moe.emsp import EMSP
from ..neurons import make_lif
from . import sizes
from .registry import check_overrides, register_model
from .spiking_vit import SpikingBackbone, check_hyperparameters, init_trunc_normal


class SpikingTokenizer(nn.Module):
    """Spikingformer's stem: ``BN(Conv_0(I))``, then four ``BN(Conv(MaxPool(LIF(x))))``.

    Widths D/8, D/4, D/2, D, D; ``pools[i]`` says whether stage i + 1 max-pools (3x3, stride 2)
    the spikes of its LIF. Input ``[T, B, C_in, H, W]``, output membrane values
    ``[T, B, D, H/p, W/p]`` (p = 2 ** sum(pools)).
    """

    def __init__(self, in_channels: int, embed_dim: int, pools: tuple[bool, ...],
                 backend: str = "auto") -> None:
        super().__init__()
        widths = [in_channels, embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim,
                  embed_dim]
        self.pools = tuple(bool(p) for p in pools)
        self.downsample = 2 ** sum(self.pools)
        self.convs = nn.ModuleList(
            SeqToANNContainer(nn.Conv2d(widths[i], widths[i + 1], 3, padding=1, bias=False),
                              nn.BatchNorm2d(widths[i + 1]))
            for i in range(5))
        self.lifs = nn.ModuleList(make_lif(backend=backend) for _ in range(4))
        self.pool = SeqToANNContainer(CompactMaxPool2d(3, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs[0](x)  # [T, B, C_in, H, W] -> [T, B, D/8, H, W]
        for i, lif in enumerate(self.lifs):
            x = lif(x)  # spikes
            if self.pools[i]:
                x = self.pool(x)  # spikes pooled: still binary
            x = self.convs[i + 1](x)  # -> [T, B, C_i+2, H', W'] membrane
        return x


class Spikingformer(SpikingBackbone):
    """Spikingformer, optionally with SEMM (EMSA and/or EMSP); see the module docstring.

    Args mirror ``models.spiking_vit.SpikingVisionTransformer`` (name, in_channels, img_size,
    pools, embed_dim, depth, num_heads, mlp_hidden, num_classes, T, attn_scale, emsa, emsp,
    num_experts, expert_dim, per_expert, emsp_hidden, backend), checked by its
    ``check_hyperparameters`` before any module is built.
    """

    def __init__(self, *, name: str, in_channels: int, img_size, pools, embed_dim: int,
                 depth: int, num_heads: int, mlp_hidden: int, num_classes: int, T: int,
                 attn_scale: float = 0.125, emsa: bool = False, emsp: bool = False,
                 num_experts: int = 4, expert_dim: int | None = None,
                 per_expert: tuple[str, ...] = ("q",), emsp_hidden: int | None = None,
                 backend: str = "auto") -> None:
        super().__init__()
        hp = check_hyperparameters(
            name, style="spike_driven", in_channels=in_channels, img_size=img_size,
            pools=pools, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_hidden=mlp_hidden, num_classes=num_classes, T=T, attn_scale=attn_scale,
            emsa=emsa, emsp=emsp, num_experts=num_experts, expert_dim=expert_dim,
            per_expert=per_expert, emsp_hidden=emsp_hidden, backend=backend)
        self.name, self.T = name, hp["T"]
        self.in_channels, self.img_size = hp["in_channels"], hp["img_size"]
        self.num_classes = hp["num_classes"]
        D = hp["embed_dim"]
        self.stem = SpikingTokenizer(self.in_channels, D, hp["pools"], backend=backend)
        blocks = []
        for _ in range(hp["depth"]):
            if hp["emsa"]:
                attn = EMSA(D, hp["num_experts"], hp["expert_dim"], hp["per_expert"],
                            kernel="ssa", scale=hp["attn_scale"], membrane_shortcut=True,
                            backend=backend)
            else:
                attn = HeadwiseSpikingAttention(D, hp["num_heads"], kernel="ssa",
                                                scale=hp["attn_scale"], membrane_shortcut=True,
                                                backend=backend, qkv_bias=False)
            if hp["emsp"]:
                mlp = EMSP(D, hp["emsp_hidden"], membrane_shortcut=True, backend=backend)
            else:
                mlp = SpikingMLP(D, hp["mlp_hidden"], membrane_shortcut=True, backend=backend)
            blocks.append(SpikingBlock(attn, mlp))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(D, self.num_classes)
        init_trunc_normal(self)  # as the official code: truncated normal 0.02, zero bias

    def forward(self, x: torch.Tensor) -> ModelOutput:
        tokens, auxes, metrics = self.encode(x)  # [T, B, N, D]
        pooled = tokens.mean(dim=2).mean(dim=0)  # [T, B, N, D] -> [B, D]: the head runs once
        logits = self.head(pooled)  # [B, K]
        return ModelOutput(logits, sum(auxes, logits.new_zeros(())), metrics)


_FAMILY = dict(attn_scale=0.125, backend="auto")


def _build(name: str, size: dict, semm: dict, overrides: dict, **choices) -> Spikingformer:
    hp = check_overrides(name, {**size, **semm, **_FAMILY, **choices}, overrides)
    return Spikingformer(name=name, **hp)


@register_model
def spikingformer_8_384(**overrides):
    """Spikingformer-8-384, ImageNet: 3x224x224, T=4, 8 heads (published 16.81M params)."""
    return _build("spikingformer_8_384", sizes.IMAGENET_8_384, sizes.NO_SEMM, overrides, num_heads=8)


@register_model
def spikingformer_8_512(**overrides):
    """Spikingformer-8-512, ImageNet: 8 heads (published 29.68M params, 74.79%, 7.46 mJ)."""
    return _build("spikingformer_8_512", sizes.IMAGENET_8_512, sizes.NO_SEMM, overrides,
                  num_heads=8)


@register_model
def spikingformer_8_768(**overrides):
    """Spikingformer-8-768, ImageNet: 12 heads (published 66.34M params, 75.85%, 13.68 mJ)."""
    return _build("spikingformer_8_768", sizes.IMAGENET_8_768, sizes.NO_SEMM, overrides,
                  num_heads=12)


@register_model
def test_spikingformer(**overrides):
    """Tiny Spikingformer for tests: 2x16x16 frames, 4x4 tokens, 1 block of width 32, T=2."""
    return _build("test_spikingformer", sizes.TEST, sizes.NO_SEMM, overrides, num_heads=4)


@register_model
def spikingformer_semm_8_384(**overrides):
    """Spikingformer-8-384 + SEMM (EMSA + EMSP), ImageNet."""
    return _build("spikingformer_semm_8_384", sizes.IMAGENET_8_384, sizes.SEMM, overrides,
                  num_heads=8)


@register_model
def spikingformer_semm_8_512(**overrides):
    """Spikingformer-8-512 + SEMM (EMSA + EMSP), ImageNet."""
    return _build("spikingformer_semm_8_512", sizes.IMAGENET_8_512, sizes.SEMM, overrides,
                  num_heads=8)


@register_model
def spikingformer_semm_8_768(**overrides):
    """Spikingformer-8-768 + SEMM (EMSA + EMSP), ImageNet."""
    return _build("spikingformer_semm_8_768", sizes.IMAGENET_8_768, sizes.SEMM, overrides,
                  num_heads=12)


@register_model
def test_spikingformer_semm(**overrides):
    """Tiny Spikingformer + SEMM for tests: 4 experts of width 8."""
    return _build("test_spikingformer_semm", sizes.TEST, sizes.SEMM, overrides, num_heads=4)
