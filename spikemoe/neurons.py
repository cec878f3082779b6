"""Multi-step LIF neurons: the one place that builds SpikingJelly neurons and picks a backend.

The leaky integrate-and-fire neuron of Spikformer and Spike-driven Transformer, with
input decay, hard reset and a sigmoid surrogate gradient (SpikingJelly 2.0 ``LIFNode``):

    H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau          (charge)
    S[t] = Heaviside(H[t] - V_th)                                (fire; dS/dH = alpha s(1-s))
    V[t] = H[t] (1 - S[t]) + V_reset S[t]                        (hard reset; S detached)

Defaults follow Spikformer (Zhou et al., ICLR 2023) and its code (ZK-Zhou/spikformer): tau 2.0,
V_th 1.0, V_reset 0, ``detach_reset=True``, ``Sigmoid(alpha=4)``; the attention LIF uses
V_th 0.5.

Backends (``backend=``):
    auto    SpikingJelly's own dispatch by tensor device: its CPU kernel on CPU; on CUDA
            the native extension if built, else Triton, else torch.
    torch   SpikingJelly's pure-torch reference (``spikingjelly._ops.lif.reference``), on any
            device: the ground truth the others are checked against.
    triton  SpikingJelly's Triton kernel; needs a CUDA tensor and the ``triton`` package.
    cupy    this project's own fused kernels (``spikemoe.kernels``, CUDA C compiled by CuPy),
            on CUDA tensors; needs CuPy (``pip install -e '.[cuda]'``) and a GPU. EMSA and
            EMSP then also fuse their gates (``Y = R (.) LIF(O)``, ``Y = LIF(G) (.) Z2``).
            On CPU tensors the same kernels run from their CPU build (g++).

SpikingJelly 2.0 has no per-neuron ``backend=`` argument (its CUDA choice is the
process-wide ``SJ_LIF_CUDA_IMPLEMENTATION`` variable), so ``triton`` here checks what
SpikingJelly selected on the first CUDA call and raises if it is something else.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import threading

import torch
from spikingjelly.activation_based import neuron, surrogate

from .kernels.errors import BackendUnavailableError

__all__ = ["BACKENDS", "BackendUnavailableError", "FusedLIF", "make_lif", "SpikingLIF",
           "backend_status", "full_saving", "saving_enabled"]

BACKENDS = ("auto", "torch", "triton", "cupy")

_saving = threading.local()


def saving_enabled() -> bool:
    """Whether spikemoe's memory savings are on (default): the compact LIF here and the byte
    storage of saved spikes in ``layers.saved``. One switch for both, read per call."""
    return getattr(_saving, "enabled", True)


@contextlib.contextmanager
def full_saving():
    """Within this context autograd saves what it saves without spikemoe's savings."""
    previous = saving_enabled()
    _saving.enabled = False
    try:
        yield
    finally:
        _saving.enabled = previous


def _unavailable(backend: str) -> tuple[str, str] | None:
    """``(why it cannot run here, what to do)``, or None when ``backend`` can run here."""
    if backend == "triton":
        if not torch.cuda.is_available():
            return ("it needs an NVIDIA GPU, and torch.cuda.is_available() is False on this machine",
                    "Use backend='auto' (torch kernels on CPU) or run on a GPU.")
        if importlib.util.find_spec("triton") is None:
            return ("the 'triton' package is not installed",
                    "Install the CUDA build of torch (it ships triton) or use backend='auto'.")
    if backend == "cupy":
        from .kernels.cupy_runtime import cupy_unavailable_reason

        reason = cupy_unavailable_reason()
        if reason is not None:
            return (reason, "Install the CUDA extra with `pip install -e '.[cuda]'` on a machine "
                            "with an NVIDIA GPU, or use backend='auto' (SpikingJelly's Triton "
                            "kernel on CUDA, torch on CPU).")
    return None


def _check_backend_available(backend: str) -> None:
    """Raise ``BackendUnavailableError`` naming what is missing and what to do."""
    if backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of {BACKENDS}, got {backend!r}. "
            "Use 'auto' to let the tensor's device decide (Triton on CUDA, torch on CPU)."
        )
    missing = _unavailable(backend)
    if missing is not None:
        what = {"triton": "SpikingJelly's Triton kernel",
                "cupy": "spikemoe's fused CUDA kernels"}[backend]
        raise BackendUnavailableError(
            f"backend={backend!r} ({what}) cannot run here: {missing[0]}. {missing[1]}")


def backend_status() -> dict[str, dict[str, object]]:
    """Every LIF backend: ``{name: {"available": bool, "reason": str | None}}``; ``reason``
    says in one line why it cannot run here (for ``auto``: what it picks)."""
    out: dict[str, dict[str, object]] = {}
    for name in BACKENDS:
        missing = _unavailable(name)
        out[name] = {"available": missing is None, "reason": None if missing is None else missing[0]}
    out["auto"]["reason"] = ("picks SpikingJelly's kernel for the tensor's device: Triton on "
                             "CUDA, its torch CPU kernel on CPU")
    return out


class SpikingLIF(neuron.LIFNode):
    """SpikingJelly 2.0 multi-step ``LIFNode`` with an explicit backend.

    Input and output are time-major ``[T, ...]``; the output is binary {0, 1} in the
    input's dtype. State (the membrane ``v``) is reset by ``spikingjelly``'s
    ``functional.reset_net`` or ``self.reset()``.

    Memory: with ``backend="auto"`` or ``"triton"`` and ``detach_reset=True`` a training
    forward keeps only the charged membrane H for the backward (4 bytes per element, see
    ``kernels.compact_lif``) instead of 12 (CPU) or 8 (CUDA); same arithmetic, same values
    and gradients. ``layers.saved.full_saving()`` turns this off.
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

    def _compact_params(self, x_seq: torch.Tensor, v: torch.Tensor) -> tuple | None:
        """The operator's scalar arguments when ``_CompactLIF`` applies here, else None."""
        from spikingjelly._ops.surrogate import _DTYPES, _surrogate_spec

        if (self.backend not in ("auto", "triton") or not saving_enabled()
                or not torch.is_grad_enabled() or not (x_seq.requires_grad or v.requires_grad)
                or not self.detach_reset or self.store_v_seq or x_seq.dim() < 2
                or self._neuron_precision is not None or x_seq.dtype not in _DTYPES
                or v.dtype != torch.float32 or tuple(v.shape) != tuple(x_seq.shape[1:])
                or type(self).multi_step_functional_forward
                is not SpikingLIF.multi_step_functional_forward):
            return None
        if x_seq.device.type != "cpu":
            # CPU only until a GPU run has checked the CUDA path (kernels.compact_lif calls
            # SpikingJelly's own operator there): GPUs keep SpikingJelly's LIFNode, as before
            return None
        spec = _surrogate_spec(self.surrogate_function)
        if spec is None or spec[0] != 0 or x_seq.dtype != torch.float32:
            return None  # the sigmoid surrogate, float32 (kernels.compact_lif)
        surrogate_id, alpha = spec
        return (float(self.tau), bool(self.decay_input), float(self.v_threshold),
                None if self.v_reset is None else float(self.v_reset), True, alpha, False,
                surrogate_id)

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):
        if self.backend == "triton":
            self._check_triton_selected(x_seq.device)
        if self.backend in ("auto", "triton") and not args and not kwargs:
            v = self.materialize_states((x_seq,), tuple(self._memories.values()), "m")[0]
            params = self._compact_params(x_seq, v)
            if params is not None:
                from .kernels.compact_lif import CompactLIF

                spikes, v_last = CompactLIF.apply(x_seq, v, params)
                self._memories["v"] = v_last
                self.v_seq = None
                return spikes
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


class FusedLIF(SpikingLIF):
    """``SpikingLIF`` running spikemoe's fused kernels (``backend="cupy"``).

    Same module, state and options as ``SpikingLIF``; the multi-step forward and backward
    run in one kernel each (``spikemoe.kernels.lif.cu``): CuPy's build on CUDA tensors, the
    CPU build on CPU tensors. ``emsa_gate`` / ``emsp_gate`` fuse this neuron with the SEMM
    gate product; they run the module's forward pre-hooks and hooks with the neuron's own
    input and spikes, as a plain call would, so firing-rate monitors still see this neuron.
    Only SpikingJelly's sigmoid surrogate is implemented (``make_lif`` builds that one).
    """

    def _config(self):
        from .kernels.functions import LifConfig

        return LifConfig(tau=float(self.tau), v_threshold=float(self.v_threshold),
                         v_reset=None if self.v_reset is None else float(self.v_reset),
                         decay_input=bool(self.decay_input), detach_reset=bool(self.detach_reset),
                         alpha=float(self.surrogate_function.alpha))

    def _v0(self, x_seq: torch.Tensor) -> torch.Tensor:
        # [T, ...] -> the membrane at t = -1, [...] (v_reset, or what the last call left)
        return self.materialize_states((x_seq,), tuple(self._memories.values()), "m")[0]

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):
        from .kernels.functions import lif_multistep

        spikes, v = lif_multistep(x_seq, self._v0(x_seq), self._config())
        self._memories["v"] = v
        return spikes

    def _hooked(self, x: torch.Tensor, run):
        """Run ``run(want_spikes) -> (out, spikes, v)`` between this module's hooks."""
        for key, hook in self._forward_pre_hooks.items():
            if key in self._forward_pre_hooks_with_kwargs:
                hook(self, (x,), {})
            else:
                hook(self, (x,))
        out, spikes, v = run(bool(self._forward_hooks))
        self._memories["v"] = v
        for key, hook in self._forward_hooks.items():
            if key in self._forward_hooks_with_kwargs:
                hook(self, (x,), {}, spikes)
            else:
                hook(self, (x,), spikes)
        return out, spikes

    def emsa_gate(self, o: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``Y = R (.) LIF(O)``, fused: ``o [T, ..., d]``, router spikes ``r [T, ...]``."""
        from .kernels.functions import emsa_gate

        cfg = self._config()
        y, _ = self._hooked(o, lambda want: emsa_gate(o, r, self._v0(o), cfg, return_spikes=want))
        return y

    def emsp_gate(self, g: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``Y = LIF(G_pre) (.) Z2``, fused; returns ``(Y, G)`` (G for router statistics)."""
        from .kernels.functions import emsp_gate

        cfg = self._config()
        return self._hooked(g, lambda want: emsp_gate(g, z, self._v0(g), cfg, return_spikes=True))


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
    return (FusedLIF if backend == "cupy" else SpikingLIF)(
        tau=tau,
        v_threshold=float(v_threshold),
        v_reset=None if v_reset is None else float(v_reset),
        surrogate_function=surrogate.Sigmoid(alpha=float(surrogate_alpha)),
        detach_reset=bool(detach_reset),
        backend=backend,
    )
