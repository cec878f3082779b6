"""EMSP: Experts Mixture Spiking Perceptron (SEMM, Zhou et al., NeurIPS 2024).

Channel-wise spiking experts: each of the h/2 hidden channels of the second half is an
expert, and a spike gate with 3x3 spatial context computed from the first half routes
tokens to them:

    Z        = LIF(BN(X W_1))                     [T, B, N, h]    (X = LIF(U) in the Spike-driven twin)
    Z1, Z2   = Z[..., :h/2], Z[..., h/2:]
    G        = LIF(BN(DWConv3x3(Z1)))             [T, B, N, h/2]  the channel-wise router, over the token grid
    Y        = G (.) Z2                           binary: an AND of two spike tensors
    out      = LIF(BN(Y W_2))   (Spikformer)   or   BN(Y W_2)   (Spike-driven)

Width h (``hidden``: an int or a rule name; the paper states none, its code is not public):
``"ratio4"`` h = 2 round(8C/3), so W_1 and W_2 hold 1.5 h C ~ 8 C^2 weights, a ratio-4
MLP's (the default, kept for the DVS recipes and test twins: no STEP file exists for them);
``"imagenet"`` h = 16 (C // 3) (STEP, ``cls/models/static/spikf_semm_imagenet.py``,
``hidden_features = in_features // 3 * 16``: equal to "ratio4" at C = 384 and 768, 2720
instead of 2730 at C = 512); ``"cifar"`` h = 4C, so fc2 is 2C -> C (STEP,
``cls/models/static/spikf_semm_cifar.py``, ``int(in_features * mlp_ratio)``, mlp_ratio 4:
the file behind STEP's 94.98 / 77.59 re-runs). The router adds 9 h/2 depth-wise weights
and its BatchNorm.

Router statistics treat each gated channel as an expert: ``expert_rate [h/2]`` and the
fraction of tokens whose gate is silent on every channel (``routed_to_none``).
"""
from __future__ import annotations

import torch
from spikingjelly.activation_based.layer import SeqToANNContainer
from torch import nn

from ..contract import mark_router_neuron
from ..layers.linear_bn import TokenLinearBN
from ..layers.saved import compact_saved
from ..neurons import make_lif
from .router import router_statistics


def default_emsp_hidden(dim: int) -> int:
    """h = 2 round(8 dim / 3): fc1 + fc2 = 1.5 h dim ~ 8 dim^2, a ratio-4 MLP's weights."""
    return 2 * round(8 * dim / 3)


# EMSP width rules by name (see the module docstring for their sources).
EMSP_HIDDEN_RULES = {
    "ratio4": default_emsp_hidden,
    "imagenet": lambda dim: 16 * (dim // 3),  # STEP spikf_semm_imagenet.py
    "cifar": lambda dim: 4 * dim,  # STEP spikf_semm_cifar.py
}


def emsp_hidden_width(dim: int, hidden: int | str | None) -> int:
    """h for token width ``dim``: an int as is; None or a rule of ``EMSP_HIDDEN_RULES``."""
    if hidden is None:
        return default_emsp_hidden(dim)
    if isinstance(hidden, str):
        if hidden not in EMSP_HIDDEN_RULES:
            raise ValueError(f"EMSP hidden rule {hidden!r} is not one of "
                             f"{sorted(EMSP_HIDDEN_RULES)} (or pass an even int)")
        return EMSP_HIDDEN_RULES[hidden](dim)
    return int(hidden)


class EMSP(nn.Module):
    """Channel-wise spiking experts in the MLP with a depth-wise-conv spike gate.

    Args:
        dim: token width C.
        hidden: h, even: an int, or a rule ``"ratio4"`` (default, also None), ``"imagenet"``
            or ``"cifar"`` (``EMSP_HIDDEN_RULES``).
        membrane_shortcut: Spike-driven residual style.
        backend: LIF backend. With ``"cupy"`` the gate neuron and the product run as one
            fused kernel, ``Y = LIF(G_pre) (.) Z2`` (same values and gradients; autograd keeps
            the kernel's float32 membrane and Z2, not G).

    Forward: ``x [T, B, N, C]``, ``grid (H, W)`` with ``H * W == N`` ->
    ``(out [T, B, N, C], router statistics of G)``.
    """

    def __init__(self, dim: int, hidden: int | str | None = None, membrane_shortcut: bool = False,
                 backend: str = "auto") -> None:
        super().__init__()
        hidden = emsp_hidden_width(dim, hidden)
        if hidden % 2:
            raise ValueError(f"EMSP hidden width must be even (split in two halves), got {hidden}")
        self.hidden = hidden
        half = hidden // 2
        self.in_lif = make_lif(backend=backend) if membrane_shortcut else None
        self.fc1 = TokenLinearBN(dim, hidden)
        self.fc1_lif = make_lif(backend=backend)
        self.gate = SeqToANNContainer(
            nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False), nn.BatchNorm2d(half)
        )
        # The gate's output is [T, B, h/2, H, W]: the experts are its channels.
        self.gate_lif = mark_router_neuron(make_lif(backend=backend), expert_axis=2)
        self.fc2 = TokenLinearBN(half, dim)
        self.fc2_lif = None if membrane_shortcut else make_lif(backend=backend)
        self.fused_gate = backend == "cupy"

    def forward(self, x: torch.Tensor, grid: tuple[int, int]):
        T, B, N, _ = x.shape
        h, w = grid
        if h * w != N:
            raise ValueError(f"EMSP needs the token grid: got grid {grid} for N = {N} tokens")
        if self.in_lif is not None:
            x = self.in_lif(x)
        z1, z2 = self.fc1_lif(self.fc1(x)).chunk(2, dim=-1)  # [T, B, N, h] -> 2 x [T, B, N, h/2]
        z1 = z1.transpose(2, 3).reshape(T, B, -1, h, w)  # [T, B, N, h/2] -> [T, B, h/2, H, W]
        if self.fused_gate:
            # One kernel: G = LIF(G_pre), Y = G (.) Z2, in the gate's layout so that the gate
            # neuron's spikes keep their expert axis (2) for measurement.
            z2 = z2.transpose(2, 3).reshape(T, B, -1, h, w)  # [T, B, N, h/2] -> [T, B, h/2, H, W]
            with compact_saved(self.gate[0].weight):  # Z1: spikes, saved as bytes
                gate_pre = self.gate(z1)
            y, g = self.gate_lif.emsp_gate(gate_pre, z2)  # 2 x [T, B, h/2, H, W]
            g = g.flatten(3).transpose(2, 3)  # -> [T, B, N, h/2]
            y = self.fc2(y.flatten(3).transpose(2, 3))  # [T, B, N, h/2] -> [T, B, N, C]
        else:
            with compact_saved(self.gate[0].weight):  # Z1: spikes, saved as bytes
                gate_pre = self.gate(z1)
            g = self.gate_lif(gate_pre)  # [T, B, h/2, H, W]
            g = g.flatten(3).transpose(2, 3)  # -> [T, B, N, h/2]
            with compact_saved():  # G and Z2: spikes
                y = g * z2  # Y = G (.) Z2
            y = self.fc2(y)  # [T, B, N, h/2] -> [T, B, N, C]
        if self.fc2_lif is not None:
            y = self.fc2_lif(y)
        return y, router_statistics(g)
