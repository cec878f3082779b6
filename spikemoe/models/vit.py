"""Vision Transformer (Dosovitskiy et al., ICLR 2021) and V-MoE (Riquelme et al., NeurIPS
2021): the ANN conditional-computation baseline and its dense twin, on the same yardstick.

    I   : [T, B, C, H, W] event frames, or [B, C, H, W] an image
    X   = TimeFolding(I)                  sum over T -> [B, C, H, W] | fold -> [B, T*C, H, W]
    Z0  = [cls; PatchEmbed(X)] + pos      conv p x p, stride p; patches in raster order [B, 1+N, D]
    Z'l = Z(l-1) + MHSA(LN(Z(l-1)))       pre-norm blocks, l = 1..L
    Zl  = Z'l + MLP(LN(Z'l))              MLP, or V-MoE's MoE of MLPs in the MoE blocks
    z      = LN(ZL)[:, 0]                 the class token (pool="cls"), or the mean of the
                                          patch tokens (pool="mean")
    z      = tanh(W_pre z + b_pre)        the pre-logits layer, if ``representation_size``
    logits = Head(z)

Pooling: the class token by default, as ViT and V-MoE (vmoe's ``classifier='token'``), so
the class token is routed by the MoE like every other token, as in V-MoE. ``pool="mean"``
(the spiking models' choice: they average the tokens) is one override away.

Sizes (``vit_*`` / ``vmoe_*`` at 224 x 224, 1000 classes) are vmoe's, NOT those of the
12-layer ViT-S of Steiner et al. / DeiT: google-research/vmoe 942a78b
``vmoe/configs/vmoe_paper/common.py`` ``get_vmoe_config``: S = 8 blocks, D = 512, 8 heads,
MLP 2048; B = 12 blocks, D = 768, 12 heads, MLP 3072 (its S/32 config: "we have only 8
layers, while these works use 12 layers in the ViT-S backbone").

MoE placement (``moe_placement``): ``"every-2"`` puts the MoE in 0-indexed blocks 1, 3, 5, ...
(the paper's "Every-2", vmoe's ``range(1, L, 2)``); ``"last-n"`` in the last n of those
(``"last-2"`` of vmoe's 8-block S: blocks 5 and 7, the released V-MoE-S/32 "Last-2");
``"none"`` is the dense ViT.

The released ILSVRC-2012 model's extras, each a switch, off by default (a recipe turns them
on; ``configs/imagenet_vmoe_s_32_last2.yaml``): ``representation_size`` (vmoe's pre-logits
``Dense(D) + tanh``; its ``common.py`` sets it to D), ``head_zero_init`` and
``head_bias_init`` (zero head kernel, as vmoe's ``head_kernel_zero_init=True``, and bias
``-log(K)``: ``head_bias_init="-log(K)"``), ``expert_dropout`` (0.2), ``gelu_approximate``
("tanh": flax's GELU), ``init="vmoe"`` (flax's initialisers, as vmoe), and
``classifier_loss="sigmoid_xent"`` (``sigmoid_cross_entropy``; the trainer reads the
attribute). ``capacity_rounding`` is the routers' (``moe.vmoe_router``).

Attention products are explicit matmuls (not ``scaled_dot_product_attention``) so that the
op counter of ``spikemoe.analysis`` sees and counts them. There are no neurons and no
state: calling the model twice on the same input gives the same logits (in eval mode; the
router's noise is drawn in training only).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..contract import AUX_LOSS, CLASSIFIER_LOSSES, ModelOutput, SpikeMoEModel, split_aux
from ..layers.time_folding import TIME_MODES, TimeFolding, stem_channels
from ..moe.vmoe_layer import MLP, DenseMLP, VMoEMLP

POOLS = ("cls", "mean")


def sigmoid_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                          label_smoothing: float = 0.0) -> torch.Tensor:
    """vmoe's ``sigmoid_xent``: a binary cross-entropy per class, summed over the K classes,
    averaged over the batch (google-research/vmoe 942a78b ``vmoe/train/trainer.py``
    ``default_sigmoid_xent``: ``sum(optax.sigmoid_binary_cross_entropy(logits, labels), -1)``).

        L = mean_b sum_k [ -y_bk log s(z_bk) - (1 - y_bk) log(1 - s(z_bk)) ]

    Args:
        logits: ``[B, K]``.
        targets: ``[B]`` class indices, or ``[B, K]`` soft targets (MixUp / CutMix).
        label_smoothing: eps: ``y <- (1 - eps) y + eps / K`` (vmoe uses none: 0).
    Returns:
        The scalar loss. Example: K = 2, logits [[0, 0]], target 0: 2 log 2 = 1.386.
    """
    if targets.dim() == logits.dim() - 1:
        targets = F.one_hot(targets.long(), logits.shape[-1])
    targets = targets.to(logits.dtype)
    if label_smoothing:
        targets = targets * (1 - label_smoothing) + label_smoothing / logits.shape[-1]
    per_class = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # [B, K]
    return per_class.sum(dim=-1).mean()


def moe_blocks(depth: int, placement: str) -> list[int]:
    """0-indexed blocks whose MLP is an MoE: ``none`` | ``every-2`` | ``last-<n>``."""
    every2 = list(range(1, depth, 2))
    if placement == "none":
        return []
    if placement == "every-2":
        return every2
    if placement.startswith("last-") and placement[5:].isdigit():
        n = int(placement[5:])
        if not 1 <= n <= len(every2):
            raise ValueError(f"moe_placement={placement!r}: a depth-{depth} model has "
                             f"{len(every2)} Every-2 blocks {every2}; n must be 1..{len(every2)}")
        return every2[-n:]
    raise ValueError(f"moe_placement must be 'none', 'every-2' or 'last-<n>' (e.g. 'last-2'), "
                     f"got {placement!r}")


class Attention(nn.Module):
    """Multi-head self-attention: ``softmax(Q K^T / sqrt(d_h)) V`` per head."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)  # [B, N, 3, h, d_h]
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # -> 3 x [B, h, N, d_h]
        attn = (q * self.scale) @ k.transpose(-2, -1)  # [B, h, N, N]
        out = attn.softmax(dim=-1) @ v  # [B, h, N, d_h]
        return self.proj(out.transpose(1, 2).reshape(b, n, d))  # [B, h, N, d_h] -> [B, N, D]


class Block(nn.Module):
    """Pre-norm transformer block; ``mlp`` is a ``DenseMLP`` or a ``VMoEMLP``.

    Forward: ``x [B, N, D] -> (y [B, N, D], metrics)``: the MLP branch's statistics under
    ``mlp.``, its auxiliary loss (if any) under ``AUX_LOSS`` (``spikemoe.contract``).
    """

    def __init__(self, dim: int, num_heads: int, mlp: nn.Module) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = x + self.attn(self.norm1(x))
        y, mlp_metrics = self.mlp(self.norm2(x))  # tokens an MoE dropped: y = 0
        aux, mlp_metrics = split_aux(mlp_metrics)
        metrics = {f"mlp.{k}": v for k, v in mlp_metrics.items()}
        if aux is not None:
            metrics[AUX_LOSS] = aux
        return x + y, metrics  # the residual carries the dropped tokens


class VisionTransformer(SpikeMoEModel):
    """ViT, or V-MoE when ``moe_placement`` is not ``"none"`` (module docstring).

    Args:
        name: the registry name (used in error messages).
        in_channels: C of the input (3 for images, 2 polarities for event frames).
        img_size: the recipe's ``(H, W)`` (the position embedding's grid; other multiples of
            the patch size are accepted and the embedding is interpolated).
        patch_size: p.  embed_dim: D.  depth: L.  num_heads: heads.  mlp_hidden: MLP width.
        num_classes: classifier outputs.  T: time steps of the recipe's event frames (1 for
            static images).  time_mode: ``"sum"`` or ``"fold"`` (``layers.time_folding``).
        pool: ``"cls"`` or ``"mean"``.
        moe_placement: ``"none"`` | ``"every-2"`` | ``"last-<n>"``.
        num_experts, k, group_images, shared_init, expert_dropout: the MoE layers
            (``moe.vmoe_layer``).
        capacity_factor_train, capacity_factor_eval, batch_priority_train,
        batch_priority_eval, noise_std, importance_weight, load_weight, capacity_rounding:
            their routers (``moe.vmoe_router``).
        gelu_approximate: every MLP's GELU, ``"none"`` (erf) or ``"tanh"`` (flax, vmoe).
        representation_size: width of the pre-logits layer (None: no such layer).
        head_zero_init: the classifier's kernel starts at zero (vmoe) instead of
            trunc-normal 0.02.
        head_bias_init: the classifier's initial bias: a number, or ``"-log(K)"``.
        classifier_loss: ``"softmax_xent"`` or ``"sigmoid_xent"``: declared as
            ``self.classifier_loss`` (``spikemoe.contract.ModelFacts``) for the trainer
            (``sigmoid_cross_entropy``).
        init: ``"trunc_normal"`` (0.02 everywhere) or ``"vmoe"`` (``_vmoe_init``).
    """

    def __init__(self, *, name: str, in_channels: int, img_size: tuple[int, int],
                 patch_size: int, embed_dim: int, depth: int, num_heads: int, mlp_hidden: int,
                 num_classes: int, T: int, time_mode: str = "sum", pool: str = "cls",
                 moe_placement: str = "none", num_experts: int = 8, k: int = 2,
                 group_images: int = 8, shared_init: bool = True,
                 capacity_factor_train: float = 1.05, capacity_factor_eval: float = 1.05,
                 batch_priority_train: bool = False, batch_priority_eval: bool = True,
                 noise_std: float = 1.0, importance_weight: float = 0.005,
                 load_weight: float = 0.005, capacity_rounding: str = "vmoe",
                 expert_dropout: float = 0.0, gelu_approximate: str = "none",
                 representation_size: int | None = None, head_zero_init: bool = False,
                 head_bias_init: float | str = 0.0,
                 classifier_loss: str = "softmax_xent", init: str = "trunc_normal") -> None:
        super().__init__()
        if init not in ("trunc_normal", "vmoe"):
            raise ValueError(f"init must be 'trunc_normal' or 'vmoe', got {init!r}")
        self.init = init
        if classifier_loss not in CLASSIFIER_LOSSES:
            raise ValueError(f"classifier_loss must be one of {CLASSIFIER_LOSSES}, got "
                             f"{classifier_loss!r}")
        if gelu_approximate not in ("none", "tanh"):
            raise ValueError(f"gelu_approximate must be 'none' (erf) or 'tanh' (flax's, as "
                             f"vmoe), got {gelu_approximate!r}")
        self.head_bias = _head_bias(head_bias_init, num_classes)
        self.head_zero_init, self.classifier_loss = bool(head_zero_init), classifier_loss
        if time_mode not in TIME_MODES:
            raise ValueError(f"time_mode must be one of {TIME_MODES}, got {time_mode!r}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        img_size = tuple(int(s) for s in img_size)
        if len(img_size) != 2 or img_size[0] % patch_size or img_size[1] % patch_size:
            raise ValueError(f"img_size {img_size} must be (H, W), multiples of patch_size {patch_size}")
        self.name, self.T, self.num_classes = name, int(T), num_classes
        self.in_channels, self.img_size, self.patch_size = in_channels, img_size, patch_size
        self.pool = pool
        self.fold = TimeFolding(time_mode, T)
        self.patch_embed = nn.Conv2d(stem_channels(time_mode, in_channels, T), embed_dim,
                                     patch_size, stride=patch_size)
        self.grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        extra = 1 if pool == "cls" else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if extra else None
        self.pos_embed = nn.Parameter(torch.zeros(1, extra + self.grid[0] * self.grid[1], embed_dim))
        self.moe_blocks = moe_blocks(depth, moe_placement)
        # the measurement batch (spikemoe.contract): capacity is per routing group, so what
        # runs depends on which images share a batch; profile one routing group at a time
        self.profile_batch_size = group_images if self.moe_blocks else None
        router = dict(capacity_factor_train=capacity_factor_train,
                      capacity_factor_eval=capacity_factor_eval,
                      batch_priority_train=batch_priority_train,
                      batch_priority_eval=batch_priority_eval, noise_std=noise_std,
                      importance_weight=importance_weight, load_weight=load_weight,
                      capacity_rounding=capacity_rounding)
        blocks = []
        for i in range(depth):
            if i in self.moe_blocks:
                mlp = VMoEMLP(embed_dim, mlp_hidden, num_experts, k, group_images=group_images,
                              shared_init=shared_init, expert_dropout=expert_dropout,
                              gelu_approximate=gelu_approximate, **router)
            else:
                mlp = DenseMLP(embed_dim, mlp_hidden, gelu_approximate=gelu_approximate)
            blocks.append(Block(embed_dim, num_heads, mlp))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        width = embed_dim
        if representation_size:  # vmoe/vit_jax: Dense(R, name='pre_logits') then tanh
            self.pre_logits = nn.Sequential(nn.Linear(embed_dim, representation_size), nn.Tanh())
            width = representation_size
        else:
            self.pre_logits = nn.Identity()
        self.head = nn.Linear(width, num_classes)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        # "trunc_normal": truncated normal 0.02 and zero biases (as the rest of spikemoe and
        # timm's ViT); class token zero (vmoe), position embedding trunc-normal 0.02.
        # "vmoe": flax's initialisers as vmoe / vit_jax use them (_vmoe_init).
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.init == "vmoe":
            self._vmoe_init()
        if self.head_zero_init:
            nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, self.head_bias)
        for m in self.modules():
            if isinstance(m, VMoEMLP):
                m.share_expert_init()

    def _vmoe_init(self) -> None:
        """vmoe's initialisation (google-research/vmoe 942a78b ``vmoe/nn/vit_moe.py``, vit_jax
        ``models_vit.py``): attention kernels xavier-uniform per q / k / v / out, zero bias;
        MLP kernels xavier-uniform, biases normal(1e-6); patch embedding, router, pre-logits
        and head kernels lecun-normal (flax's Dense / Conv default: truncated normal at 2
        sigma, variance 1 / fan_in), zero biases; position embedding normal(0.02)."""
        nn.init.normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, Attention):
                for w in m.qkv.weight.chunk(3):  # [3D, D] -> q, k, v kernels [D, D]
                    nn.init.xavier_uniform_(w)
                nn.init.xavier_uniform_(m.proj.weight)
            elif isinstance(m, MLP):
                for fc in (m.fc1, m.fc2):
                    nn.init.xavier_uniform_(fc.weight)
                    nn.init.normal_(fc.bias, std=1e-6)
        dense = [self.patch_embed, self.head]
        dense += [m for m in self.pre_logits.modules() if isinstance(m, nn.Linear)]
        dense += [m.router.gate for m in self.modules() if isinstance(m, VMoEMLP)]
        for m in dense:
            std = (1.0 / m.weight[0].numel()) ** 0.5 / 0.87962566103423978  # fan_in = in * k * k
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The recipe's input for one sample, ``[T, C, H, W]``."""
        return (self.T, self.in_channels, *self.img_size)

    def _check_input(self, x: torch.Tensor) -> None:
        c, p = self.in_channels, self.patch_size
        if x.ndim not in (4, 5) or x.shape[-3] != c or x.shape[-1] % p or x.shape[-2] % p \
                or x.shape[-1] == 0 or x.shape[-2] == 0:
            raise ValueError(
                f"{self.name} accepts [T, B, {c}, H, W] event frames or [B, {c}, H, W] images "
                f"(H and W multiples of {p}; the recipe uses {self.img_size[0]}x{self.img_size[1]}"
                f"); got a tensor of shape {tuple(x.shape)}.")

    def _position(self, h: int, w: int) -> torch.Tensor:
        """The position embedding for an ``h x w`` patch grid (bicubic resize if not the recipe's)."""
        if (h, w) == self.grid:
            return self.pos_embed
        extra = 1 if self.cls_token is not None else 0
        grid = self.pos_embed[:, extra:].reshape(1, *self.grid, -1).permute(0, 3, 1, 2)  # [1, D, gh, gw]
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        grid = grid.flatten(2).transpose(1, 2)  # [1, D, h, w] -> [1, h*w, D]
        return torch.cat([self.pos_embed[:, :extra], grid], dim=1)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        self._check_input(x)
        x = self.patch_embed(self.fold(x))  # [B, C', H, W] -> [B, D, H/p, W/p]
        h, w = x.shape[-2:]
        tokens = x.flatten(2).transpose(1, 2)  # [B, D, h, w] -> [B, N, D], raster order
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)  # [B, 1+N, D]
        tokens = tokens + self._position(h, w)
        aux = tokens.new_zeros(())
        metrics: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            tokens, block_metrics = block(tokens)
            block_aux, block_metrics = split_aux(block_metrics)
            if block_aux is not None:
                aux = aux + block_aux
            metrics.update({f"blocks.{i}.{k}": v for k, v in block_metrics.items()})
        tokens = self.norm(tokens)
        pooled = tokens[:, 0] if self.cls_token is not None else tokens.mean(dim=1)  # [B, D]
        return ModelOutput(self.head(self.pre_logits(pooled)), aux, metrics)  # [B, D] -> [B, K]


def _head_bias(value: float | str, num_classes: int) -> float:
    """``head_bias_init``: a number, or ``"-log(K)"`` (vmoe's ``-math.log(num_classes)``)."""
    if isinstance(value, str):
        if value.replace(" ", "") != "-log(K)":
            raise ValueError(f"head_bias_init must be a number or '-log(K)' (vmoe's bias "
                             f"-log(num_classes)), got {value!r}")
        return -math.log(num_classes)
    return float(value)
