"""V-MoE (Riquelme et al., NeurIPS 2021): registered ``vmoe_*`` factories, each the sparse
twin of the ``vit_*`` of the same size (``vit.py``), facts from ``papers.md`` section 4.

The paper's choice everywhere: E = 8 experts, k = 2 per token, 8 images' tokens per routing
group, capacity factor C = 1.05 in training, noise std 1/E, importance and load losses at
0.005 each, experts from a shared initialisation; MoE MLPs in every other block ("Every-2",
0-indexed blocks 1, 3, 5, ...), or in the last n of those ("Last-n").

Our choices where the paper leaves them open: evaluation with the training C = 1.05, Batch
Priority Routing off in training and on in evaluation (the paper pre-trains without BPR and
uses it at inference); both are overrides (``capacity_factor_eval=0.5``,
``batch_priority_eval=False``).
"""
from __future__ import annotations

from . import vit
from .registry import register_model
from .vit import build_vit

MOE = dict(moe_placement="every-2", num_experts=8, k=2, group_images=8, shared_init=True,
           capacity_factor_train=1.05, capacity_factor_eval=1.05, batch_priority_train=False,
           batch_priority_eval=True, noise_std=1.0, importance_weight=0.005, load_weight=0.005)


def _build(name: str, size: dict, overrides: dict, **choices):
    return build_vit(name, {**size, **MOE, **choices}, overrides)


@register_model
def vmoe_2_256_dvs(**overrides):
    """V-MoE-2-256, DVS recipe (block 1 is the MoE: E=8, k=2)."""
    return _build("vmoe_2_256_dvs", vit.DVS_2_256, overrides)


@register_model
def vmoe_4_384_cifar(**overrides):
    """V-MoE-4-384, CIFAR recipe (blocks 1 and 3 are MoEs: E=8, k=2)."""
    return _build("vmoe_4_384_cifar", vit.CIFAR_4_384, overrides)


@register_model
def vmoe_s_16(**overrides):
    """V-MoE-S/16, Every-2 (blocks 1, 3, ..., 11), E=8, k=2, at 224 x 224, 1000 classes."""
    return _build("vmoe_s_16", vit.S_16, overrides)


@register_model
def vmoe_s_32_last2(**overrides):
    """V-MoE-S/32 Last-2 (blocks 9 and 11), E=8, k=2: the released ILSVRC-2012 model's shape
    (73.1% ImageNet top-1 in the paper's release)."""
    return _build("vmoe_s_32_last2", vit.S_32, overrides, moe_placement="last-2")


@register_model
def vmoe_b_16(**overrides):
    """V-MoE-B/16, Every-2 (blocks 1, 3, ..., 11), E=8, k=2, at 224 x 224, 1000 classes."""
    return _build("vmoe_b_16", vit.B_16, overrides)


@register_model
def test_vmoe(**overrides):
    """Tiny V-MoE for tests: ``test_vit``'s size, block 1 an MoE of 4 experts (k=2), routed
    in groups of 2 images."""
    return _build("test_vmoe", vit.TEST, overrides, num_experts=4, group_images=2)
