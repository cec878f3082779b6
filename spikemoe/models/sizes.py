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

# Per-recipe SEMM switches (moe/emsa.py, moe/emsp.py) for the Spikformer and Spike-driven
# families. The SEMM paper states none of them (its code is not public), so each recipe follows
# the STEP file for its dataset (github.com/Fancyssc/STEP, cls/models/static/):
# - CIFAR, spikf_semm_cifar.py: experts fire at threshold=1.0 (the 0.5 attn_lif is commented
#   out), result = (attn @ v) * 0.125, K/V BatchNorm kept, MLP hidden int(C * mlp_ratio) = 4C
#   with fc2 2C -> C, Spikformer(expert_dim=96).
# - ImageNet (8_*), spikf_semm_imagenet.py: threshold=1.0, result = attn @ v (no 0.125),
#   k_bn / v_bn not applied in forward, MLP hidden in_features // 3 * 16,
#   spikf_semm_imagenet(expert_dim=96).
# - DVS (2_256_dvs, the demo) and the test twins: no STEP file exists; today's values are kept
#   (expert V_th 0.5, scale on, K/V BN, d = C/E, h = 2 round(8C/3)).
# sizes.SEMM / NO_SEMM above stay as they were (models/spikingformer.py builds from them).
EXPERT_DEFAULTS = dict(expert_vth=0.5, expert_scale=True, kv_bn=True)
NO_SEMM_SWITCHES = dict(NO_SEMM, **EXPERT_DEFAULTS)
SEMM_DVS = dict(SEMM, **EXPERT_DEFAULTS)
# STEP's shapes are these recipes' defaults too (the SEMM paper states none of them): expert
# width 96 and its EMSP hidden width (CIFAR 4C with fc2 2C -> C; ImageNet 16 (C // 3)). The
# twins are then 14-19% smaller than their Spikformer baselines (tests/test_models.py pins the
# counts); emsp_hidden="ratio4" and expert_dim=None give the equal-compute shapes back.
SEMM_CIFAR = dict(SEMM, expert_vth=1.0, expert_scale=True, kv_bn=True, expert_dim=96,
                  emsp_hidden="cifar")
SEMM_IMAGENET = dict(SEMM, expert_vth=1.0, expert_scale=False, kv_bn=False, expert_dim=96,
                     emsp_hidden="imagenet")
