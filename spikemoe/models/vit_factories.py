"""The ViT / V-MoE sizes, ``build_vit``, and the registered dense ``vit_*`` factories (the
network itself is ``vit.py``; the sparse ``vmoe_*`` twins are ``vmoe.py``)."""
from __future__ import annotations

from .registry import check_overrides, register_model
from .vit import VisionTransformer

__all__ = ["B_16", "B_32", "CIFAR_4_384", "DVS_2_256", "EXTRAS", "S_16", "S_32", "TEST",
           "build_vit"]

# The released-model switches (module docstring), off in every factory.
EXTRAS = dict(representation_size=None, head_zero_init=False, head_bias_init=0.0,
              gelu_approximate="none", classifier_loss="softmax_xent", init="trunc_normal")


def build_vit(name: str, defaults: dict, overrides: dict) -> VisionTransformer:
    """Apply checked ``overrides`` to a factory's ``defaults`` (plus ``EXTRAS``) and build."""
    return VisionTransformer(name=name, **check_overrides(name, {**EXTRAS, **defaults}, overrides))


# ---------------------------------------------------------------- sizes and vit_* factories
# Sizes of the spiking models (``sizes.py``) so that comparisons are like for like; the ANN
# reads a static image once (T = 1) and event frames through ``time_mode``. DVS recipes fold
# time into channels by default: of the two modes it is the one that sees the order of
# events (the direction of a gesture), as the spiking models do; ``time_mode="sum"`` is
# cheaper in the first layer (C instead of T*C input channels).
DVS_2_256 = dict(in_channels=2, img_size=(128, 128), patch_size=16, embed_dim=256, depth=2,
                 num_heads=16, mlp_hidden=1024, num_classes=10, T=16, time_mode="fold", pool="cls")
CIFAR_4_384 = dict(in_channels=3, img_size=(32, 32), patch_size=4, embed_dim=384, depth=4,
                   num_heads=12, mlp_hidden=1536, num_classes=10, T=1, time_mode="sum", pool="cls")
# V-MoE's S and B (google-research/vmoe 942a78b vmoe/configs/vmoe_paper/common.py
# get_vmoe_config): 224 x 224 ImageNet, 1000 classes, class token, LayerNorm eps 1e-6.
_IMAGENET = dict(in_channels=3, img_size=(224, 224), num_classes=1000, T=1, time_mode="sum",
                 pool="cls")
VMOE_S = dict(_IMAGENET, depth=8, embed_dim=512, num_heads=8, mlp_hidden=2048)
VMOE_B = dict(_IMAGENET, depth=12, embed_dim=768, num_heads=12, mlp_hidden=3072)
S_16, S_32 = dict(VMOE_S, patch_size=16), dict(VMOE_S, patch_size=32)
B_16, B_32 = dict(VMOE_B, patch_size=16), dict(VMOE_B, patch_size=32)
# test_* twins: 2x16x16 frames, T=2, 4x4 patches -> 4x4 tokens, 2 blocks of width 32.
TEST = dict(in_channels=2, img_size=(16, 16), patch_size=4, embed_dim=32, depth=2, num_heads=4,
            mlp_hidden=128, num_classes=10, T=2, time_mode="fold", pool="cls")


@register_model
def vit_2_256_dvs(**overrides):
    """ViT-2-256, DVS recipe: 2x128x128 frames, T=16 folded into 32 channels, 16x16 patches."""
    return build_vit("vit_2_256_dvs", DVS_2_256, overrides)


@register_model
def vit_4_384_cifar(**overrides):
    """ViT-4-384, CIFAR recipe: 3x32x32 images, 4x4 patches -> 8x8 tokens."""
    return build_vit("vit_4_384_cifar", CIFAR_4_384, overrides)


@register_model
def vit_s_32(**overrides):
    """vmoe's ViT-S/32 (8 blocks, D 512, 8 heads, MLP 2048), 224 x 224, 1000 classes: 27.33M."""
    return build_vit("vit_s_32", S_32, overrides)


@register_model
def vit_s_16(**overrides):
    """vmoe's ViT-S/16 (8 blocks, D 512, 8 heads, MLP 2048), 224 x 224, 1000 classes: 26.23M."""
    return build_vit("vit_s_16", S_16, overrides)


@register_model
def vit_b_32(**overrides):
    """ViT-B/32 (12 blocks, D 768, 12 heads, MLP 3072), 224 x 224, 1000 classes: 88.22M."""
    return build_vit("vit_b_32", B_32, overrides)


@register_model
def vit_b_16(**overrides):
    """ViT-B/16 (12 blocks, D 768, 12 heads, MLP 3072), 224 x 224, 1000 classes: 86.57M."""
    return build_vit("vit_b_16", B_16, overrides)


@register_model
def test_vit(**overrides):
    """Tiny ViT for tests: [T=2, 2, 16, 16] frames folded into 4 channels, 2 blocks of width 32."""
    return build_vit("test_vit", TEST, overrides)
