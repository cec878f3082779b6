"""Trained models out, as ONNX: any registered model's logits, checked against onnxruntime.

    graph(frames [T, B, C, H, W] float32) -> logits [B, K]      vision models (event frames)
    graph(tokens [B, N] int64)            -> logits [B, N, V]   language models (byte ids)

What is exported is the model in evaluation mode, returning ``ModelOutput.logits`` only (the
auxiliary loss and the metrics are training-time values). Spiking models have their time loop
unrolled: every LIF runs SpikingJelly's pure-torch reference (``backend="torch"``, a Python loop
over T whose fire step is a Heaviside ``x >= 0``; surrogate gradients do not exist at
inference), so the graph holds T copies of each neuron's charge/fire/reset arithmetic.

Exporters, in order: PyTorch's ``torch.export``-based exporter (``dynamo=True``, needs
``onnxscript``), which refuses data-dependent shapes instead of freezing them; then the
TorchScript tracer (``dynamo=False``). Either way the graph is run by onnxruntime on the export
input and on a second, independent input and compared with the PyTorch forward: a graph that
froze a data-dependent decision (a routing traced for one input) fails the second comparison
and is refused, never written.

The batch size B is fixed in the graph (``batch``: the model's measurement batch when it
declares one, e.g. V-MoE's routing group, else 1): routing with capacity couples the samples of
a batch, so a graph for another B is another export.

V-MoE's expert MLPs (``moe.vmoe_layer.VMoEMLP``) dispatch tokens into per-expert bins whose
sizes depend on the routing (``bincount().tolist()``): no static graph holds that. For export
they run in a static form written here: every expert on every token, the outputs gathered at
each token's chosen experts and weighted by the router's combine weights times its capacity
mask (``kept``), the dense equivalent of ``moe.dispatch.dispatch_combine`` (same logits; E times
the expert multiply-adds in the graph).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..contract import AUX_LOSS, model_facts
from ..files import write_bytes_atomic
from ..models import create_model
from ..moe.vmoe_layer import VMoEMLP
from ..neurons import FusedLIF, SpikingLIF

__all__ = ["EXPORT_EXTRA", "ExportDependencyError", "LogitsOnly", "OnnxExport",
           "example_input", "export_onnx", "load_export_model", "onnx_refusal",
           "require_export_dependencies"]

EXPORT_EXTRA = "export"
INSTALL_HINT = ("pip install 'spikemoe[export]' (from a source tree: pip install -e '.[export]')")

# module -> the distribution that provides it (for the error message)
_PROVIDERS = {"onnx": "onnx", "onnxruntime": "onnxruntime", "onnxscript": "onnxscript",
              "nir": "nir", "nirtorch": "nirtorch"}


class ExportDependencyError(ImportError):
    """An optional export dependency (onnx, onnxruntime, onnxscript, nir, nirtorch) is missing;
    the message names the extra to install."""


def require_export_dependencies(*modules: str) -> list:
    """Import ``modules`` (e.g. ``"onnx", "onnxruntime"``) and return them, in order.

    Raises:
        ExportDependencyError: one is not installed; the message names every missing package
            and the ``export`` extra that installs them.
    """
    found, missing = [], []
    for name in modules:
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            missing.append(_PROVIDERS.get(name, name))
    if missing:
        raise ExportDependencyError(
            f"exporting needs the optional package(s) {', '.join(missing)}, which are not "
            f"installed. Install the '{EXPORT_EXTRA}' extra: {INSTALL_HINT}.")
    return found


class LogitsOnly(nn.Module):
    """``model(x).logits``: the part of ``ModelOutput`` an inference graph returns."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out.logits if hasattr(out, "logits") else out


def _force_torch_neurons(model: nn.Module) -> nn.Module:
    """Every LIF of ``model`` runs SpikingJelly's pure-torch reference (traceable)."""
    for m in model.modules():
        if isinstance(m, FusedLIF):
            raise ValueError(
                f"{type(model).__name__} was built with backend='cupy' (spikemoe's fused CUDA "
                "kernels), which no exporter can trace, and its factory takes no backend "
                "override. Rebuild it with backend='torch' (or 'auto') and load the weights.")
        if isinstance(m, SpikingLIF):
            m.backend = "torch"
        for flag in ("fused_gate",):  # EMSA / EMSP fuse their gates only with cupy
            if getattr(m, flag, False):
                raise ValueError(f"{type(m).__name__} fuses its gate with the cupy kernels; "
                                 "rebuild the model with backend='torch' to export it.")
    return model


def _create_with_torch_backend(build, overrides: dict) -> nn.Module:
    """``build(**{"backend": "torch", **overrides})``, or ``build(**overrides)`` when the model
    has no ``backend`` hyperparameter (ANN models)."""
    if "backend" in overrides:
        return build(**overrides)
    try:
        return build(backend="torch", **overrides)
    except ValueError as e:
        if "backend" not in str(e):
            raise
        return build(**overrides)


def load_export_model(source: str | Path | None = None, model_name: str | None = None,
                      overrides: dict | None = None) -> tuple[nn.Module, str]:
    """The model to export, in eval mode, on the CPU, every LIF on the torch backend.

    Args:
        source: a run directory or a ``.pt`` checkpoint (``evaluate.load_run_model``).
        model_name: a registered model at initialisation (when there is no run).
        overrides: model keywords (``--set``), e.g. ``{"T": 4}``.
    Returns:
        ``(model, label)``; the label names the source (for reports).
    Raises:
        ValueError: neither or both of ``source`` and ``model_name``; what the loaders raise.
    """
    if (source is None) == (model_name is None):
        raise ValueError("give a run directory or checkpoint, or --model NAME (a registered "
                         "model at initialisation), not both and not neither.")
    overrides = dict(overrides or {})
    if source is not None:
        from .evaluate import load_run_model

        def build(**kw):
            return load_run_model(source, model_overrides=kw)

        path, _, cfg, model = _create_with_torch_backend(build, overrides)
        label = f"{cfg.model.name} from {path}"
    else:
        model = _create_with_torch_backend(lambda **kw: create_model(model_name, **kw), overrides)
        label = f"{model_name} (initialisation)"
    return _force_torch_neurons(model).eval().cpu(), label


def onnx_refusal(model: nn.Module) -> str | None:
    """Why ``model`` cannot be exported to ONNX at all, or None."""
    facts = model_facts(model)
    if facts.input_shape is None:
        return (f"{type(model).__name__} declares no input_shape (its input is not one tensor, "
                "e.g. a dict of views): an ONNX graph needs named tensor inputs of known shape")
    return None


def example_input(model: nn.Module, batch: int, seed: int = 0) -> torch.Tensor:
    """A reproducible input of the model's declared shape with batch ``batch``.

    Returns:
        ``[T, B, C, H, W]`` binary event frames (Bernoulli 0.3) for an ``input_shape`` of
        ``(T, C, H, W)``; ``[B, N]`` int64 ids below ``num_classes`` for ``(N,)``.
    """
    facts = model_facts(model)
    shape = facts.input_shape
    g = torch.Generator().manual_seed(seed)
    if shape is None:
        raise ValueError(onnx_refusal(model))
    if len(shape) == 1:
        return torch.randint(0, facts.num_classes or 256, (batch, *shape), generator=g)
    if len(shape) == 4:
        t, *chw = shape
        return (torch.rand(t, batch, *chw, generator=g) < 0.3).float()  # [T, B, C, H, W]
    raise ValueError(f"{type(model).__name__} declares input_shape {shape}; export takes "
                     "(T, C, H, W) frames or (N,) token ids.")


def _dense_vmoe_forward(layer: VMoEMLP):
    """A static-shape forward for ``layer`` (module docstring): same routing, dense experts."""

    def forward(x: torch.Tensor):
        b, n, d = x.shape
        g = layer.group_images
        full = (b // g) * g
        chunks = [x[:full].reshape(-1, g * n, d)] if full else []  # [G, S, D]
        if full < b:
            chunks.append(x[full:].reshape(1, (b - full) * n, d))
        routes = [layer.router(c) for c in chunks]
        k = layer.router.k
        index = torch.cat([r.expert_index.reshape(-1, k) for r in routes])  # [S, k]
        weight = torch.cat([(r.combine * r.kept).reshape(-1, k) for r in routes])  # [S, k]
        flat = x.reshape(b * n, d)  # [B, N, D] -> [S, D]
        outs = torch.stack([expert(flat) for expert in layer.experts])  # [E, S, D_out]
        s, d_out = outs.shape[1], outs.shape[2]
        pick = index.t().unsqueeze(-1).expand(k, s, d_out)  # [k, S, D_out]
        chosen = outs.gather(0, pick)  # [k, S, D_out]: each token's j-th expert output
        y = (chosen * weight.t().unsqueeze(-1).to(chosen.dtype)).sum(0)  # [S, D_out]
        shares = [c.shape[0] * c.shape[1] / (b * n) for c in chunks]
        aux = sum(w * r.aux_loss for w, r in zip(shares, routes))
        return y.reshape(b, n, -1), {AUX_LOSS: aux}

    return forward


@contextlib.contextmanager
def _static_forms(model: nn.Module):
    """Within the context, layers whose forward has data-dependent shapes run a static form
    (module docstring); yields the notes describing what was replaced."""
    notes, patched = [], []
    for name, m in model.named_modules():
        if isinstance(m, VMoEMLP):
            m.forward = _dense_vmoe_forward(m)
            patched.append(m)
            notes.append(f"{name}: V-MoE dispatch exported densely (every expert on every "
                         "token, combine x kept weights select)")
    try:
        yield notes
    finally:
        for m in patched:
            del m.forward  # back to the class's forward


@dataclass
class OnnxExport:
    """What ``export_onnx`` wrote and how well onnxruntime reproduces the model.

    Attributes:
        path: the ``.onnx`` file.  size_bytes: its size.
        exporter: ``"dynamo"`` or ``"torchscript"``.  opset: the graph's ONNX opset.
        input_name / input_shape / input_dtype: the graph's single input (batch fixed).
        output_shape: the logits' shape.
        max_abs_diff: max |logits_onnxruntime - logits_torch| over the checked inputs.
        checked_inputs: how many inputs were compared (the export input and a fresh one).
        notes: layers exported in a static form, and exporters that failed first.
        seconds: wall time of export + check.
    """

    path: Path
    size_bytes: int
    exporter: str
    opset: int
    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shape: tuple[int, ...]
    max_abs_diff: float
    checked_inputs: int
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        mib = self.size_bytes / 2**20
        return (f"{self.path} ({mib:.2f} MiB, {self.exporter} exporter, opset {self.opset}): "
                f"input {self.input_name} {list(self.input_shape)} {self.input_dtype} -> logits "
                f"{list(self.output_shape)}; onnxruntime vs torch on {self.checked_inputs} "
                f"inputs: max |diff| = {self.max_abs_diff:.3g}")


def _export_bytes(wrapper: nn.Module, x: torch.Tensor, exporter: str, opset: int | None,
                  input_name: str) -> bytes:
    """The serialised ONNX model of ``wrapper`` traced on ``x`` with ``exporter``.

    Raises:
        ValueError: the TorchScript tracer saw a tensor turned into a Python list (a
            data-dependent decision, e.g. the modules a router picked, frozen into the trace).
    """
    kw = dict(input_names=[input_name], output_names=["logits"])
    if opset is not None:
        kw["opset_version"] = opset
    with torch.no_grad(), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # tracer warnings are read below, not shown
        if exporter == "dynamo":
            program = torch.onnx.export(wrapper, (x,), dynamo=True, verbose=False, **kw)
            return program.model_proto.SerializeToString()
        buf = io.BytesIO()
        torch.onnx.export(wrapper, (x,), buf, dynamo=False, **kw)
    frozen = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in seen
                     if type(w.message).__name__ == "TracerWarning"
                     and "to a Python list" in str(w.message)})
    if frozen:
        raise ValueError(f"the forward turns a tensor into a Python list at {', '.join(frozen)}: "
                         "a data-dependent choice that a trace would freeze for one input")
    return buf.getvalue()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(e: BaseException) -> str:
    """One line saying why an exporter failed (torch.export's summary and the call site)."""
    text = _ANSI.sub("", str(e))
    if "Exception summary" in text:
        summary = text.split("Exception summary", 1)[1]
        head = " ".join(summary.split("Caused by")[0].split("For more information")[0].split())
        site = ""
        if "The following call raised this error:" in text:
            call = text.split("The following call raised this error:", 1)[1].strip().splitlines()
            site = " at " + " ".join(line.strip() for line in call[:2])
        return f"{head[:300]}{site[:300]}"
    return f"{type(e).__name__}: {' '.join(text.split())[:300]}"


def export_onnx(model: nn.Module, out: str | Path, *, batch: int | None = None,
                exporter: str = "auto", opset: int | None = None, atol: float = 1e-4,
                seed: int = 0) -> OnnxExport:
    """Export ``model`` (eval mode, torch-backend neurons: ``load_export_model``) to ``out``.

    Args:
        model: a spikemoe model (declaring ``input_shape``).
        out: the ``.onnx`` file to write (atomically; nothing is written when the check fails).
        batch: B fixed in the graph; default the model's measurement batch, else 1.
        exporter: ``"auto"`` (dynamo, then TorchScript), ``"dynamo"`` or ``"torchscript"``.
        opset: ONNX opset (default: the exporter's).
        atol: the largest max-abs logit difference accepted.
        seed: of the example inputs.
    Returns:
        ``OnnxExport`` (sizes, exporter, shapes, the measured difference).
    Raises:
        ExportDependencyError: onnx / onnxruntime missing.
        ValueError: the model cannot be exported (``onnx_refusal``), every exporter failed
            (each one's reason is in the message), or onnxruntime's logits differ by more
            than ``atol``.
    """
    onnx, ort = require_export_dependencies("onnx", "onnxruntime")
    reason = onnx_refusal(model)
    if reason:
        raise ValueError(f"cannot export to ONNX: {reason}.")
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"exporter must be auto, dynamo or torchscript, got {exporter!r}.")
    start = time.perf_counter()
    facts = model_facts(model)
    batch = int(batch or facts.measurement_batch or 1)
    model.eval()
    wrapper = LogitsOnly(model).eval()  # eval on the wrapper: the exporter restores its mode
    x = example_input(model, batch, seed)
    x2 = example_input(model, batch, seed + 1)
    input_name = "frames" if x.ndim == 5 else "tokens"
    order = {"auto": ["dynamo", "torchscript"], "dynamo": ["dynamo"],
             "torchscript": ["torchscript"]}[exporter]
    if "dynamo" in order and importlib.util.find_spec("onnxscript") is None:
        if exporter == "dynamo":
            require_export_dependencies("onnxscript")
        order.remove("dynamo")
    failures: list[str] = []
    with _static_forms(model) as notes, torch.no_grad():
        refs = [wrapper(x).numpy(), wrapper(x2).numpy()]
        for name in order:
            try:
                blob = _export_bytes(wrapper, x, name, opset, input_name)
            except Exception as e:  # noqa: BLE001 - each exporter's failure is reported
                failures.append(f"{name} exporter: {_reason(e)}")
                continue
            sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
            try:
                got = [sess.run(None, {input_name: v.numpy()})[0] for v in (x, x2)]
            except Exception as e:  # noqa: BLE001
                failures.append(f"{name} exporter: onnxruntime cannot run the graph on a second "
                                f"input ({_reason(e)}): a data-dependent shape was frozen")
                continue
            diff = max(float(np.abs(g - r).max()) for g, r in zip(got, refs))
            if not diff <= atol:
                failures.append(f"{name} exporter: onnxruntime's logits differ from torch's by "
                                f"{diff:.3g} > atol {atol:g} (a data-dependent decision traced "
                                "for one input, or an operator that computes differently)")
                continue
            proto = onnx.load_from_string(blob)
            opset_used = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                             default=0)
            path = write_bytes_atomic(out, blob)
            return OnnxExport(
                path=Path(path), size_bytes=len(blob), exporter=name, opset=opset_used,
                input_name=input_name, input_shape=tuple(x.shape),
                input_dtype=str(x.dtype).removeprefix("torch."),
                output_shape=tuple(refs[0].shape), max_abs_diff=diff, checked_inputs=2,
                notes=list(notes) + failures, seconds=time.perf_counter() - start)
    raise ValueError(f"cannot export {type(model).__name__} to ONNX: "
                     + "; ".join(failures or ["no exporter available"])
                     + ". Models whose forward has data-dependent shapes (token selection, "
                     "routing with per-expert bins) need a static form of those layers.")
