"""Spike-driven Transformer v1 (Yao et al., NeurIPS 2023) and its SEMM twin.

Every Linear/Conv input except the stem's first conv is binary: residuals add membrane
values, each branch starts with a LIF (membrane shortcut), attention is SDSA (masks and
sums, linear in N). The SEMM twin keeps that property: EMSA's expert outputs occupy
their own channel slots, so the routed sum stays binary (see ``moe/emsa.py``).

Sizes are the Spikformer ones (``models/sizes.py``), which the paper's ImageNet models
share (8-384 / 8-512 / 8-768). Its own CIFAR10-DVS recipe (64x64, T=10) is
``create_model("spike_driven_2_256_dvs", T=10)`` fed 64x64 frames. The SEMM twins'
size gap to their baselines (the Spikformer twins') is stated in ``models/spikformer.py``.
"""
from __future__ import annotations

from . import sizes
from .registry import register_model
from .spiking_vit import build_spiking_vit

# The Spike-driven Transformer's choices: membrane-shortcut residuals, SDSA (linear in N,
# heads do not change its value; 8 as in the official configs; the SSA scale is unused).
_FAMILY = dict(style="spike_driven", attn_scale=0.125, num_heads=8, backend="auto")


def _build(name: str, size: dict, semm: dict, overrides: dict, **choices):
    return build_spiking_vit(name, {**_FAMILY, **choices}, size, semm, overrides)


@register_model
def spike_driven_2_256_dvs(**overrides):
    """Spike-driven Transformer 2-256, CIFAR10-DVS / DVS128 recipe: 2x128x128 frames, T=16, 2.57M params."""
    return _build("spike_driven_2_256_dvs", sizes.DVS_2_256, sizes.NO_SEMM_SWITCHES, overrides)


@register_model
def spike_driven_4_384_cifar(**overrides):
    """Spike-driven Transformer 4-384, CIFAR recipe: 3x32x32, 4x4 patches, T=4, 9.32M params."""
    return _build("spike_driven_4_384_cifar", sizes.CIFAR_4_384, sizes.NO_SEMM_SWITCHES, overrides)


@register_model
def spike_driven_8_384(**overrides):
    """Spike-driven Transformer 8-384, ImageNet recipe: 3x224x224, 16x16 patches, T=4, 16.81M params."""
    return _build("spike_driven_8_384", sizes.IMAGENET_8_384, sizes.NO_SEMM_SWITCHES, overrides)


@register_model
def spike_driven_8_512(**overrides):
    """Spike-driven Transformer 8-512, ImageNet recipe, 29.68M params."""
    return _build("spike_driven_8_512", sizes.IMAGENET_8_512, sizes.NO_SEMM_SWITCHES, overrides)


@register_model
def spike_driven_8_768(**overrides):
    """Spike-driven Transformer 8-768, ImageNet recipe, 66.34M params."""
    return _build("spike_driven_8_768", sizes.IMAGENET_8_768, sizes.NO_SEMM_SWITCHES, overrides)


@register_model
def test_spike_driven(**overrides):
    """Tiny Spike-driven Transformer for tests: 2x16x16 frames, 1 block of width 32, T=2."""
    return _build("test_spike_driven", sizes.TEST, sizes.NO_SEMM_SWITCHES, overrides)


@register_model
def spike_driven_semm_2_256_dvs(**overrides):
    """Spike-driven Transformer 2-256 + SEMM (EMSA + EMSP), DVS recipe."""
    return _build("spike_driven_semm_2_256_dvs", sizes.DVS_2_256, sizes.SEMM_DVS, overrides)


@register_model
def spike_driven_semm_4_384_cifar(**overrides):
    """Spike-driven Transformer 4-384 + SEMM, CIFAR recipe."""
    return _build("spike_driven_semm_4_384_cifar", sizes.CIFAR_4_384, sizes.SEMM_CIFAR, overrides)


@register_model
def spike_driven_semm_8_384(**overrides):
    """Spike-driven Transformer 8-384 + SEMM, ImageNet recipe."""
    return _build("spike_driven_semm_8_384", sizes.IMAGENET_8_384, sizes.SEMM_IMAGENET, overrides)


@register_model
def spike_driven_semm_8_512(**overrides):
    """Spike-driven Transformer 8-512 + SEMM, ImageNet recipe (the paper's 75.93% ImageNet model)."""
    return _build("spike_driven_semm_8_512", sizes.IMAGENET_8_512, sizes.SEMM_IMAGENET, overrides)


@register_model
def spike_driven_semm_8_768(**overrides):
    """Spike-driven Transformer 8-768 + SEMM, ImageNet recipe."""
    return _build("spike_driven_semm_8_768", sizes.IMAGENET_8_768, sizes.SEMM_IMAGENET, overrides)


@register_model
def test_spike_driven_semm(**overrides):
    """Tiny Spike-driven Transformer + SEMM for tests: 4 experts of width 8."""
    return _build("test_spike_driven_semm", sizes.TEST, sizes.SEMM_DVS, overrides)
