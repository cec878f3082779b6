"""V-MoE's MoE MLP layer (Riquelme et al., NeurIPS 2021; vmoe ``MlpMoeBlock``) and the ViT
MLP that is both the dense layer and each expert.

    MLP(x)   = Drop(W2 Drop(GELU(W1 x + b1)) + b2)                        [.., D] -> [.., D]
    MoE(x)   = sum_{j kept} g_j(x) MLP_{e_j(x)}(x)       router: ``vmoe_router``; dispatch:
                                                        ``dispatch`` (sorted bins)

``MLP`` is the function ``[.., D] -> [.., D]`` (each expert); the block's MLP branch is a
``DenseMLP`` or a ``VMoEMLP``, both with the block contract of ``spikemoe.contract``:
``x -> (out, metrics)``, the MoE's auxiliary loss in ``metrics[AUX_LOSS]``.

Tokens ``[B, N, D]`` are routed in groups of ``group_images`` images (``S = group_images *
N`` tokens; the paper routes 8 images' tokens per group). When B is not a multiple of
``group_images`` the last group holds the remaining images and gets the capacity of its
own size. The aux loss and the statistics are averaged over groups, weighted by tokens.

Dropout (``expert_dropout``, 0 by default) sits where vit_jax's ``MlpBlock`` puts it, after
the GELU and after the output layer, in the experts only: vmoe's ``moe.dropout_rate`` (0.2 in
the released ILSVRC-2012 V-MoE-S/32, google-research/vmoe 942a78b
``vmoe/configs/vmoe_paper/vmoe_s32_last2_ilsvrc2012_randaug_light1.py``; 0 in every other
paper config). ``gelu_approximate="tanh"`` is flax's ``nn.gelu`` (its default, which vmoe
uses); ``"none"`` the exact erf GELU (torch's default).

Experts share their initialisation (vmoe's default ``split_rngs=False``: every expert
starts from the same weights; the router and its noise break the symmetry). Pass
``shared_init=False`` for independent draws.
"""
from __future__ import annotations

import torch
from torch import nn

from ..contract import AUX_LOSS
from .dispatch import dispatch_combine, sort_into_bins
from .vmoe_router import NoisyTopKRouter

__all__ = ["MLP", "DenseMLP", "VMoEMLP"]


class MLP(nn.Module):
    """The ViT MLP: Linear(D, H) - GELU - Dropout - Linear(H, D) - Dropout (vit_jax
    ``MlpBlock``; dropout 0 by default: then no dropout module runs)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0,
                 gelu_approximate: str = "none") -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLP dropout must be in [0, 1), got {dropout}")
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate=gelu_approximate)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DenseMLP(MLP):
    """The dense ViT block's MLP branch: ``MLP`` (same parameters and keys) with the block
    contract, ``x [.., D] -> (MLP(x) [.., D], {})``."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return super().forward(x), {}


class VMoEMLP(nn.Module):
    """E expert MLPs behind a noisy top-k router (module docstring).

    Args:
        dim: D.  hidden: each expert's MLP width.  num_experts: E.  k: choices per token.
        group_images: images whose tokens form one routing group.
        shared_init: every expert starts as a copy of expert 0.
        expert_dropout: dropout inside each expert (module docstring).
        gelu_approximate: ``"none"`` or ``"tanh"`` (module docstring).
        **router: ``NoisyTopKRouter`` options (capacity factors, BPR, noise, loss weights,
            capacity rounding).
    """

    def __init__(self, dim: int, hidden: int, num_experts: int = 8, k: int = 2, *,
                 group_images: int = 8, shared_init: bool = True, expert_dropout: float = 0.0,
                 gelu_approximate: str = "none", **router) -> None:
        super().__init__()
        if group_images < 1:
            raise ValueError(f"group_images must be >= 1, got {group_images}")
        self.group_images, self.shared_init = group_images, shared_init
        self.router = NoisyTopKRouter(dim, num_experts, k, **router)
        self.experts = nn.ModuleList(MLP(dim, hidden, expert_dropout, gelu_approximate)
                                     for _ in range(num_experts))
        self.share_expert_init()

    @torch.no_grad()
    def share_expert_init(self) -> None:
        """With ``shared_init``, copy expert 0's weights into every other expert (call again
        after re-initialising the experts)."""
        if not self.shared_init:
            return
        first = self.experts[0].state_dict()
        for expert in self.experts[1:]:
            for name, p in expert.state_dict().items():
                p.copy_(first[name])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x [B, N, D] -> (y [B, N, D], metrics)``; dropped tokens get y = 0.

        ``metrics[AUX_LOSS]`` is the routers' auxiliary loss ``[]`` (with its gradient); the
        other entries are the routers' detached statistics. Both are averaged over the routing
        groups, weighted by their tokens.
        """
        if x.ndim != 3:
            raise ValueError(f"VMoEMLP takes tokens [B, N, D], got shape {tuple(x.shape)}")
        b, n, d = x.shape
        full = (b // self.group_images) * self.group_images
        chunks = [x[:full].reshape(-1, self.group_images * n, d)] if full else []  # [G, S, D]
        if full < b:
            chunks.append(x[full:].reshape(1, (b - full) * n, d))  # the rest: one smaller group
        routes = [self.router(c) for c in chunks]
        k = self.router.k
        expert_index = torch.cat([r.expert_index.reshape(-1, k) for r in routes])  # [B*N, k]
        combine = torch.cat([r.combine.reshape(-1, k) for r in routes])
        kept = torch.cat([r.kept.reshape(-1, k) for r in routes])
        bins = sort_into_bins(expert_index, combine, kept, len(self.experts))
        y = dispatch_combine(x.reshape(b * n, d), bins, self.experts)  # [B*N, D]
        shares = [c.shape[0] * c.shape[1] / (b * n) for c in chunks]  # token share of each chunk
        aux = sum(w * r.aux_loss for w, r in zip(shares, routes))
        metrics = {key: sum(w * r.metrics[key] for w, r in zip(shares, routes))
                   for key in routes[0].metrics}
        return y.reshape(b, n, -1), {AUX_LOSS: aux, **metrics}  # [B*N, D] -> [B, N, D]
