"""Converting an official state dict onto a ``SpikingVisionTransformer``
(``convert_state_dict``): the key map applied, shapes checked, architecture differences and
unused keys reported."""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from .checkpoint_file import unwrap_state_dict
from .key_maps import NEVER_USED, Entry, KeyPlan, plan_official, plan_spikingjelly
from .report import ConversionError, ConversionReport, KeyMapping, ShapeMismatchError
from .variants import SOURCES, Variant, infer_hyperparameters, variant_of

__all__ = ["convert_state_dict"]


def _model_checks(source: str, v: Variant, model: nn.Module, state: Mapping[str, torch.Tensor],
                  hp: dict) -> tuple[list[str], list[str]]:
    """Differences that change the output, and notes the user must check."""
    from ...moe.emsa import EMSA
    from ...moe.emsp import EMSP
    from ..spiking_vit import SpikingVisionTransformer

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
    for pattern, why in NEVER_USED:
        if re.search(pattern, key):
            return why, True
    m = re.match(r"blocks?\.(\d+)\.", key)
    if m and int(m.group(1)) >= depth:
        return f"block {m.group(1)} is beyond {model_name}'s {depth} blocks", False
    return f"no counterpart in {model_name}", False


def _shape_error(e: Entry, tensors: list[torch.Tensor], value: torch.Tensor,
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
    state = unwrap_state_dict(state_dict, f"{source} weights")
    variant = variant_of(source, state)
    hp = infer_hyperparameters(source, state)
    name = getattr(model, "name", type(model).__name__)
    sizes = ", ".join(f"{k}={v}" for k, v in hp.items())
    hint = (f"build it with create_model({name!r}, {sizes}) (on the command line: spikemoe "
            f"convert ... --set {sizes.replace(', ', ' ')}).")
    diffs, notes = _model_checks(source, variant, model, state, hp)
    depth = len(model.blocks)
    plan = KeyPlan(state)
    if source == "spikingjelly":
        plan_spikingjelly(plan, min(depth, hp.get("depth", 0)))
    else:
        plan_official(plan, min(depth, hp.get("depth", 0)), variant.layer)

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
