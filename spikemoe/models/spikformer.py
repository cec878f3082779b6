"""Spikformer (Zhou et al., ICLR 2023) and its SEMM twin (Zhou et al., NeurIPS 2024).

Sizes and recipes from the Spikformer paper (Zhou et al., ICLR 2023, its ImageNet,
CIFAR and CIFAR10-DVS / DVS128 Gesture tables): ``spikformer_L_D`` has L blocks of width D.
Published parameter counts: 8-384 16.81M, 8-512 29.68M, 8-768 66.34M, 4-384 CIFAR 9.32M,
2-256 DVS 2.57M (measured by ``tests/test_models.py``).

SEMM twins replace SSA by EMSA (4 head-wise experts, per-expert queries, shared K/V) and
the MLP by EMSP. Their size gap to the baseline is stated here (README and
``models/spike_driven.py`` point here; the Spike-driven twins have the same counts).
At the equal-compute shapes (EMSP h = 2 round(8D/3), expert width D/E: the DVS recipe's
defaults, ``emsp_hidden="ratio4", expert_dim=None`` elsewhere) a twin has 7.0% to 10.4% fewer
parameters than its baseline: 2-256 DVS 6.98%, 4-384 CIFAR 8.95%, 8-384 9.93%, 8-512 10.17%,
8-768 10.37% (the ImageNet twins have no K/V BatchNorm, ``kv_bn=False``). EMSA holds 2.5 D^2
weights against SSA's 4 D^2 because its experts share K and V, and EMSP matches the MLP, so
the gap grows with the blocks' share of the model (the stem and head hold 38% of the 2-block
DVS model's weights, 24% of 4-384 CIFAR's, 14% of 8-768's). The CIFAR and ImageNet recipes
default to STEP's shapes (expert width 96; EMSP h = 4C with fc2 2C -> C for CIFAR, 16 (C // 3)
for ImageNet; ``models/sizes.py``), which makes those twins 21.8% (4-384), 9.9% (8-384),
14.8% (8-512) and 19.3% (8-768) smaller. Pass ``per_expert=("q", "k", "v")`` with the
equal-compute shapes for SSA-sized experts: the twin is then 0.31% (8-768) to 0.77% (2-256 DVS)
larger than its
baseline (EMSP's depth-wise gate, 9 h/2 weights, and the router).
"""
from __future__ import annotations

from . import sizes
from .registry import register_model
from .spiking_vit import build_spiking_vit

# Spikformer's own choices on top of the sizes: spike-sum residuals, SSA with s = 0.125
# (0.25 in the DVS recipe); heads as in the official configs.
_FAMILY = dict(style="spikformer", attn_scale=0.125, backend="auto")


def _build(name: str, size: dict, semm: dict, overrides: dict, **choices):
    return build_spiking_vit(name, {**_FAMILY, **choices}, size, semm, overrides)


@register_model
def spikformer_2_256_dvs(**overrides):
    """Spikformer-2-256, CIFAR10-DVS / DVS128 recipe: 2x128x128 frames, T=16, 2.57M params."""
    return _build("spikformer_2_256_dvs", sizes.DVS_2_256, sizes.NO_SEMM_SWITCHES, overrides,
                  num_heads=16, attn_scale=0.25)


@register_model
def spikformer_4_384_cifar(**overrides):
    """Spikformer-4-384, CIFAR recipe: 3x32x32, 4x4 patches, T=4, 9.32M params."""
    return _build("spikformer_4_384_cifar", sizes.CIFAR_4_384, sizes.NO_SEMM_SWITCHES, overrides, num_heads=12)


@register_model
def spikformer_8_384(**overrides):
    """Spikformer-8-384, ImageNet recipe: 3x224x224, 16x16 patches, T=4, 16.81M params."""
    return _build("spikformer_8_384", sizes.IMAGENET_8_384, sizes.NO_SEMM_SWITCHES, overrides, num_heads=12)


@register_model
def spikformer_8_512(**overrides):
    """Spikformer-8-512, ImageNet recipe, 29.68M params."""
    return _build("spikformer_8_512", sizes.IMAGENET_8_512, sizes.NO_SEMM_SWITCHES, overrides, num_heads=8)


@register_model
def spikformer_8_768(**overrides):
    """Spikformer-8-768, ImageNet recipe, 66.34M params."""
    return _build("spikformer_8_768", sizes.IMAGENET_8_768, sizes.NO_SEMM_SWITCHES, overrides, num_heads=12)


@register_model
def test_spikformer(**overrides):
    """Tiny Spikformer for tests: 2x16x16 frames, 1 block of width 32, T=2."""
    return _build("test_spikformer", sizes.TEST, sizes.NO_SEMM_SWITCHES, overrides, num_heads=4)


@register_model
def spikformer_semm_2_256_dvs(**overrides):
    """Spikformer-2-256 + SEMM (EMSA + EMSP), DVS recipe."""
    return _build("spikformer_semm_2_256_dvs", sizes.DVS_2_256, sizes.SEMM_DVS, overrides,
                  num_heads=16, attn_scale=0.25)


@register_model
def spikformer_semm_4_384_cifar(**overrides):
    """Spikformer-4-384 + SEMM, CIFAR recipe."""
    return _build("spikformer_semm_4_384_cifar", sizes.CIFAR_4_384, sizes.SEMM_CIFAR, overrides, num_heads=12)


@register_model
def spikformer_semm_8_384(**overrides):
    """Spikformer-8-384 + SEMM, ImageNet recipe."""
    return _build("spikformer_semm_8_384", sizes.IMAGENET_8_384, sizes.SEMM_IMAGENET, overrides, num_heads=12)


@register_model
def spikformer_semm_8_512(**overrides):
    """Spikformer-8-512 + SEMM, ImageNet recipe (the paper's 75.93% ImageNet model)."""
    return _build("spikformer_semm_8_512", sizes.IMAGENET_8_512, sizes.SEMM_IMAGENET, overrides, num_heads=8)


@register_model
def spikformer_semm_8_768(**overrides):
    """Spikformer-8-768 + SEMM, ImageNet recipe."""
    return _build("spikformer_semm_8_768", sizes.IMAGENET_8_768, sizes.SEMM_IMAGENET, overrides, num_heads=12)


@register_model
def test_spikformer_semm(**overrides):
    """Tiny Spikformer + SEMM for tests: 4 experts of width 8."""
    return _build("test_spikformer_semm", sizes.TEST, sizes.SEMM_DVS, overrides, num_heads=4)
