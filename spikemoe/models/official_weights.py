"""Official checkpoints in: map the state dicts of the official Spikformer, Spike-driven
Transformer and SpikingJelly 2.0 Spikformer onto ``SpikingVisionTransformer``.

Key maps follow these files (read, not copied; commits as mirrored):

``spikformer``   ZK-Zhou/spikformer @ 621268981827af47aa666c1b5f774de4281d90ad, three variants
                 told apart by their keys and shapes:
                 ``imagenet/model.py``   q/k/v/proj ``Conv1d(k=1)`` (q/k/v without bias), MLP
                                         ``Conv2d(k=1)``; SPS pools after all 4 LIFs; s = 0.125
                 ``cifar10/model.py``    q/k/v/proj/MLP ``Linear`` (all with bias); SPS pools
                                         after stages 3-4 only; s = 0.125
                 ``cifar10dvs/model.py`` as imagenet but MLP ``Conv1d(k=1)``; s = 0.25; an
                                         unused ``pos_embed`` and final ``norm``
                 Every variant's ``Block`` holds ``norm1``/``norm2`` LayerNorms its forward
                 never calls.
``spike_driven`` BICLab/Spike-Driven-Transformer @ 3faa82272eb499e4d56ea77707d4536e7c69a54b:
                 ``model/spikeformer.py`` (``head_lif``, ``head``), ``module/sps.py``
                 (``MS_SPS``: pools after the LIF in stages 1-3, before it in stage 4),
                 ``module/ms_conv.py`` (``MS_SSA_Conv``: q/k/v ``Conv2d(k=1)`` without bias;
                 ``talking_heads`` Conv1d defined, never called; ``MS_MLP_Conv``).
``spikingjelly`` SpikingJelly 2.0.0 ``activation_based/model/spikformer.py`` (``Spikformer``,
                 ``SpikformerPatchStem``: ``MaxPool2d`` inside ``conv_bn``, so BEFORE each LIF)
                 and ``activation_based/layer/attention.py`` (``SpikingSelfAttention``: one fused
                 ``qkv_conv_bn`` Conv1d without bias, output channels q, k, v).

Ours (``spikemoe.create_model("spikformer_8_384").state_dict()``):

    stem.stages.{i}.{0: Conv2d, 1: BatchNorm2d}   i = 0..3        stem.rpe.{0, 1}
    blocks.{l}.attn.qkv.{linear, bn}      Q, K, V fused: weights and BN statistics
                                          concatenated in q, k, v order
    blocks.{l}.attn.proj.{linear, bn}     blocks.{l}.mlp.fc1/fc2.{linear, bn}      head

A ``Conv1d``/``Conv2d`` with kernel 1 is a ``Linear``: its weight ``[out, in, 1(, 1)]`` is
reshaped to ``[out, in]``. A source layer without bias gets a zero bias (listed in
``ConversionReport.zero_filled``). A missing ``num_batches_tracked`` is filled with 0 (it
only matters when training with ``momentum=None``).

What the weights cannot tell (attention heads, T, the official DVS ``Erode`` pooling) goes
into ``ConversionReport.notes``; architecture differences that change the output
(pooling order, SSA scale, depth, ...) go into ``differences`` and refuse the conversion
unless ``allow_mismatch=True`` (then the weights are an initialisation, not the same
network). A shape mismatch always raises, naming both keys and both shapes.

Written by hand: no library maps these checkpoints.
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = ["SOURCES", "ConversionError", "ConversionReport", "KeyMapping",
           "ShapeMismatchError", "convert_state_dict", "detect_source", "infer_hyperparameters",
           "load_official_checkpoint"]

SOURCES = ("spikformer", "spike_driven", "spikingjelly")
BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
_CHECKPOINT_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")


class ConversionError(ValueError):
    """A checkpoint that cannot be converted onto the model; the message says why and what to do."""


class ShapeMismatchError(ConversionError):
    """A source tensor whose shape does not fit the target key; both keys and shapes named."""


@dataclass(frozen=True)
class KeyMapping:
    """One target key and the source keys it was built from (3 for a fused q/k/v tensor)."""

    target: str
    sources: tuple[str, ...]


@dataclass
class ConversionReport:
    """What ``convert_state_dict`` did.

    Attributes:
        source: ``spikformer`` | ``spike_driven`` | ``spikingjelly``.
        variant: the official file the keys were matched against.
        model: the target model's registry name.
        mapped: every target key filled from source keys.
        unused: source key -> why it was not used.
        missing: target keys no source key filled (they keep the model's initialisation).
        zero_filled: target keys set to zero because the source has no such tensor (biases).
        differences: architecture differences that change the output (refused unless
            ``allow_mismatch``).
        notes: facts the weights cannot tell and the user must check.
    """

    source: str
    variant: str
    model: str
    mapped: list[KeyMapping] = field(default_factory=list)
    unused: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    zero_filled: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def num_source_keys_used(self) -> int:
        """Distinct source keys consumed by the mapping."""
        return len({k for m in self.mapped for k in m.sources})

    def format(self, verbose: bool = True) -> str:
        """The report as text: counts, then (``verbose``) every key by section."""
        lines = [f"{self.source} ({self.variant}) -> {self.model}: {len(self.mapped)} target keys "
                 f"mapped from {self.num_source_keys_used} source keys; {len(self.unused)} source "
                 f"keys unused; {len(self.missing)} target keys missing; {len(self.zero_filled)} "
                 f"zero-filled; {len(self.differences)} architecture differences."]
        sections = [("differences", self.differences), ("notes", self.notes)]
        if verbose:
            sections = [
                ("mapped", [f"{m.target} <- {' + '.join(m.sources)}" for m in self.mapped]),
                ("unused", [f"{k}: {why}" for k, why in self.unused.items()]),
                ("missing", self.missing), ("zero-filled", self.zero_filled), *sections]
        for title, items in sections:
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend(f"  {item}" for item in items)
        return "\n".join(lines)


# --------------------------------------------------------------------------- reading files


def _unwrap(obj, where: str) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint object: a bare one, or under one of
    ``_CHECKPOINT_KEYS``; wrapper prefixes (``module.``, ``_orig_mod.``) removed."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = dict(obj)
    else:
        inner = next((k for k in _CHECKPOINT_KEYS if isinstance(obj, Mapping) and
                      isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            found = (f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping)
                     else type(obj).__name__)
            raise ConversionError(
                f"{where}: expected a state dict (parameter name -> tensor), or a dict holding "
                f"one under {' / '.join(map(repr, _CHECKPOINT_KEYS))}; found {found}. Pass the "
                "file the official training script wrote (checkpoint-*.pth.tar, model_best.pth.tar,"
                " checkpoint_max_test_acc1.pth) or save model.state_dict() yourself.")
        state = {k: v for k, v in obj[inner].items() if isinstance(v, torch.Tensor)}
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_official_checkpoint(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read an official checkpoint file into a flat state dict.

    ``.safetensors`` files go through the ``safetensors`` package; anything else through
    ``torch.load(weights_only=True)`` (no pickled code runs; ``argparse.Namespace``, which the
    timm and torchvision training scripts store under ``args``, is allowed as plain data).

    Args:
        path: the checkpoint file.
        key: the entry holding the weights (``state_dict``, ``model``, ``state_dict_ema``);
            default: a bare state dict, else the first of those present.

    Returns:
        ``{name: tensor}`` on the CPU, ``module.`` / ``_orig_mod.`` prefixes removed.

    Raises:
        FileNotFoundError: no such file.
        ConversionError: unreadable, or no state dict inside (the message says what was found).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist.")
    if path.suffix == ".safetensors":
        from .weights_io import load_weights

        obj = load_weights(path)
    else:
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (unpickling and zip errors have many types)
            first = (str(e).strip().splitlines() or ["no message"])[0][:300]
            raise ConversionError(
                f"{path} cannot be read with weights-only loading ({type(e).__name__}: {first}). "
                "If it is a truncated download, fetch it again. If it holds other Python "
                "objects and you trust it, re-save only its weights: python -c \"import torch; "
                f"c = torch.load('{path}', weights_only=False); torch.save(c.get('state_dict', "
                "c.get('model', c)), 'weights.pth')\"") from None
    if key is not None:
        if not (isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping)):
            have = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise ConversionError(f"{path} has no state dict under {key!r}; it holds {have}. "
                                  "Leave out the key to pick the weights automatically.")
        obj = obj[key]
    return _unwrap(obj, str(path))


# --------------------------------------------------------------------------- key plans


@dataclass
class _Entry:
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


class _Plan:
    """The entries of one source's key map."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self.state, self.entries = state, []

    def copy(self, target: str, source: str) -> None:
        self.entries.append(_Entry(target, (source,), lambda ts: ts[0]))

    def bn(self, target: str, sources: list[str]) -> None:
        """BatchNorm ``target`` from the BNs ``sources`` (concatenated channels)."""
        for f in BN_FIELDS:
            keys = tuple(f"{s}.{f}" for s in sources)
            if f == "num_batches_tracked":
                self.entries.append(_Entry(f"{target}.{f}", keys, _batches,
                                           fill=lambda shape: torch.zeros(shape, dtype=torch.long)))
            else:
                self.entries.append(_Entry(f"{target}.{f}", keys, _cat))

    def conv_bn(self, target: str, conv: str, bn: str) -> None:
        """Our ``SeqToANNContainer(Conv2d, BatchNorm2d)`` at ``target``."""
        self.copy(f"{target}.0.weight", conv)
        self.bn(f"{target}.1", [bn])

    def linear_bn(self, target: str, parts: list[tuple[str, str]]) -> None:
        """Our ``TokenLinearBN`` at ``target`` from ``(layer, bn)`` source prefixes, fused in
        order; biases concatenated when every part has one, zeros when none has."""
        weights = tuple(f"{layer}.weight" for layer, _ in parts)
        biases = tuple(f"{layer}.bias" for layer, _ in parts)
        self.entries.append(_Entry(f"{target}.linear.weight", weights, _cat))
        has_bias = [b in self.state for b in biases]
        if all(has_bias):
            self.entries.append(_Entry(f"{target}.linear.bias", biases, _cat))
        elif not any(has_bias):
            self.entries.append(_Entry(f"{target}.linear.bias", (), _cat, fill=_zeros))
        else:
            raise ConversionError(
                f"{', '.join(b for b, h in zip(biases, has_bias) if h)} exist but "
                f"{', '.join(b for b, h in zip(biases, has_bias) if not h)} do not: the parts fused "
                f"into {target}.linear need all or none of their biases. The checkpoint is not "
                "one the official code writes.")
        self.bn(f"{target}.bn", [bn for _, bn in parts])


def _block_count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    found = [int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.", k))]
    return max(found) + 1 if found else 0


_SPS = [("proj_conv", "proj_bn"), ("proj_conv1", "proj_bn1"), ("proj_conv2", "proj_bn2"),
        ("proj_conv3", "proj_bn3")]


def _plan_official(plan: _Plan, depth: int, layer: str) -> None:
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


def _plan_spikingjelly(plan: _Plan, depth: int) -> None:
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
_NEVER_USED = [
    (r"block\.\d+\.norm[12]\.", "a LayerNorm the official Block defines but never calls in forward"),
    (r"pos_embed$", "a position embedding cifar10dvs/model.py defines but never adds in forward"),
    (r"norm\.(weight|bias)$", "a final LayerNorm cifar10dvs/model.py defines but never calls"),
    (r"block\.\d+\.attn\.talking_heads\.", "a Conv1d MS_SSA_Conv defines but never calls in "
                                           "forward (its talking_heads_lif reads the sum directly)"),
]


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class _Variant:
    name: str  # the official file
    style: str  # our SpikingVisionTransformer style
    layer: str  # the attribute suffix of the official projections: conv | linear
    pools: tuple[bool, ...] | None  # None: a config value, not fixed by the code
    scale: float | None  # SSA scale s; None: no SSA
    blocks: str  # the official ModuleList name


def _detect(source: str, state: Mapping[str, torch.Tensor]) -> _Variant | None:
    """The official variant ``state`` is, for ``source``; None when its keys do not fit."""
    has = state.__contains__
    if source == "spikingjelly":
        if has("blocks.0.attn.qkv_conv_bn.0.weight") or has(
                "patch_embed.stages.0.conv_bn.block.0.weight"):
            return _Variant("spikingjelly 2.0 activation_based/model/spikformer.py", "spikformer",
                            "conv", None, 0.125, "blocks")
        return None
    if not has("patch_embed.proj_conv.weight"):
        return None
    if source == "spike_driven":
        if has("block.0.attn.q_linear.weight"):
            return None
        return _Variant("Spike-Driven-Transformer model/spikeformer.py + module/", "spike_driven",
                        "conv", None, None, "block")
    if has("block.0.attn.q_linear.weight"):
        return _Variant("spikformer cifar10/model.py", "spikformer", "linear",
                        (False, False, True, True), 0.125, "block")
    fc1 = state.get("block.0.mlp.fc1_conv.weight")
    if fc1 is not None and fc1.ndim == 4:
        return _Variant("spikformer imagenet/model.py", "spikformer", "conv",
                        (True, True, True, True), 0.125, "block")
    if fc1 is not None and fc1.ndim == 3:
        return _Variant("spikformer cifar10dvs/model.py", "spikformer", "conv",
                        (True, True, True, True), 0.25, "block")
    return None


_EXPECTED = {
    "spikformer": "patch_embed.proj_conv.weight, block.0.attn.q_conv.weight (or q_linear) and "
                  "block.0.mlp.fc1_conv.weight (or fc1_linear)",
    "spike_driven": "patch_embed.proj_conv.weight and block.0.attn.q_conv.weight",
    "spikingjelly": "patch_embed.stages.0.conv_bn.block.0.weight and "
                    "blocks.0.attn.qkv_conv_bn.0.weight",
}


def _variant(source: str, state: Mapping[str, torch.Tensor]) -> _Variant:
    if source not in SOURCES:
        raise ConversionError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}.")
    v = _detect(source, state)
    if v is None:
        guess = [s for s in SOURCES if s != source and _detect(s, state) is not None]
        hint = f" It looks like a {guess[0]!r} checkpoint: pass that source." if guess else ""
        raise ConversionError(
            f"this is not an official {source} state dict: expected keys such as "
            f"{_EXPECTED[source]}; its first keys are {list(state)[:5]}.{hint}")
    return v


def detect_source(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> str | None:
    """Which official code wrote ``state_dict``, for converting into ``model``: SpikingJelly
    by its key names; the official Spikformer and Spike-driven Transformer share theirs, so
    the model's style decides. None when no source fits."""
    state = _unwrap(state_dict, "state dict")
    if _detect("spikingjelly", state) is not None:
        return "spikingjelly"
    source = "spike_driven" if getattr(model, "style", None) == "spike_driven" else "spikformer"
    return source if _detect(source, state) is not None else None


def infer_hyperparameters(source: str, state_dict: Mapping[str, torch.Tensor]) -> dict:
    """The model overrides the checkpoint's shapes imply: ``in_channels``, ``embed_dim``,
    ``depth``, ``mlp_hidden``, ``num_classes`` (those it holds; for error messages and the
    ``convert`` command's defaults)."""
    state = _unwrap(state_dict, "state dict")
    v = _variant(source, state)
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
    depth = _block_count(state, v.blocks)
    if depth:
        out["depth"] = depth
    return out


# --------------------------------------------------------------------------- conversion


def _model_checks(source: str, v: _Variant, model: nn.Module, state: Mapping[str, torch.Tensor],
                  hp: dict) -> tuple[list[str], list[str]]:
    """Differences that change the output, and notes the user must check."""
    from ..moe.emsa import EMSA
    from ..moe.emsp import EMSP
    from .spiking_vit import SpikingVisionTransformer

    name = getattr(model, "name", type(model).__name__)
    if not isinstance(model, SpikingVisionTransformer):
        raise ConversionError(f"official {source} weights convert into Spikformer / Spike-driven "
                              f"models (spikformer_*, spike_driven_*, test_*); got "
                              f"{type(model).__name__}.")
    if model.style != v.style:
        want = "spikformer_*" if v.style == "spikformer" else "spike_driven_*"
        raise ConversionError(f"{source} weights are a {v.style} network but {name} is "
                              f"style={model.style!r} (other residuals and attention): build a "
                              f"{want} model instead.")
    if any(isinstance(b.attn, EMSA) or isinstance(b.mlp, EMSP) for b in model.blocks):
        raise ConversionError(
            f"{name} is a SEMM twin: its routers and experts have no official weights and its "
            f"projections have other shapes. Convert into the baseline "
            f"({name.replace('_semm', '')}) and fine-tune from there.")
    diffs, notes = [], []
    pools = model.stem.pools
    depth = hp.get("depth")
    if depth is not None and depth != len(model.blocks):
        diffs.append(f"depth: the checkpoint has {depth} blocks, {name} has {len(model.blocks)} "
                     f"(build it with depth={depth}).")
    attn = model.blocks[0].attn
    if v.scale is not None and abs(attn.scale - v.scale) > 1e-12:
        diffs.append(f"SSA scale: {v.name} uses s = {v.scale}, {name} uses {attn.scale} (build "
                     f"it with attn_scale={v.scale}).")
    if v.pools is not None and tuple(pools) != v.pools:
        diffs.append(f"stem pooling: {v.name} pools after stages "
                     f"{[i + 1 for i, p in enumerate(v.pools) if p]}, {name} after "
                     f"{[i + 1 for i, p in enumerate(pools) if p]} (build it with "
                     f"pools={list(v.pools)}).")
    if v.style == "spikformer" and attn.kernel == "ssa":
        heads = {"spikformer imagenet/model.py": "8 (8-512), 12 (8-384, 8-768)",
                 "spikformer cifar10/model.py": "12 (4-384)",
                 "spikformer cifar10dvs/model.py": "16 (2-256)"}.get(
                     v.name, "8 (spikformer_ti), 12 (spikformer_s, spikformer_cifar10)")
        notes.append(f"num_heads is not in the weights and changes SSA's output: {name} has "
                     f"{attn.num_heads}; the official configs use {heads}. Match the training run.")
    if source == "spikformer":
        notes.append("T is not in the weights: imagenet/model.py hard-codes T=4, cifar10 uses "
                     "T=4, cifar10dvs the frame count (16); the model's T is "
                     f"{model.T} (build it with T=...).")
    if source == "spikingjelly":
        pooled = [i + 1 for i, p in enumerate(pools) if p]
        if pooled:
            diffs.append(f"stem pooling order: SpikformerPatchStem max-pools BEFORE each LIF "
                         f"(inside conv_bn); {name} pools the spikes AFTER the LIF, as the official "
                         f"Spikformer, in stages {pooled}: the stem's spikes differ, blocks and "
                         "head are the same network.")
        notes.append("SpikingJelly's Spikformer returns per-step logits [T, B, K]; ours are "
                     "their mean over T. Its stem pools stages 3-4 (patch_size=4) or all 4 "
                     f"(patch_size=16); {name} pools {list(pools)}.")
    if source == "spike_driven":
        before = [i + 1 for i in range(3) if pools[i] and any(
            isinstance(m, nn.MaxPool2d) for m in model.stem.stages[i].modules())]
        if before:
            diffs.append(f"stem pooling order: MS_SPS (module/sps.py) max-pools stages 1-3 AFTER "
                         f"their LIF and only stage 4 before it; {name}'s stem pools before the "
                         f"LIF in stages {before}, so its spikes differ. Only a stem that pools "
                         "stages 1-3 after the LIF (layers/patch_split.py) reproduces the network.")
        hidden = model.blocks[0].mlp.fc1.linear.out_features
        if hidden == model.blocks[0].mlp.fc1.linear.in_features:
            diffs.append(f"MLP: with hidden width = width ({hidden}) MS_MLP_Conv adds a residual "
                         "around fc1 that our SpikingMLP does not have.")
        plif = sorted(k for k in state if re.search(r"lif\d*\.w$", k))
        if plif:
            diffs.append(f"spike_mode='plif': {len(plif)} learned time constants ({plif[0]}, ...) "
                         "have no place in our fixed-tau LIF; the network differs.")
        notes.append("pooling_stat and dvs_mode are not in the weights: the official CIFAR10-DVS "
                     "recipe trains with dvs_mode=True (an Erode 3x3 max-pool on K, V, K*V and "
                     "the output) that our SDSA does not have; ImageNet/CIFAR/Gesture runs use "
                     "dvs_mode=False and convert exactly.")
    return diffs, notes


def _unused_reason(key: str, model_name: str, depth: int) -> tuple[str, bool]:
    """``(reason, expected)``: why a source key was not used, and whether the official
    forward never reads it either (expected) or it signals an architecture difference."""
    for pattern, why in _NEVER_USED:
        if re.search(pattern, key):
            return why, True
    m = re.match(r"blocks?\.(\d+)\.", key)
    if m and int(m.group(1)) >= depth:
        return f"block {m.group(1)} is beyond {model_name}'s {depth} blocks", False
    return f"no counterpart in {model_name}", False


def _shape_error(e: _Entry, tensors: list[torch.Tensor], value: torch.Tensor,
                 target_shape: torch.Size, hint: str) -> ShapeMismatchError:
    parts = " + ".join(f"{k} {tuple(t.shape)}" for k, t in zip(e.sources, tensors))
    built = f" (as {tuple(value.shape)})" if len(tensors) > 1 or tuple(value.shape) != tuple(
        tensors[0].shape) else ""
    return ShapeMismatchError(
        f"shape mismatch: source {parts}{built} cannot fill target {e.target} "
        f"{tuple(target_shape)}. The checkpoint is a different size from the model: {hint}")


def convert_state_dict(source: str, state_dict: Mapping[str, torch.Tensor], model: nn.Module, *,
                       allow_mismatch: bool = False
                       ) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map an official state dict onto ``model``'s keys.

    Args:
        source: ``spikformer`` | ``spike_driven`` | ``spikingjelly``.
        state_dict: the official weights (a bare state dict, or a checkpoint dict holding one
            under ``state_dict`` / ``model``; ``module.`` prefixes are removed).
        model: the target ``SpikingVisionTransformer`` (non-SEMM, same style), built with the
            checkpoint's sizes (``infer_hyperparameters`` gives them).
        allow_mismatch: convert even when the report lists architecture differences, target
            keys no source fills, or source keys with no counterpart (the weights are then an
            initialisation, not the same network).

    Returns:
        ``(state, report)``: ``state`` has every key of ``model.state_dict()`` (missing ones
        keep the model's own values, in the model's dtypes) and loads with
        ``model.load_state_dict(state)``.

    Raises:
        ShapeMismatchError: a source tensor does not fit its target key (both keys and shapes
            named, and the overrides the checkpoint implies).
        ConversionError: not a ``source`` checkpoint; a model it cannot map onto; or, unless
            ``allow_mismatch``, differences / missing / unexplained unused keys (all listed).
    """
    if source not in SOURCES:
        raise ConversionError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}.")
    state = _unwrap(state_dict, f"{source} weights")
    variant = _variant(source, state)
    hp = infer_hyperparameters(source, state)
    name = getattr(model, "name", type(model).__name__)
    sizes = ", ".join(f"{k}={v}" for k, v in hp.items())
    hint = (f"build it with create_model({name!r}, {sizes}) (on the command line: spikemoe "
            f"convert ... --set {sizes.replace(', ', ' ')}).")
    diffs, notes = _model_checks(source, variant, model, state, hp)
    depth = len(model.blocks)
    plan = _Plan(state)
    if source == "spikingjelly":
        _plan_spikingjelly(plan, min(depth, hp.get("depth", 0)))
    else:
        _plan_official(plan, min(depth, hp.get("depth", 0)), variant.layer)

    target = model.state_dict()
    report = ConversionReport(source, variant.name, name, differences=diffs, notes=notes)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for e in plan.entries:
        ref = target.get(e.target)
        if ref is None:  # cannot happen for a non-SEMM SpikingVisionTransformer
            continue
        absent = [k for k in e.sources if k not in state]
        if absent or not e.sources:
            if e.fill is None:
                continue  # reported as missing below
            out[e.target] = e.fill(ref.shape).to(ref.dtype)
            report.zero_filled.append(e.target)
            continue
        tensors = [state[k] for k in e.sources]
        value = e.make(tensors)
        if value.shape != ref.shape:
            raise _shape_error(e, tensors, value, ref.shape, hint)
        out[e.target] = value.detach().to(device=ref.device, dtype=ref.dtype).clone()
        used.update(e.sources)
        report.mapped.append(KeyMapping(e.target, e.sources))
    report.missing = [k for k in target if k not in out]
    unexplained = []
    for k in state:
        if k not in used:
            why, expected = _unused_reason(k, name, depth)
            report.unused[k] = why
            if not expected:
                unexplained.append(k)
    problems = list(report.differences)
    if report.missing:
        problems.append(f"{len(report.missing)} target keys have no source: "
                        f"{', '.join(report.missing[:6])}{' ...' if len(report.missing) > 6 else ''}")
    if unexplained:
        problems.append(f"{len(unexplained)} source keys have no counterpart: "
                        f"{', '.join(unexplained[:6])}{' ...' if len(unexplained) > 6 else ''}")
    if problems and not allow_mismatch:
        raise ConversionError(
            f"{source} weights ({variant.name}) do not describe the same network as {name}:\n  - "
            + "\n  - ".join(problems)
            + "\nFix the model's overrides where one is named; or pass allow_mismatch=True "
              "(`spikemoe convert --allow-mismatch`) to use the weights as an initialisation.")
    return {k: out.get(k, v) for k, v in target.items()}, report
