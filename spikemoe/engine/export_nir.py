"""Trained spiking models out, as NIR (Neuromorphic Intermediate Representation, neuroir.org),
with a per-layer table of what NIR can and cannot express.

NIR graphs are made of per-time-step nodes with fixed weights (Affine, Linear, Conv, pooling
by sum or average, Threshold, Scale) and neurons (LIF, IF, CubaLIF); edges into a node are
summed. What a spiking transformer does beyond that has no NIR node, so a neuromorphic chip
would have to do it outside the graph:

* SSA's ``Q K^T V`` (Spikformer) and SDSA's ``Q (.) LIF(SUM_n K (.) V)`` (Spike-driven): products
  of two activations. NIR nodes only multiply an activation by fixed weights.
* SEMM's gates: EMSA's router mask ``R (.) O`` and EMSP's ``G (.) Z2`` multiply (AND) two spike
  tensors computed from the input; EMSP's router is also a depth-wise (grouped) convolution,
  which SpikingJelly's NIR exchange refuses.
* A max-pool of membrane potentials (the Spike-driven stem's last stage): NIR has no max-pool.
  A max-pool of binary spikes is exactly a sum-pool then a threshold at 0.5 (an OR), which NIR
  expresses (``SumPool2d`` then ``Threshold``); zero padding equals max-pool's -inf padding on
  non-negative spikes.

What is written: the spiking patch-splitting stem (conv + BatchNorm folded into the conv, exact
in evaluation; LIF; the spike max-pools as above; Spikformer's residual ``S + LIF(BN(Conv(S)))``
as two edges into the output), as far as it is expressible, exported by SpikingJelly 2.0's NIR
exchange (``spikingjelly.activation_based.nir_exchange``: its module mapper, extended with the
spike max-pool) into ``FILE.nir``. The stem's transformer blocks and head are listed, layer by
layer, in ``FILE.json`` with ``exported`` / ``expressible`` (NIR has the nodes, but the layer is
fed by a refused one) / ``refused`` and the reason. The rebuilt stem is run against the model's
own stem on one input and the number of differing outputs reported: the file is the model's
stem, not a look-alike.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from ..files import write_text_atomic
from ..layers.attention import HeadwiseSpikingAttention
from ..layers.mlp import SpikingMLP
from ..layers.patch_split import SpikingPatchSplit
from ..moe.emsa import EMSA
from ..moe.emsp import EMSP
from ..neurons import SpikingLIF
from .export_onnx import example_input, require_export_dependencies

__all__ = ["LayerVerdict", "NirExport", "SpikeMaxPool", "export_nir", "nir_table"]

EXPORTED, EXPRESSIBLE, REFUSED = "exported", "expressible", "refused"

WHY_SSA = ("Q K^T V is a product of two activations (spike matrices); NIR nodes multiply an "
           "activation by fixed weights only")
WHY_SDSA = ("K (.) V and Q (.) LIF(SUM_n K (.) V) are element-wise products of two spike tensors; "
            "NIR has no activation-by-activation product")
WHY_EMSA_GATE = ("the router mask R (.) O multiplies (ANDs) the experts' spikes with the router's "
                 "spikes, both computed from the input: an activation-by-activation product")
WHY_EMSP_GATE = ("G (.) Z2 multiplies (ANDs) the gate's spikes with the experts' spikes: an "
                 "activation-by-activation product; the gate's depth-wise (grouped) conv is also "
                 "refused by SpikingJelly's NIR exchange")
WHY_MEMBRANE_POOL = ("max-pool of membrane potentials: NIR has sum and average pooling only (a "
                     "max of binary spikes is expressible, a max of real values is not)")
WHY_FED = "NIR has the nodes, but its input comes through a refused layer"
WHY_HEAD = ("mean over tokens and over the T steps, then the classifier: a readout across time "
            "that the host computes from the graph's outputs")


@dataclass
class LayerVerdict:
    """One row of the NIR table: a layer of the model, and whether NIR expresses it."""

    layer: str      # the model's module path, e.g. "blocks.0.attn"
    op: str         # what it computes, e.g. "SSA: LIF_0.5(Q K^T V s)"
    status: str     # exported | expressible | refused
    reason: str = ""


@dataclass
class NirExport:
    """What ``export_nir`` wrote (``path``: the ``.nir`` graph; ``report``: the ``.json`` table)."""

    path: Path
    report: Path
    size_bytes: int
    nodes: dict[str, str]          # NIR node name -> node type
    table: list[LayerVerdict]
    stem_check: dict[str, float] = field(default_factory=dict)

    def format_table(self) -> str:
        rows = [f"{'layer':34} {'status':11} what / why"]
        for v in self.table:
            why = f"{v.op}" + (f" -- {v.reason}" if v.reason else "")
            rows.append(f"{v.layer:34} {v.status:11} {why}")
        return "\n".join(rows)


class SpikeMaxPool(nn.Module):
    """Max-pool of binary spikes ``[T, B, C, H, W]``; NIR: ``SumPool2d`` then ``Threshold(0.5)``."""

    def __init__(self, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = x.shape[:2]
        y = nn.functional.max_pool2d(x.flatten(0, 1), self.kernel_size, self.stride, self.padding)
        return y.reshape(t, b, *y.shape[1:])  # [T*B, C, H', W'] -> [T, B, C, H', W']


def _fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> layer.Conv2d:
    """A multi-step SpikingJelly conv computing ``bn(conv(x))`` in evaluation mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # [C_out]
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    out = layer.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                       conv.padding, conv.dilation, conv.groups, bias=True, step_mode="m")
    with torch.no_grad():
        out.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        out.bias.copy_(bias)
    return out


def _plain_lif(lif: SpikingLIF) -> neuron.LIFNode:
    """SpikingJelly's own multi-step ``LIFNode`` with ``lif``'s constants (the class the NIR
    exchange maps)."""
    return neuron.LIFNode(tau=lif.tau, decay_input=lif.decay_input, v_threshold=lif.v_threshold,
                          v_reset=lif.v_reset, detach_reset=lif.detach_reset, step_mode="m")


class _NirStem(nn.Module):
    """The expressible part of a ``SpikingPatchSplit``, rebuilt from NIR-mappable modules."""

    def __init__(self, body: list[nn.Module], rpe: list[nn.Module] | None) -> None:
        super().__init__()
        self.body = nn.Sequential(*body)
        self.rpe = None if rpe is None else nn.Sequential(*rpe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.body(x)
        if self.rpe is None:
            return s
        return s + self.rpe(s)  # two edges into the output: NIR sums them


def _stem_plan(stem: SpikingPatchSplit, prefix: str) -> tuple[_NirStem, list[LayerVerdict]]:
    """The exportable stem and the verdict on each of its layers (module docstring)."""
    body, rows, blocked = [], [], False
    pool = stem.pool[0]
    for i, stage in enumerate(stem.stages):
        conv, bn = stage[0], stage[1]
        if blocked:
            rows.append(LayerVerdict(f"{prefix}.stages.{i}", "conv 3x3 + BN", EXPRESSIBLE,
                                     WHY_FED))
        else:
            body.append(_fold_conv_bn(conv, bn))
            rows.append(LayerVerdict(f"{prefix}.stages.{i}", "conv 3x3 + BN (folded)", EXPORTED))
        if len(stage) > 2:  # MS-SPS: the last stage pools the membrane before the residual
            rows.append(LayerVerdict(f"{prefix}.stages.{i}.pool", "max-pool of membrane", REFUSED,
                                     WHY_MEMBRANE_POOL))
            blocked = True
        if i < len(stem.lifs):
            if blocked:
                rows.append(LayerVerdict(f"{prefix}.lifs.{i}", "LIF", EXPRESSIBLE, WHY_FED))
            else:
                body.append(_plain_lif(stem.lifs[i]))
                rows.append(LayerVerdict(f"{prefix}.lifs.{i}", "LIF", EXPORTED))
        if stem.pools[i] and not (stem.membrane_shortcut and i == 3):
            if blocked:
                rows.append(LayerVerdict(f"{prefix}.pool.{i}", "max-pool of spikes", EXPRESSIBLE,
                                         WHY_FED))
            else:
                body.append(SpikeMaxPool(pool.kernel_size, pool.stride, pool.padding))
                rows.append(LayerVerdict(f"{prefix}.pool.{i}", "max-pool of spikes",
                                         EXPORTED, "as SumPool2d + Threshold(0.5)"))
    rpe = None
    if stem.membrane_shortcut:
        rows.append(LayerVerdict(f"{prefix}.rpe", "U + BN(Conv(LIF(U)))", EXPRESSIBLE,
                                 WHY_FED))
    else:
        rpe = [_fold_conv_bn(stem.rpe[0], stem.rpe[1]), _plain_lif(stem.rpe_lif)]
        rows.append(LayerVerdict(f"{prefix}.rpe", "S + LIF(BN(Conv(S)))", EXPORTED,
                                 "the sum as two edges into the output"))
    return _NirStem(body, rpe), rows


def _attention_rows(name: str, m: HeadwiseSpikingAttention) -> list[LayerVerdict]:
    rows = [LayerVerdict(f"{name}.qkv", "token Linear + BN + LIF", EXPRESSIBLE, WHY_FED)]
    if m.kernel == "ssa":
        rows.append(LayerVerdict(f"{name}.kernel", "SSA: LIF_0.5(Q K^T V s)", REFUSED, WHY_SSA))
    else:
        rows.append(LayerVerdict(f"{name}.kernel", "SDSA: Q (.) LIF_0.5(SUM_n K (.) V)", REFUSED,
                                 WHY_SDSA))
    if isinstance(m, EMSA):
        rows.append(LayerVerdict(f"{name}.router", "router Linear + BN + LIF", EXPRESSIBLE,
                                 WHY_FED))
        rows.append(LayerVerdict(f"{name}.gate", "EMSA spike mask R (.) O", REFUSED,
                                 WHY_EMSA_GATE))
    rows.append(LayerVerdict(f"{name}.proj", "token Linear + BN (+ LIF)", EXPRESSIBLE, WHY_FED))
    return rows


def _mlp_rows(name: str, m: nn.Module) -> list[LayerVerdict]:
    if isinstance(m, EMSP):
        return [LayerVerdict(f"{name}.fc1", "token Linear + BN + LIF", EXPRESSIBLE, WHY_FED),
                LayerVerdict(f"{name}.gate", "EMSP gate: LIF(BN(DWConv3x3(Z1))) (.) Z2", REFUSED,
                             WHY_EMSP_GATE),
                LayerVerdict(f"{name}.fc2", "token Linear + BN (+ LIF)", EXPRESSIBLE, WHY_FED)]
    return [LayerVerdict(f"{name}", "MLP: token Linear + BN + LIF, twice", EXPRESSIBLE, WHY_FED)]


def nir_table(model: nn.Module) -> tuple[_NirStem | None, list[LayerVerdict]]:
    """The exportable stem of ``model`` (None without one) and the verdict on every layer.

    Layers are listed in forward order: the stem's, then each transformer branch's, then the
    head; a module of a kind this table does not know is refused with its type named.
    """
    stem_net, rows = None, []
    named = dict(model.named_children())
    for name, child in named.items():
        if isinstance(child, SpikingPatchSplit):
            stem_net, stem_rows = _stem_plan(child, name)
            rows += stem_rows
        elif isinstance(child, nn.ModuleList):
            for i, block in enumerate(child):
                attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
                if isinstance(attn, HeadwiseSpikingAttention):
                    rows += _attention_rows(f"{name}.{i}.attn", attn)
                    rows.append(LayerVerdict(f"{name}.{i}.residual", "X + Attn(X)", EXPRESSIBLE,
                                             WHY_FED))
                if isinstance(mlp, (SpikingMLP, EMSP)):
                    rows += _mlp_rows(f"{name}.{i}.mlp", mlp)
                if not isinstance(attn, HeadwiseSpikingAttention) and not isinstance(
                        mlp, (SpikingMLP, EMSP)):
                    rows.append(LayerVerdict(f"{name}.{i}", type(block).__name__, REFUSED,
                                             f"no NIR mapping is written for "
                                             f"{type(block).__name__}"))
        elif name in ("head", "head_lif"):
            rows.append(LayerVerdict(name, "mean over N and T, Linear" if name == "head"
                                     else "LIF on pooled tokens", REFUSED, WHY_HEAD))
        elif any(isinstance(m, SpikingLIF) for m in child.modules()) or any(
                p.numel() for p in child.parameters()):
            rows.append(LayerVerdict(name, type(child).__name__, REFUSED,
                                     f"no NIR mapping is written for {type(child).__name__}"))
    return stem_net, rows


def _mapper_class():
    """SpikingJelly's NIR module mapper, extended with ``SpikeMaxPool``."""
    import nir
    from spikingjelly.activation_based.nir_exchange.to_nir import _ModuleMapper

    class Mapper(_ModuleMapper):
        @property
        def map_dict(self) -> dict:
            return {**super().map_dict, SpikeMaxPool: self.map_spike_max_pool}

        def map_spike_max_pool(self, module: SpikeMaxPool) -> nir.NIRNode:
            c, h, w = self.module_io_shape[module][-3:]
            k, s, p = module.kernel_size, module.stride, module.padding
            out = (int(c), (int(h) + 2 * p - k) // s + 1, (int(w) + 2 * p - k) // s + 1)
            return nir.NIRGraph(
                nodes={"input": nir.Input(input_type=np.array([c, h, w])),
                       "sum": nir.SumPool2d(kernel_size=np.array([k, k]),
                                            stride=np.array([s, s]), padding=np.array([p, p])),
                       "fire": nir.Threshold(threshold=np.full(out, 0.5)),
                       "output": nir.Output(output_type=np.array(out))},
                edges=[("input", "sum"), ("sum", "fire"), ("fire", "output")])

    return Mapper


def export_nir(model: nn.Module, out: str | Path, *, dt: float = 1e-4, seed: int = 0
               ) -> NirExport:
    """Write the expressible part of ``model`` to ``out`` (``.nir``) and the table to
    ``out`` with suffix ``.json`` (module docstring).

    Args:
        model: a spiking model in eval mode (``export_onnx.load_export_model``).
        out: the ``.nir`` file.  dt: the time step in seconds (NIR time constants).
        seed: of the input the rebuilt stem is checked on.
    Returns:
        ``NirExport``: paths, size, the NIR nodes, the per-layer table, the stem check.
    Raises:
        ExportDependencyError: nir / nirtorch missing.
        ValueError: the model has no spiking neuron, or no stem NIR can express.
    """
    nir, nirtorch = require_export_dependencies("nir", "nirtorch")
    if not any(isinstance(m, SpikingLIF) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no spiking neuron: NIR describes spiking "
                         "networks; export it with --format onnx.")
    stem_net, table = nir_table(model)
    if stem_net is None or not len(stem_net.body):
        raise ValueError(f"{type(model).__name__}: no part of it is expressible in NIR.\n"
                         + "\n".join(f"{v.layer}: {v.status} {v.reason}" for v in table))
    stem_net.eval()
    x = example_input(model, 1, seed)
    if x.ndim != 5:
        raise ValueError(f"NIR export takes [T, B, C, H, W] frames; {type(model).__name__} "
                         f"takes {tuple(x.shape)}.")
    name = next(n for n, c in model.named_children() if isinstance(c, SpikingPatchSplit))
    stem = getattr(model, name)
    with torch.no_grad():
        functional.reset_net(model)
        functional.reset_net(stem_net)
        mine = stem_net(x)
        ref = stem(x)
        functional.reset_net(model)
        functional.reset_net(stem_net)
    check = {"outputs": float(mine.numel())}
    if ref.shape == mine.shape:
        check["differing"] = float((mine != ref).sum())
        check["max_abs_diff"] = float((mine - ref).abs().max())
    mapper = _mapper_class()(stem_net, x, dt=dt)
    graph = nirtorch.torch_to_nir(stem_net, mapper.map_dict, type_check=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.nir")
    try:
        nir.write(tmp, graph)  # h5py writes by path: written beside, then renamed
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    nodes = {k: type(v).__name__ for k, v in graph.nodes.items()}
    report = out.with_suffix(".json")
    write_text_atomic(report, json.dumps(
        {"model": type(model).__name__, "nir_file": out.name, "dt_seconds": dt,
         "input_shape": list(x.shape), "nodes": nodes, "stem_check": check,
         "layers": [asdict(v) for v in table]}, indent=1) + "\n")
    return NirExport(out, report, out.stat().st_size, nodes, table, check)
