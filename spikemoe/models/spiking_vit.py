"""The spiking vision transformer backbone shared by Spikformer and the Spike-driven
Transformer, and by their SEMM twins.

    I  : [T, B, C_in, H, W] event frames, or [B, C_in, H, W] an image repeated T times
    X0 = SPS(I)                                    [T, B, D, H/p, W/p] -> tokens [T, B, N, D]
    Xl = Block_l(X(l-1)),  l = 1..L                attention: SSA | SDSA | EMSA; MLP: MLP | EMSP
    logits = mean_t Head(mean_n X_L)               (Spike-driven: Head(LIF(mean_n X_L)))

``style="spikformer"``: Spikformer (Zhou et al., ICLR 2023), spike-sum residuals, SSA.
``style="spike_driven"``: Spike-driven Transformer v1 (Yao et al., NeurIPS 2023),
membrane-shortcut residuals, SDSA: every Linear/Conv input except the stem's first conv
is binary.

The model resets its neurons at the start of ``forward``: membrane state never leaks
between batches, and the same input always gives the same logits (in eval mode).
"""
from __future__ import annotations

import torch
from spikingjelly.activation_based import functional
from torch import nn

from ..contract import ModelOutput, SpikeMoEModel, split_aux
from ..layers.attention import HeadwiseSpikingAttention
from ..layers.block import SpikingBlock
from ..layers.mlp import SpikingMLP
from ..layers.patch_split import SpikingPatchSplit
from ..moe.emsa import EMSA
from ..moe.emsp import EMSP, EMSP_HIDDEN_RULES
from ..neurons import BACKENDS, make_lif
from .registry import (
    check_bool,
    check_int,
    check_overrides,
    check_positive_float,
    divisors,
    is_int,
    multiples_near,
)

STYLES = ("spikformer", "spike_driven")
PROJECTIONS = ("q", "k", "v")


def _listed(values) -> str:
    return ", ".join(map(str, values))


def check_hyperparameters(name: str, *, style, in_channels, img_size, pools, embed_dim, depth,
                          num_heads, mlp_hidden, num_classes, T, attn_scale, emsa, emsp,
                          num_experts, expert_dim, per_expert, emsp_hidden, backend,
                          expert_vth=0.5, expert_scale=True, kv_bn=True) -> dict:
    """Range-check every hyperparameter of ``SpikingVisionTransformer`` before a module is built.

    Each failure is a ``ValueError`` that names the override as a config writes it
    (``model.expert_dim``), what was expected, the value found, and what to set instead. A
    value outside its range would otherwise crash later (``ZeroDivisionError`` for 0 experts,
    ``IndexError`` in the first forward for ``expert_dim=0``) or train silently wrong (a
    blockless ``depth=0`` model, a negative attention scale, ``T=2.5`` truncated to 2).

    Returns:
        The arguments, normalised: ``img_size`` and ``pools`` as tuples (an int ``img_size``
        is a square), ``per_expert`` as a tuple of names (a single name as a 1-tuple).
    """
    if style not in STYLES:
        raise ValueError(f"{name}: model.style must be one of {_listed(STYLES)}, got {style!r}.")
    if backend not in BACKENDS:
        raise ValueError(f"{name}: model.backend must be one of {_listed(BACKENDS)}, got "
                         f"{backend!r}. 'auto' picks the fastest that runs on the device.")
    in_channels = check_int(name, "in_channels", in_channels, 1,
                            "input channels: 2 event polarities, 3 for RGB images")
    num_classes = check_int(name, "num_classes", num_classes, 2, "classifier outputs")
    T = check_int(name, "T", T, 1, "time steps; a static image is repeated T times")
    depth = check_int(name, "depth", depth, 1, "transformer blocks; 0 leaves only the stem")
    mlp_hidden = check_int(name, "mlp_hidden", mlp_hidden, 1, "hidden width of the MLP")
    attn_scale = check_positive_float(name, "attn_scale", attn_scale,
                                      "the SSA scale s; <= 0 silences or inverts attention")
    emsa, emsp = check_bool(name, "emsa", emsa), check_bool(name, "emsp", emsp)
    if not (isinstance(pools, (list, tuple)) and len(pools) == 4
            and all(isinstance(p, bool) for p in pools)):
        raise ValueError(
            f"{name}: model.pools must be 4 booleans, one per stem stage (true: that stage "
            f"halves H and W), got {pools!r}. E.g. model.pools=[false,false,true,true] (4x4 "
            "patches, CIFAR) or [true,true,true,true] (16x16 patches, ImageNet and DVS).")
    pools = tuple(pools)
    # embed_dim: the stem's stages are D/8, D/4, D/2, D wide.
    embed_dim = check_int(name, "embed_dim", embed_dim, 8, "the token width D")
    if embed_dim % 8:
        raise ValueError(
            f"{name}: model.embed_dim must be a multiple of 8 (the stem's stages are D/8, D/4, "
            f"D/2, D wide), got {embed_dim}. Nearest that work: "
            f"{_listed(multiples_near(embed_dim, 8))}.")
    # img_size: every pooling stage halves H and W, so both must be multiples of 2^pools.
    hw = (img_size, img_size) if is_int(img_size) else img_size
    if not (isinstance(hw, (list, tuple)) and len(hw) == 2 and all(is_int(v) for v in hw)):
        raise ValueError(f"{name}: model.img_size must be [H, W] (or one integer for a square "
                         f"image), got {img_size!r}. E.g. model.img_size=[32, 32].")
    hw = (int(hw[0]), int(hw[1]))
    patch = 2 ** sum(pools)
    if any(v < patch or v % patch for v in hw):
        near = "; ".join(f"{side}={v} -> {' or '.join(map(str, multiples_near(v, patch)))}"
                         for side, v in zip("HW", hw, strict=True) if v < patch or v % patch)
        raise ValueError(
            f"{name}: model.img_size={list(hw)} cannot be split by the stem: its {sum(pools)} "
            f"pooling stages give {patch}x{patch}-pixel patches, so H and W must be multiples of "
            f"{patch} ({patch}, {2 * patch}, {3 * patch}, ...). Nearest sizes that work: {near}; "
            f"resize the data to one (data.size) and set model.img_size to it, or change "
            "model.pools.")
    num_heads = check_int(name, "num_heads", num_heads, 1, "attention heads")
    if not emsa and embed_dim % num_heads:
        raise ValueError(
            f"{name}: model.num_heads={num_heads} does not divide model.embed_dim={embed_dim} "
            f"(each head is embed_dim / num_heads wide). Use one of {_listed(divisors(embed_dim))}.")
    # EMSA's experts (moe/emsa.py): E heads of width d, d = D / E unless expert_dim is given.
    num_experts = check_int(name, "num_experts", num_experts, 1, "EMSA's head-wise experts E")
    if expert_dim == "C/E":
        expert_dim = None
    if expert_dim is not None:
        expert_dim = check_int(name, "expert_dim", expert_dim, 1,
                               "the width d of each EMSA expert; unset: embed_dim / num_experts")
    elif emsa and embed_dim % num_experts:
        raise ValueError(
            f"{name}: model.num_experts={num_experts} does not divide model.embed_dim={embed_dim} "
            f"(each expert is embed_dim / num_experts wide unless model.expert_dim is set). Use "
            f"one of {_listed(divisors(embed_dim))}, or set model.expert_dim.")
    names = (per_expert,) if isinstance(per_expert, str) else per_expert
    if not (isinstance(names, (list, tuple)) and names and all(n in PROJECTIONS for n in names)
            and len(set(names)) == len(names)):
        raise ValueError(
            f"{name}: model.per_expert must list, without repeats, at least one of q, k, v (the "
            f"projections each expert owns; the others are shared), got {per_expert!r}. With "
            "none every expert is the same head. E.g. model.per_expert=[q] (the default) or "
            "model.per_expert=[q,k,v] (SSA-sized experts).")
    per_expert = tuple(names)
    expert_vth = check_positive_float(name, "expert_vth", expert_vth,
                                      "V_th of EMSA's expert output neuron (0.5 or STEP's 1.0)")
    expert_scale = check_bool(name, "expert_scale", expert_scale)
    kv_bn = check_bool(name, "kv_bn", kv_bn)
    if isinstance(emsp_hidden, str):
        if emsp_hidden not in EMSP_HIDDEN_RULES:
            raise ValueError(
                f"{name}: model.emsp_hidden must be an even int or one of the rules "
                f"{_listed(sorted(EMSP_HIDDEN_RULES))}, got {emsp_hidden!r}.")
    elif emsp_hidden is not None:
        emsp_hidden = check_int(name, "emsp_hidden", emsp_hidden, 2,
                                "EMSP's hidden width h, split in two halves")
        if emsp_hidden % 2:
            raise ValueError(
                f"{name}: model.emsp_hidden must be even (EMSP splits it into a gate half and an "
                f"expert half), got {emsp_hidden}. Use {emsp_hidden - 1} or {emsp_hidden + 1}, or "
                "leave it unset for 2 round(8 embed_dim / 3).")
    return dict(style=style, in_channels=in_channels, img_size=hw, pools=pools,
                embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_hidden=mlp_hidden,
                num_classes=num_classes, T=T, attn_scale=attn_scale, emsa=emsa, emsp=emsp,
                num_experts=num_experts, expert_dim=expert_dim, per_expert=per_expert,
                emsp_hidden=emsp_hidden, backend=backend, expert_vth=expert_vth,
                expert_scale=expert_scale, kv_bn=kv_bn)


# Overrides that a model ignores: (the switch, the value at which the key is unused, why).
_UNUSED_WHEN = {
    "num_experts": ("emsa", False, "it has no EMSA; set model.emsa=true to use experts"),
    "expert_dim": ("emsa", False, "it has no EMSA; set model.emsa=true to use experts"),
    "per_expert": ("emsa", False, "it has no EMSA; set model.emsa=true to use experts"),
    "expert_vth": ("emsa", False, "it has no EMSA; set model.emsa=true to use experts"),
    "expert_scale": ("emsa", False, "it has no EMSA; set model.emsa=true to use experts"),
    "kv_bn": ("emsa", False, "it has no EMSA; set model.emsa=true to use experts"),
    "num_heads": ("emsa", True, "its attention is EMSA, whose heads are its experts: set "
                  "model.num_experts, or model.emsa=false for num_heads SSA/SDSA heads"),
    "emsp_hidden": ("emsp", False, "it has no EMSP; set model.emsp=true, or set "
                    "model.mlp_hidden for the plain MLP"),
    "mlp_hidden": ("emsp", True, "its MLP is EMSP: set model.emsp_hidden, or model.emsp=false "
                   "for the plain MLP"),
}


def init_trunc_normal(model: nn.Module) -> None:
    """As the official Spikformer / Spike-driven code: every Linear and Conv2d weight truncated
    normal (std 0.02), every bias zero."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SpikingBackbone(SpikeMoEModel):
    """What the spiking transformers share (``SpikingVisionTransformer``, ``Spikingformer``):
    the input contract, the recipe's input shape, and stem -> tokens -> blocks.

    A subclass sets ``name``, ``T``, ``in_channels``, ``img_size``, ``stem`` (with a
    ``downsample`` factor) and ``blocks`` (each ``block(tokens, grid) -> (tokens, metrics)``).
    """

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The recipe's input for one sample, ``[T, C, H, W]``."""
        return (self.T, self.in_channels, *self.img_size)

    def to_time_major(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, B, C, H, W]`` as is, ``[B, C, H, W]`` repeated T times; anything else raises."""
        d = self.stem.downsample
        accepted = (
            f"[T, B, {self.in_channels}, H, W] event frames or [B, {self.in_channels}, H, W] images "
            f"(H and W multiples of {d}; the recipe uses {self.img_size[0]}x{self.img_size[1]})"
        )
        if x.ndim not in (4, 5) or x.shape[-3] != self.in_channels \
                or x.shape[-1] % d or x.shape[-2] % d or x.shape[-1] == 0 or x.shape[-2] == 0:
            raise ValueError(f"{self.name} accepts {accepted}; got a tensor of shape {tuple(x.shape)}.")
        if x.ndim == 4:
            return x.unsqueeze(0).expand(self.T, *x.shape)  # [B, C, H, W] -> [T, B, C, H, W]
        return x

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list, dict[str, torch.Tensor]]:
        """Reset the neurons, run the stem and the blocks: ``(tokens [T, B, N, D], the blocks'
        aux losses, their metrics as blocks.<i>.<key>)``."""
        x = self.to_time_major(x)
        functional.reset_net(self)  # state is reset by structure, never by the caller
        feats = self.stem(x)  # [T, B, D, H', W']
        h, w = feats.shape[-2:]
        tokens = feats.flatten(3).transpose(2, 3)  # [T, B, D, H', W'] -> [T, B, N, D]
        metrics: dict[str, torch.Tensor] = {}
        auxes = []
        for i, block in enumerate(self.blocks):
            tokens, block_metrics = block(tokens, (h, w))
            block_aux, block_metrics = split_aux(block_metrics)
            if block_aux is not None:
                auxes.append(block_aux)
            metrics.update({f"blocks.{i}.{k}": v for k, v in block_metrics.items()})
        return tokens, auxes, metrics


class SpikingVisionTransformer(SpikingBackbone):
    """Spikformer / Spike-driven Transformer, optionally with SEMM (EMSA and/or EMSP).

    Args:
        name: the registry name (used in error messages).
        style: "spikformer" or "spike_driven".
        in_channels: input channels (3 for images, 2 polarities for event frames).
        img_size: the recipe's input size ``(H, W)``; other sizes that the stem divides work.
        pools: per SPS stage, whether it max-pools (see ``layers.patch_split.PAPER_POOLS``).
        embed_dim: D.  depth: L.  num_heads: heads of SSA / SDSA.
        mlp_hidden: hidden width of the plain MLP.
        num_classes: classifier outputs.  T: time steps a static image is repeated for.
        attn_scale: SSA scale s (0.125; 0.25 in the Spikformer DVS recipe).
        emsa / emsp: replace attention / MLP by their SEMM experts (each switchable alone).
        num_experts, expert_dim, per_expert: EMSA's experts (see ``moe.emsa``).
        emsp_hidden: EMSP width h, an int or a rule "ratio4" | "imagenet" | "cifar" (see
            ``moe.emsp``).
        expert_vth, expert_scale, kv_bn: EMSA's expert neuron threshold, whether the SSA
            scale applies to the experts, BatchNorm on shared K/V (see ``moe.emsa``; the
            per-recipe defaults and their sources are in ``models/sizes.py``).
        backend: LIF backend for every neuron (see ``spikemoe.neurons``).

    Declared facts (``spikemoe.contract.SpikeMoEModel``): ``input_shape`` ``(T, C, H, W)``,
    ``num_classes``, ``T``; each sample is measured alone (``profile_batch_size`` None); the
    task loss is the softmax cross-entropy.

    Raises:
        ValueError: a hyperparameter out of range, naming it as ``model.<key>`` (see
            ``check_hyperparameters``), before any module is built.
    """

    def __init__(self, *, name: str, style: str, in_channels: int, img_size: tuple[int, int],
                 pools: tuple[bool, ...], embed_dim: int, depth: int, num_heads: int,
                 mlp_hidden: int, num_classes: int, T: int, attn_scale: float = 0.125,
                 emsa: bool = False, emsp: bool = False, num_experts: int = 4,
                 expert_dim: int | str | None = None, per_expert: tuple[str, ...] = ("q",),
                 emsp_hidden: int | str | None = None, backend: str = "auto",
                 expert_vth: float = 0.5, expert_scale: bool = True, kv_bn: bool = True) -> None:
        super().__init__()
        hp = check_hyperparameters(  # before any module is built
            name, style=style, in_channels=in_channels, img_size=img_size, pools=pools,
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_hidden=mlp_hidden,
            num_classes=num_classes, T=T, attn_scale=attn_scale, emsa=emsa, emsp=emsp,
            num_experts=num_experts, expert_dim=expert_dim, per_expert=per_expert,
            emsp_hidden=emsp_hidden, backend=backend, expert_vth=expert_vth,
            expert_scale=expert_scale, kv_bn=kv_bn)
        in_channels, img_size, pools, embed_dim, depth, num_heads, mlp_hidden, num_classes, T = (
            hp[k] for k in ("in_channels", "img_size", "pools", "embed_dim", "depth", "num_heads",
                            "mlp_hidden", "num_classes", "T"))
        attn_scale, num_experts, expert_dim, per_expert, emsp_hidden = (
            hp[k] for k in ("attn_scale", "num_experts", "expert_dim", "per_expert",
                            "emsp_hidden"))
        expert_options = {k: hp[k] for k in ("expert_vth", "expert_scale", "kv_bn")}
        self.name, self.style, self.T = name, style, T
        self.in_channels, self.img_size, self.num_classes = in_channels, img_size, num_classes
        ms = style == "spike_driven"
        kernel = "sdsa" if ms else "ssa"
        self.stem = SpikingPatchSplit(in_channels, embed_dim, pools, membrane_shortcut=ms,
                                      backend=backend)
        blocks = []
        for _ in range(depth):
            if emsa:
                attn = EMSA(embed_dim, num_experts, expert_dim, per_expert, kernel=kernel,
                            scale=attn_scale, membrane_shortcut=ms, backend=backend,
                            **expert_options)
            else:
                attn = HeadwiseSpikingAttention(embed_dim, num_heads, kernel=kernel,
                                                scale=attn_scale, membrane_shortcut=ms,
                                                backend=backend)
            if emsp:
                mlp = EMSP(embed_dim, emsp_hidden, membrane_shortcut=ms, backend=backend)
            else:
                mlp = SpikingMLP(embed_dim, mlp_hidden, membrane_shortcut=ms, backend=backend)
            blocks.append(SpikingBlock(attn, mlp))
        self.blocks = nn.ModuleList(blocks)
        self.head_lif = make_lif(backend=backend) if ms else None
        self.head = nn.Linear(embed_dim, num_classes)
        init_trunc_normal(self)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        tokens, auxes, metrics = self.encode(x)  # [T, B, N, D]
        pooled = tokens.mean(dim=2)  # [T, B, N, D] -> [T, B, D]
        if self.head_lif is not None:
            pooled = self.head_lif(pooled)
        logits = self.head(pooled).mean(dim=0)  # [T, B, K] -> [B, K]
        return ModelOutput(logits, sum(auxes, logits.new_zeros(())), metrics)


def build_spiking_vit(name: str, family: dict, size: dict, semm: dict,
                      overrides: dict) -> SpikingVisionTransformer:
    """Merge a family's choices, a paper size and SEMM settings, apply checked overrides.

    Raises:
        ValueError: an unknown override, a value out of range (``check_hyperparameters``), or
        an override the resulting model would ignore (``model.num_experts`` without EMSA,
        ``model.attn_scale`` with SDSA, ...), each naming the key; nothing is built first.
    """
    defaults = {**size, **semm, **family}
    hp = check_overrides(name, defaults, overrides)
    for key, (switch, unused_at, why) in _UNUSED_WHEN.items():
        if key in overrides and hp[switch] is unused_at:
            raise ValueError(f"{name}: model.{key}={overrides[key]!r} would have no effect: {why}.")
    if "attn_scale" in overrides and hp["style"] == "spike_driven":
        raise ValueError(f"{name}: model.attn_scale would have no effect: Spike-driven attention "
                         "(SDSA) has no scale. Drop model.attn_scale.")
    if "expert_scale" in overrides and hp["style"] == "spike_driven":
        raise ValueError(f"{name}: model.expert_scale would have no effect: Spike-driven experts "
                         "(SDSA) have no scale. Drop model.expert_scale.")
    return SpikingVisionTransformer(name=name, **hp)
