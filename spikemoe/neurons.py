"""Multi-step LIF neurons: the one place that builds SpikingJelly neurons and picks a backend.

The leaky integrate-and-fire neuron of Spikformer and Spike-driven Transformer, with
input decay, hard reset and a sigmoid surrogate gradient (SpikingJelly 2.0 ``LIFNode``):

    H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau          (charge)
    S[t] = Heaviside(H[t] - V_th)                                (fire; dS/dH = alpha s(1-s))
    V[t] = H[t] (1 - S[t]) + V_reset S[t]                        (hard reset; S detached)

Defaults follow the papers (``shared/reference/papers.md`` 2.1): tau 2.0, V_th 1.0,
V_reset 0, ``detach_reset=True``, ``Sigmoid(alpha=4)``; the attention LIF uses V_th 0.5.

Backends (``backend=``):
    auto    SpikingJelly's own dispatch by tensor device: its CPU kernel on CPU; on CUDA
            the native extension if built, else Triton, else torch.
    torch   SpikingJelly's pure-torch reference (``spikingjelly._ops.lif.reference``), on any
            device: the ground truth the others are checked against.
    triton  SpikingJelly's Triton kernel; needs a CUDA tensor and the ``triton`` package.
    cupy    this project's own CuPy kernel. Not part of this release: it lands in its own
            issue, verified on a GPU. Asking for it raises ``BackendUnavailableError``.

SpikingJelly 2.0 has no per-neuron ``backend=`` argument (its CUDA choice is the
process-wide ``SJ_LIF_CUDA_IMPLEMENTATION`` variable), so ``triton`` here checks what
SpikingJelly selected on the first CUDA call and raises if it is something else.
"""
from __future__ import annotations

import importlib.util
import os

import torch
from spikingjelly.activation_based import neuron, surrogate

__all__ = ["BACKENDS", "BackendUnavailableError", "make_lif", "SpikingLIF"]

BACKENDS = ("auto", "torch", "triton", "cupy")


class BackendUnavailableError(RuntimeError):
    """A LIF backend was asked for that cannot run on this machine or in this release."""


def _check_backend_available(backend: str) -> None:
    """Raise ``BackendUnavailableError`` naming what is missing and what to do."""
    if backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of {BACKENDS}, got {backend!r}. "
            "Use 'auto' to let the tensor's device decide (Triton on CUDA, torch on CPU)."
        )
    if backend == "triton":
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                "backend='triton' needs an NVIDIA GPU, but torch.cuda.is_available() is False "
                "on this machine. Use backend='auto' (torch kernels on CPU) or run on a GPU."
            )
        if importlib.util.find_spec("triton") is None:
            raise BackendUnavailableError(
                "backend='triton' needs the 'triton' package, which is not installed. "
                "Install the CUDA build of torch (it ships triton) or use backend='auto'."
            )
    if backend == "cupy":
        hint = (
            "" if importlib.util.find_spec("cupy") is not None
            else " (CuPy itself is not installed either: pip install 'spikemoe[cuda]')"
        )
        raise BackendUnavailableError(
            "backend='cupy' is spikemoe's own CuPy LIF kernel, which is not installed in this "
            f"release: it lands with its own issue, once a GPU can verify it{hint}. "
            "Use backend='auto' (SpikingJelly's Triton kernel on CUDA, torch on CPU)."
        )


class SpikingLIF(neuron.LIFNode):
    """SpikingJelly 2.0 multi-step ``LIFNode`` with an explicit backend.

    Input and output are time-major ``[T, ...]``; the output is binary {0, 1} in the
    input's dtype. State (the membrane ``v``) is reset by ``spikingjelly``'s
    ``functional.reset_net`` or ``self.reset()``.
    """

    def __init__(self, *, backend: str = "auto", **kwargs) -> None:
        super().__init__(step_mode="m", **kwargs)
        self.backend = backend
        self._cuda_checked = False

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend}"

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        if self.backend == "torch":
            from spikingjelly._ops.lif.reference import multi_step

            spikes, v, _ = multi_step(
                inputs[0], states[0], self.tau, self.decay_input, self.v_threshold,
                self.v_reset, self.surrogate_function, self.detach_reset, False,
            )
            return (spikes,), (v,)
        return super().multi_step_functional_forward(inputs, states, **kwargs)

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):
        if self.backend == "triton":
            self._check_triton_selected(x_seq.device)
        if self.backend == "torch":
            # LIFNode's fast path calls SpikingJelly's dispatcher directly; the base
            # implementation goes through multi_step_functional_forward above.
            return neuron.BaseNode.multi_step_forward(self, x_seq, *args, **kwargs)
        return super().multi_step_forward(x_seq, *args, **kwargs)

    def _check_triton_selected(self, device: torch.device) -> None:
        if device.type != "cuda":
            raise BackendUnavailableError(
                f"backend='triton' runs on CUDA tensors only, got a tensor on {device}. "
                "Move the model and data to a GPU, or build it with backend='auto'."
            )
        if self._cuda_checked:
            return
        from spikingjelly._ops.lif import _selection

        chosen = _selection.diagnostics(device)["implementation"]
        if chosen != "triton":
            raise BackendUnavailableError(
                f"backend='triton' asked for, but SpikingJelly selected its {chosen!r} LIF kernel "
                f"(SJ_LIF_CUDA_IMPLEMENTATION={os.environ.get('SJ_LIF_CUDA_IMPLEMENTATION', 'auto')}). "
                "Set SJ_LIF_CUDA_IMPLEMENTATION=triton before Python starts, or use backend='auto'."
            )
        self._cuda_checked = True


def make_lif(
    tau: float = 2.0,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    detach_reset: bool = True,
    surrogate_alpha: float = 4.0,
    backend: str = "auto",
) -> SpikingLIF:
    """Build one multi-step LIF neuron (a fresh surrogate object per neuron).

    Args:
        tau: membrane time constant (> 1; YAML ints such as ``2`` are accepted).
        v_threshold: firing threshold V_th (1.0; 0.5 for the attention neuron).
        v_reset: hard-reset potential; ``None`` is a soft reset (subtract V_th).
        detach_reset: stop the gradient through the reset path (the papers' setting).
        surrogate_alpha: steepness of the sigmoid surrogate.
        backend: ``auto`` | ``torch`` | ``triton`` | ``cupy`` (see the module docstring).

    Returns:
        A ``SpikingLIF`` taking and returning ``[T, ...]`` tensors.

    Raises:
        ValueError: a parameter out of range.
        BackendUnavailableError: the backend cannot run here; the message says what to do.
    """
    try:
        tau = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"tau must be a number > 1, got {tau!r}") from None
    if not tau > 1.0:
        raise ValueError(
            f"tau must be > 1 (the LIF decay factor is 1/tau), got {tau}. "
            "The papers use tau = 2.0."
        )
    if not float(v_threshold) > (0.0 if v_reset is None else float(v_reset)):
        raise ValueError(f"v_threshold ({v_threshold}) must lie above v_reset ({v_reset}).")
    _check_backend_available(backend)
    return SpikingLIF(
        tau=tau,
        v_threshold=float(v_threshold),
        v_reset=None if v_reset is None else float(v_reset),
        surrogate_function=surrogate.Sigmoid(alpha=float(surrogate_alpha)),
        detach_reset=bool(detach_reset),
        backend=backend,
    )
