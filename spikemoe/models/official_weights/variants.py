"""Which official code, and which of its variants, wrote a state dict; the model overrides
its shapes imply (``detect_source``, ``infer_hyperparameters``)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .checkpoint_file import unwrap_state_dict
from .key_maps import block_count
from .report import ConversionError

__all__ = ["SOURCES", "Variant", "detect_source", "detect_variant", "infer_hyperparameters",
           "variant_of"]

SOURCES = ("spikformer", "spike_driven", "spikingjelly")


@dataclass(frozen=True)
class Variant:
    """One official variant: the facts its code fixes that the weights do not show."""

    name: str  # the official file
    style: str  # our SpikingVisionTransformer style
    layer: str  # the attribute suffix of the official projections: conv | linear
    pools: tuple[bool, ...] | None  # None: a config value, not fixed by the code
    scale: float | None  # SSA scale s; None: no SSA
    blocks: str  # the official ModuleList name


def detect_variant(source: str, state: Mapping[str, torch.Tensor]) -> Variant | None:
    """The official variant ``state`` is, for ``source``; None when its keys do not fit."""
    has = state.__contains__
    if source == "spikingjelly":
        if has("blocks.0.attn.qkv_conv_bn.0.weight") or has(
                "patch_embed.stages.0.conv_bn.block.0.weight"):
            return Variant("spikingjelly 2.0 activation_based/model/spikformer.py", "spikformer",
                            "conv", None, 0.125, "blocks")
        return None
    if not has("patch_embed.proj_conv.weight"):
        return None
    if source == "spike_driven":
        if has("block.0.attn.q_linear.weight"):
            return None
        return Variant("Spike-Driven-Transformer model/spikeformer.py + module/", "spike_driven",
                        "conv", None, None, "block")
    if has("block.0.attn.q_linear.weight"):
        return Variant("spikformer cifar10/model.py", "spikformer", "linear",
                        (False, False, True, True), 0.125, "block")
    fc1 = state.get("block.0.mlp.fc1_conv.weight")
    if fc1 is not None and fc1.ndim == 4:
        return Variant("spikformer imagenet/model.py", "spikformer", "conv",
                        (True, True, True, True), 0.125, "block")
    if fc1 is not None and fc1.ndim == 3:
        return Variant("spikformer cifar10dvs/model.py", "spikformer", "conv",
                        (True, True, True, True), 0.25, "block")
    return None


_EXPECTED = {
    "spikformer": "patch_embed.proj_conv.weight, block.0.attn.q_conv.weight (or q_linear) and "
                  "block.0.mlp.fc1_conv.weight (or fc1_linear)",
    "spike_driven": "patch_embed.proj_conv.weight and block.0.attn.q_conv.weight",
    "spikingjelly": "patch_embed.stages.0.conv_bn.block.0.weight and "
                    "blocks.0.attn.qkv_conv_bn.0.weight",
}


def variant_of(source: str, state: Mapping[str, torch.Tensor]) -> Variant:
    if source not in SOURCES:
        raise ConversionError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}.")
    v = detect_variant(source, state)
    if v is None:
        guess = [s for s in SOURCES if s != source and detect_variant(s, state) is not None]
        hint = f" It looks like a {guess[0]!r} checkpoint: pass that source." if guess else ""
        raise ConversionError(
            f"this is not an official {source} state dict: expected keys such as "
            f"{_EXPECTED[source]}; its first keys are {list(state)[:5]}.{hint}")
    return v


def detect_source(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> str | None:
    """Which official code wrote ``state_dict``, for converting into ``model``: SpikingJelly
    by its key names; the official Spikformer and Spike-driven Transformer share theirs, so
    the model's style decides. None when no source fits."""
    state = unwrap_state_dict(state_dict, "state dict")
    if detect_variant("spikingjelly", state) is not None:
        return "spikingjelly"
    source = "spike_driven" if getattr(model, "style", None) == "spike_driven" else "spikformer"
    return source if detect_variant(source, state) is not None else None


def infer_hyperparameters(source: str, state_dict: Mapping[str, torch.Tensor]) -> dict:
    """The model overrides the checkpoint's shapes imply: ``in_channels``, ``embed_dim``,
    ``depth``, ``mlp_hidden``, ``num_classes`` (those it holds; for error messages and the
    ``convert`` command's defaults)."""
    state = unwrap_state_dict(state_dict, "state dict")
    v = variant_of(source, state)
    if source == "spikingjelly":
        first, last = ("patch_embed.stages.0.conv_bn.block.0.weight",
                       "patch_embed.stages.3.conv_bn.block.0.weight")
        fc1 = "blocks.0.mlp.fc1.0.weight"
    else:
        first, last = "patch_embed.proj_conv.weight", "patch_embed.proj_conv3.weight"
        fc1 = f"block.0.mlp.fc1_{v.layer}.weight"
    out = {}
    for name, key, dim in (("in_channels", first, 1), ("embed_dim", last, 0),
                           ("mlp_hidden", fc1, 0), ("num_classes", "head.weight", 0)):
        if key in state and state[key].ndim > dim:
            out[name] = int(state[key].shape[dim])
    depth = block_count(state, v.blocks)
    if depth:
        out["depth"] = depth
    return out
