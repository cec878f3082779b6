"""V-MoE (Riquelme et al., NeurIPS 2021): registered ``vmoe_*`` factories, each the sparse
twin of the ``vit_*`` of the same size (``vit_factories.py``), facts from ``papers.md`` section 4 and
google-research/vmoe at commit 942a78b (``vmoe/configs/vmoe_paper/common.py``
``get_vmoe_config``, ``vmoe/nn/vit_moe.py``, ``vmoe/moe.py``).

vmoe's paper configs everywhere: E = 8 experts, k = 2 per token, routing groups of 8 images'
tokens (``group_size = 8 * (num_patches + 1)``), capacity factor C = 1.05 in training, noise
std 1/E (``noise_std = 1.0``, "Actually, it's 1.0 / num_experts"), importance and load losses
at 0.005 each, experts from a shared initialisation (``split_rngs=False``), no Batch Priority
Routing (``batch_priority = False``); MoE MLPs in every other block ("Every 2": 0-indexed
blocks 1, 3, 5, ...), or in the last n of those ("Last n": ``range(1, L, 2)[-n:]``).

Evaluation routing. vmoe evaluates with the training dispatcher unless a config overrides
it: BPR stays off, and C = 1.05, except in the released ILSVRC-2012 V-MoE-S/32 Last-2
(``vmoe_s32_last2_ilsvrc2012_randaug_light1.py``: ``evaluate.model_overrides`` capacity
factor 4.0, "Use higher capacity for evaluation"). So ``batch_priority_eval=False`` and
``capacity_factor_eval=1.05`` (4.0 in ``vmoe_s_32_last2``). The paper's alternative, BPR at
inference with a reduced capacity (its Section 4), is ``batch_priority_eval=True,
capacity_factor_eval=<C>``. Capacity is rounded as vmoe's ``compute_capacity``
(``capacity_rounding="vmoe"``).

The released model's other extras (pre-logits layer, zero head with bias -log(K), expert
dropout 0.2, flax's tanh GELU, sigmoid cross-entropy) are switches of ``VisionTransformer``
that ``configs/imagenet_vmoe_s_32_last2.yaml`` turns on (``vit.py`` docstring).

Parameters at 224 x 224, 1000 classes (each MoE block adds E - 1 = 7 expert MLPs and a D x E
router to its ViT): vmoe_s_32 (Every-2, 4 MoE blocks) 86.14M, vmoe_s_32_last2 56.74M,
vmoe_s_16 85.04M, vmoe_b_32 286.60M, vmoe_b_16 284.95M; the pre-logits layer adds D^2 + D
(0.26M for S, 0.59M for B). ``tests/test_vmoe_models.py`` checks every count against the
parameter shapes of vmoe's flax modules.
"""
from __future__ import annotations

from . import vit_factories as vit
from .registry import register_model
from .vit import sigmoid_cross_entropy
from .vit_factories import build_vit

__all__ = ["MOE", "sigmoid_cross_entropy"]

MOE = dict(moe_placement="every-2", num_experts=8, k=2, group_images=8, shared_init=True,
           capacity_factor_train=1.05, capacity_factor_eval=1.05, batch_priority_train=False,
           batch_priority_eval=False, noise_std=1.0, importance_weight=0.005, load_weight=0.005,
           capacity_rounding="vmoe", expert_dropout=0.0)


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
def vmoe_s_32(**overrides):
    """V-MoE-S/32 Every-2 (blocks 1, 3, 5, 7 of vmoe's 8-block S), E=8, k=2, 224 x 224."""
    return _build("vmoe_s_32", vit.S_32, overrides)


@register_model
def vmoe_s_32_last2(**overrides):
    """V-MoE-S/32 Last-2 (blocks 5 and 7 of vmoe's 8-block S), E=8, k=2, evaluated at
    C = 4.0 without BPR: the STRUCTURE and evaluation routing of the released ILSVRC-2012
    model (76.8% val / 73.1% test in vmoe's config file). Its training extras are off here;
    ``configs/imagenet_vmoe_s_32_last2.yaml`` turns them on."""
    return _build("vmoe_s_32_last2", vit.S_32, overrides, moe_placement="last-2",
                  capacity_factor_eval=4.0)


@register_model
def vmoe_s_16(**overrides):
    """V-MoE-S/16 Every-2 (blocks 1, 3, 5, 7 of vmoe's 8-block S), E=8, k=2, 224 x 224."""
    return _build("vmoe_s_16", vit.S_16, overrides)


@register_model
def vmoe_b_32(**overrides):
    """V-MoE-B/32 Every-2 (blocks 1, 3, ..., 11), E=8, k=2, 224 x 224, 1000 classes."""
    return _build("vmoe_b_32", vit.B_32, overrides)


@register_model
def vmoe_b_16(**overrides):
    """V-MoE-B/16 Every-2 (blocks 1, 3, ..., 11), E=8, k=2, 224 x 224, 1000 classes (the
    shape of vmoe's ImageNet-21k pre-training config, there with 21,843 classes)."""
    return _build("vmoe_b_16", vit.B_16, overrides)


@register_model
def test_vmoe(**overrides):
    """Tiny V-MoE for tests: ``test_vit``'s size, block 1 an MoE of 4 experts (k=2), routed
    in groups of 2 images."""
    return _build("test_vmoe", vit.TEST, overrides, num_experts=4, group_images=2)
