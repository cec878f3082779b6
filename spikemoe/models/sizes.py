"""Paper sizes and input recipes shared by the Spikformer and Spike-driven families.

Each entry fixes the stem (input channels, recipe image size, which SPS stages pool), the
width, depth and MLP width, the classes and T. Families add their own style and heads.
From the papers' tables: Spikformer (Zhou et al., ICLR 2023), Spike-driven Transformer
(Yao et al., NeurIPS 2023) and SEMM (Zhou et al., NeurIPS 2024).
"""
from __future__ import annotations

from ..layers.patch_split import PAPER_POOLS

# CIFAR10-DVS / DVS128 Gesture: 2 polarities, 128x128 native, 16x16 patches -> 8x8 tokens, T=16.
DVS_2_256 = dict(in_channels=2, img_size=(128, 128), pools=PAPER_POOLS["dvs"], embed_dim=256,
                 depth=2, mlp_hidden=1024, num_classes=10, T=16)
# CIFAR10/100: 3x32x32, 4x4 patches -> 8x8 tokens, T=4.
CIFAR_4_384 = dict(in_channels=3, img_size=(32, 32), pools=PAPER_POOLS["cifar"], embed_dim=384,
                   depth=4, mlp_hidden=1536, num_classes=10, T=4)
# ImageNet: 3x224x224, 16x16 patches -> 14x14 tokens, T=4.
_IMAGENET = dict(in_channels=3, img_size=(224, 224), pools=PAPER_POOLS["imagenet"], depth=8,
                 num_classes=1000, T=4)
IMAGENET_8_384 = dict(_IMAGENET, embed_dim=384, mlp_hidden=1536)
IMAGENET_8_512 = dict(_IMAGENET, embed_dim=512, mlp_hidden=2048)
IMAGENET_8_768 = dict(_IMAGENET, embed_dim=768, mlp_hidden=3072)
# test_* twins: 2x16x16 frames, 4x4 patches -> 4x4 tokens, one block of width 32, T=2.
TEST = dict(in_channels=2, img_size=(16, 16), pools=PAPER_POOLS["cifar"], embed_dim=32, depth=1,
            mlp_hidden=128, num_classes=10, T=2)

# SEMM's defaults (see moe/emsa.py and moe/emsp.py): 4 head-wise experts with per-expert
# queries and shared K/V; EMSP width h = 2 round(8D/3).
SEMM = dict(emsa=True, emsp=True, num_experts=4, expert_dim=None, per_expert=("q",),
            emsp_hidden=None)
NO_SEMM = dict(emsa=False, emsp=False, num_experts=4, expert_dim=None, per_expert=("q",),
               emsp_hidden=None)
