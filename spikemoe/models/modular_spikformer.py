"""A Spikformer whose MLP is a layer of spiking expert MLPs chosen by a Modular Networks
controller trained by generalised EM (Kirsch et al., NeurIPS 2018; ``moe/modular_em.py``).

    X0 = SPS(I)                                  Spikformer stem  [T, B, N, D]
    X' = X + SSA(X)                              Spikformer attention (``layers/attention.py``)
    Y  = X' + sum_{m in set(a_n)} MLP_m(X'_n)    per token n: K of M spiking MLP experts
                                                 (``layers/mlp.py``: LIF(BN(LIF(BN(X W1)) W2)))
    logits = mean_t Head(mean_n X_L)

The choice a_n of token n is a binary spike mask over the M experts with K ones (fewer when a
module is drawn twice), the same at every time step. The controller is one dense layer on the
token's input averaged over T (``controller_input``: the categorical needs real logits, and a
choice per token that is fixed in time needs a time-free input; a choice of this package), so
each token runs exactly its chosen experts on its T-step spike train.

Choices are stored per training example and token (P = N positions). The E-step scores S
joint candidates (all tokens of all layers at once, as the reference samples every layer
jointly), each by a whole forward of the spiking network: an E-step costs S = 10 forwards of
T steps, i.e. about 10/3 of a training step's forward + backward, every 10th step.

Everything except the MLP is ``SpikingVisionTransformer``'s Spikformer (``models/spiking_vit.py``);
this model reuses its parts and ``SpikingBlock``'s residual arithmetic, passing the routing
context to the MLP (the block's ``mlp(x, grid)`` call has no place for it).
"""
from __future__ import annotations

import torch
from spikingjelly.activation_based import functional
from torch import nn

from ..layers.attention import HeadwiseSpikingAttention
from ..layers.block import SpikingBlock
from ..layers.mlp import SpikingMLP
from ..layers.patch_split import SpikingPatchSplit
from ..moe.modular_em import ModularEM
from ..moe.modular_layer import ModularLayer, Routing
from .modular import RoutedModel, _gather
from .registry import check_int, check_overrides, register_model
from .sizes import DVS_2_256, TEST
from .spiking_vit import check_hyperparameters, init_trunc_normal

__all__ = ["ModularSpikformer", "RowExpert"]


class RowExpert(nn.Module):
    """A time-major spiking MLP run on gathered token rows: ``[R, T, D] -> [T, R, 1, D] ->
    SpikingMLP -> [R, T, D]`` (R tokens, each with its own T-step spike train)."""

    def __init__(self, mlp: SpikingMLP) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        y, _ = self.mlp(rows.transpose(0, 1).unsqueeze(2))  # [R, T, D] -> [T, R, 1, D]
        return y.squeeze(2).transpose(0, 1)  # [T, R, 1, D] -> [R, T, D]


class ModularSpikformer(ModularEM, RoutedModel):
    """Spikformer with EM-routed spiking expert MLPs (module docstring).

    Args: as ``SpikingVisionTransformer`` (Spikformer style, no SEMM), plus
        num_modules: M spiking MLP experts per block.  k: K chosen per token.
        expert_hidden: hidden width of one expert (default ``mlp_hidden // k``: K chosen
            experts cost the plain Spikformer MLP's synapses per token).
        detach_controller_input: the controller loss trains the controller only (default
            True, a departure from the reference: the joint log p(a | x) sums over N tokens
            and K slots, 2 N log M at the start, e.g. 44 for 16 tokens, 4 experts, K = 2,
            against a task loss near log 10, and would otherwise drive the stem and attention).
    """

    def __init__(self, *, name: str, in_channels: int, img_size, pools, embed_dim: int,
                 depth: int, num_heads: int, mlp_hidden: int, num_classes: int, T: int,
                 attn_scale: float, num_modules: int, k: int, expert_hidden: int | None,
                 detach_controller_input: bool, backend: str) -> None:
        super().__init__()
        hp = check_hyperparameters(
            name, style="spikformer", in_channels=in_channels, img_size=img_size, pools=pools,
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_hidden=mlp_hidden,
            num_classes=num_classes, T=T, attn_scale=attn_scale, emsa=False, emsp=False,
            num_experts=1, expert_dim=None, per_expert=("q",), emsp_hidden=None, backend=backend)
        num_modules = check_int(name, "num_modules", num_modules, 1, "spiking MLP experts M")
        k = check_int(name, "k", k, 1, "experts chosen per token K")
        hidden = hp["mlp_hidden"] // k if expert_hidden is None else check_int(
            name, "expert_hidden", expert_hidden, 1, "hidden width of one expert")
        d = hp["embed_dim"]
        self.name, self.T, self.num_classes = name, hp["T"], hp["num_classes"]
        self.in_channels, self.img_size = hp["in_channels"], hp["img_size"]
        self.stem = SpikingPatchSplit(self.in_channels, d, hp["pools"], backend=backend)
        tokens = (self.img_size[0] // self.stem.downsample) * (self.img_size[1] // self.stem.downsample)
        self.blocks = nn.ModuleList(
            SpikingBlock(HeadwiseSpikingAttention(d, hp["num_heads"], kernel="ssa",
                                                  scale=hp["attn_scale"], backend=backend),
                         ModularLayer([RowExpert(SpikingMLP(d, hidden, backend=backend))
                                       for _ in range(num_modules)], d, k, tokens,
                                      detach_features=detach_controller_input))
            for _ in range(hp["depth"]))
        self.head = nn.Linear(d, self.num_classes)
        init_trunc_normal(self)  # as SpikingVisionTransformer: truncated normal 0.02

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.T, self.in_channels, *self.img_size)

    def route(self, x: torch.Tensor, routing: Routing):
        c, (hh, ww) = self.in_channels, self.img_size
        if x.dim() not in (4, 5) or tuple(x.shape[-3:]) != (c, hh, ww):
            raise ValueError(f"{self.name} accepts [T, B, {c}, {hh}, {ww}] frames or "
                             f"[B, {c}, {hh}, {ww}] images (its choices are per token, so the "
                             f"size is fixed); got {tuple(x.shape)}.")
        if x.dim() == 4:
            x = x.unsqueeze(0).expand(self.T, *x.shape)  # [B, C, H, W] -> [T, B, C, H, W]
        functional.reset_net(self)  # state is reset by structure, never by the caller
        feats = self.stem(x)  # [T, B, D, H', W']
        grid = feats.shape[-2:]
        t = feats.flatten(3).transpose(2, 3)  # [T, B, D, H', W'] -> [T, B, N, D]
        steps, b, n, d = t.shape
        parts = []
        for i, block in enumerate(self.blocks):
            a, attn_metrics = block.attn(t, grid)
            t = t + a
            rows = t.permute(1, 2, 0, 3).reshape(b * n, steps, d)  # [T, B, N, D] -> [B*N, T, D]
            y, mlp_metrics = block.mlp(rows, t.mean(dim=0), routing)  # features [B, N, D]
            t = t + y.view(b, n, steps, d).permute(2, 0, 1, 3)  # -> [T, B, N, D]
            parts += [(f"blocks.{i}.attn", attn_metrics), (f"blocks.{i}.mlp", mlp_metrics)]
        logits = self.head(t.mean(dim=2)).mean(dim=0)  # [T, B, N, D] -> [T, B, K] -> [B, K]
        return logits, _gather(parts)


def _build(name: str, size: dict, overrides: dict) -> ModularSpikformer:
    defaults = {**size, "attn_scale": 0.25, "num_heads": 16, "num_modules": 4, "k": 2,
                "expert_hidden": None, "detach_controller_input": True, "backend": "auto", "samples": 10, "e_step_every": 10}
    hp = check_overrides(name, defaults, overrides)
    samples = check_int(name, "samples", hp.pop("samples"), 1, "E-step candidates S")
    every = check_int(name, "e_step_every", hp.pop("e_step_every"), 1, "steps per E-step")
    model = ModularSpikformer(name=name, **hp)
    model.samples, model.e_step_every = samples, every
    return model


@register_model
def modular_spikformer_2_256_dvs(**overrides):
    """Spikformer-2-256 (DVS recipe, attention scale 0.25) with EM-routed spiking MLP
    experts: M=4 experts of hidden 512, K=2 per token (the plain MLP's 1024 per token)."""
    return _build("modular_spikformer_2_256_dvs", DVS_2_256, overrides)


@register_model
def test_modular_spikformer(**overrides):
    """Tiny EM-routed spiking-expert Spikformer for tests: ``test_spikformer``'s size,
    M=4 experts, K=2."""
    return _build("test_modular_spikformer", {**TEST, "num_heads": 2}, overrides)
