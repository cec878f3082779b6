"""The key maps: which official keys build which of our keys, and how (``KeyPlan``).

``plan_official`` is the map of the official Spikformer (every variant) and the official
Spike-driven Transformer, which share their attribute names; ``plan_spikingjelly`` that of
SpikingJelly 2.0's Spikformer. The files they follow, and our keys, are listed in the
package docstring (``spikemoe.models.official_weights``).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .report import ConversionError

__all__ = ["NEVER_USED", "Entry", "KeyPlan", "block_count", "plan_official", "plan_spikingjelly"]

BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass
class Entry:
    """A target key, the source keys it is built from, and how (``make``); ``fill`` gives
    its value when a source key is absent (zero bias, ``num_batches_tracked``)."""

    target: str
    sources: tuple[str, ...]
    make: Callable[[list[torch.Tensor]], torch.Tensor]
    fill: Callable[[torch.Size], torch.Tensor] | None = None


def _as_matrix(t: torch.Tensor) -> torch.Tensor:
    """A kernel-1 conv weight ``[out, in, 1(, 1)]`` as a Linear weight ``[out, in]``."""
    if t.ndim > 2 and all(s == 1 for s in t.shape[2:]):
        return t.reshape(t.shape[0], t.shape[1])  # [out, in, 1, 1] -> [out, in]
    return t  # anything else is left for the shape check to refuse


def _cat(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([_as_matrix(t) for t in ts], dim=0)  # q, k, v stacked on the output axis


def _zeros(shape: torch.Size) -> torch.Tensor:
    return torch.zeros(shape)


def _batches(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.reshape(()) for t in ts]).max()  # equal for q, k, v in practice


class KeyPlan:
    """The entries of one source's key map."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self.state, self.entries = state, []

    def copy(self, target: str, source: str) -> None:
        self.entries.append(Entry(target, (source,), lambda ts: ts[0]))

    def bn(self, target: str, sources: list[str]) -> None:
        """BatchNorm ``target`` from the BNs ``sources`` (concatenated channels)."""
        for f in BN_FIELDS:
            keys = tuple(f"{s}.{f}" for s in sources)
            if f == "num_batches_tracked":
                self.entries.append(Entry(f"{target}.{f}", keys, _batches,
                                           fill=lambda shape: torch.zeros(shape, dtype=torch.long)))
            else:
                self.entries.append(Entry(f"{target}.{f}", keys, _cat))

    def conv_bn(self, target: str, conv: str, bn: str) -> None:
        """Our ``SeqToANNContainer(Conv2d, BatchNorm2d)`` at ``target``."""
        self.copy(f"{target}.0.weight", conv)
        self.bn(f"{target}.1", [bn])

    def linear_bn(self, target: str, parts: list[tuple[str, str]]) -> None:
        """Our ``TokenLinearBN`` at ``target`` from ``(layer, bn)`` source prefixes, fused in
        order; biases concatenated when every part has one, zeros when none has."""
        weights = tuple(f"{layer}.weight" for layer, _ in parts)
        biases = tuple(f"{layer}.bias" for layer, _ in parts)
        self.entries.append(Entry(f"{target}.linear.weight", weights, _cat))
        has_bias = [b in self.state for b in biases]
        if all(has_bias):
            self.entries.append(Entry(f"{target}.linear.bias", biases, _cat))
        elif not any(has_bias):
            self.entries.append(Entry(f"{target}.linear.bias", (), _cat, fill=_zeros))
        else:
            raise ConversionError(
                f"{', '.join(b for b, h in zip(biases, has_bias) if h)} exist but "
                f"{', '.join(b for b, h in zip(biases, has_bias) if not h)} do not: the parts fused "
                f"into {target}.linear need all or none of their biases. The checkpoint is not "
                "one the official code writes.")
        self.bn(f"{target}.bn", [bn for _, bn in parts])


def block_count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    found = [int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.", k))]
    return max(found) + 1 if found else 0


_SPS = [("proj_conv", "proj_bn"), ("proj_conv1", "proj_bn1"), ("proj_conv2", "proj_bn2"),
        ("proj_conv3", "proj_bn3")]


def plan_official(plan: KeyPlan, depth: int, layer: str) -> None:
    """Spikformer (all variants) and Spike-driven Transformer: the same attribute names
    (``patch_embed.proj_conv*``, ``block.{l}.attn.{q,k,v}_{layer}``, ...)."""
    for i, (conv, bn) in enumerate(_SPS):
        plan.conv_bn(f"stem.stages.{i}", f"patch_embed.{conv}.weight", f"patch_embed.{bn}")
    plan.conv_bn("stem.rpe", "patch_embed.rpe_conv.weight", "patch_embed.rpe_bn")
    for b in range(depth):
        s, t = f"block.{b}", f"blocks.{b}"
        plan.linear_bn(f"{t}.attn.qkv", [(f"{s}.attn.{n}_{layer}", f"{s}.attn.{n}_bn")
                                         for n in "qkv"])
        plan.linear_bn(f"{t}.attn.proj", [(f"{s}.attn.proj_{layer}", f"{s}.attn.proj_bn")])
        for fc in ("fc1", "fc2"):
            plan.linear_bn(f"{t}.mlp.{fc}", [(f"{s}.mlp.{fc}_{layer}", f"{s}.mlp.{fc}_bn")])
    plan.copy("head.weight", "head.weight")
    plan.copy("head.bias", "head.bias")


def plan_spikingjelly(plan: KeyPlan, depth: int) -> None:
    for i in range(4):
        p = f"patch_embed.stages.{i}.conv_bn.block"
        plan.conv_bn(f"stem.stages.{i}", f"{p}.0.weight", f"{p}.1")
    p = "patch_embed.positional_encoding.conv_bn.block"
    plan.conv_bn("stem.rpe", f"{p}.0.weight", f"{p}.1")
    for b in range(depth):
        s, t = f"blocks.{b}", f"blocks.{b}"
        plan.linear_bn(f"{t}.attn.qkv", [(f"{s}.attn.qkv_conv_bn.0", f"{s}.attn.qkv_conv_bn.1")])
        plan.linear_bn(f"{t}.attn.proj", [(f"{s}.attn.proj_conv_bn.0", f"{s}.attn.proj_conv_bn.1")])
        for fc in ("fc1", "fc2"):
            plan.linear_bn(f"{t}.mlp.{fc}", [(f"{s}.mlp.{fc}.0", f"{s}.mlp.{fc}.1")])
    plan.copy("head.weight", "head.weight")
    plan.copy("head.bias", "head.bias")


# Source keys the official forward never reads: (pattern, reason).
NEVER_USED = [
    (r"block\.\d+\.norm[12]\.", "a LayerNorm the official Block defines but never calls in forward"),
    (r"pos_embed$", "a position embedding cifar10dvs/model.py defines but never adds in forward"),
    (r"norm\.(weight|bias)$", "a final LayerNorm cifar10dvs/model.py defines but never calls"),
    (r"block\.\d+\.attn\.talking_heads\.", "a Conv1d MS_SSA_Conv defines but never calls in "
                                           "forward (its talking_heads_lif reads the sum directly)"),
]
