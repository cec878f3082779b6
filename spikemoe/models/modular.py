"""Modular Networks (Kirsch, Kunze, Barber, NeurIPS 2018, arXiv 1811.05249; reference code
louiskirsch/libmodular ``cifar10.py``): registered ``modular_*`` factories, each with a dense
twin of equal module compute (``*_dense``) and a noisy top-k twin without EM (``*_topk``).

Conv net (the reference CIFAR-10 net): 4 x [modular 3x3 conv (M = 5 modules of 8 filters,
K = 1, SAME padding, bias) -> 2x2 max-pool (SAME) -> ReLU], flatten, dense head. Each layer's
controller is one dense layer on the flattened layer input (reference ``modular_layer``).

    modular_cifar    [B, 3, 32, 32] images (T = 1)
    modular_digits   digits-dvs [T = 4, B, 2, 32, 32] event frames, averaged over T
                     (``frames="mean"``: the reference net has no time axis), then the same net

Byte LM (``modular_lm_small``; the paper's Penn-Treebank word-level sizes could not be read,
so these are chosen here, at the size of ``causal_transformer_lm_small``'s width):
``[B, N = 128]`` byte ids -> Embedding(256, 128) -> h = x + CausalSelfAttention(RMSNorm(x))
(4 heads, rotary; ``layers/causal_transformer.py``) -> h + ModularMLP(RMSNorm(h)) (M = 8
SwiGLU experts of hidden 128, K = 2, a choice per token: P = N) -> RMSNorm -> head [B, N, 256].

Equal compute. ``*_dense``: one module of K x the module width in each modular layer (8 filters
for K = 1; a SwiGLU of hidden 256 for the LM) and no controller: its module MACs per example
equal the EM model's chosen-module MACs (the controllers' dense layers are the overhead of
routing). ``*_topk``: the same modules and an M-way noisy top-k gate (``moe/modular_layer.py``),
its balancing loss off (``balance_weight=0``).

Every factory accepts ``index=`` in training (the EM trainer passes it to every model that
declares ``e_step_every``; the twins ignore it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..contract import AUX_LOSS, ModelOutput, SpikeMoEModel, split_aux
from ..layers.causal_transformer import CausalSelfAttention, RMSNorm, SwiGLU
from ..moe.modular_em import ModularEM, controller_loss
from ..moe.modular_layer import ModularLayer, Routing
from .registry import check_int, check_overrides, register_model

__all__ = ["CONTROLLER_KINDS", "ModularConvNet", "ModularLM", "RoutedModel", "Single"]

CONTROLLER_KINDS = ("em", "topk", "dense")


class Single(nn.Module):
    """One module where a twin has a modular layer: ``(rows, features, routing) ->
    (module(rows), {})``; no controller, no record."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, rows: torch.Tensor, features: torch.Tensor, routing: Routing):
        return self.module(rows), {}


class RoutedModel(SpikeMoEModel):
    """A model whose forward runs under a ``Routing`` context: ``route(x, routing) ->
    (logits, metrics)``. ``forward(x, index=None)`` adds the modular layers' auxiliary losses
    and, in an EM M-step, the controllers' cross-entropy to the stored choices."""

    targets_per_example: int = 1

    @property
    def sparse_updates(self) -> bool:
        """Only the chosen modules of a modular layer get gradients (the dense twin has none)."""
        return any(isinstance(m, ModularLayer) for m in self.modules())

    def routing_for(self, index: torch.Tensor | None) -> Routing:
        return Routing("mode")

    def route(self, x: torch.Tensor, routing: Routing):
        raise NotImplementedError

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> ModelOutput:
        routing = self.routing_for(index)
        logits, metrics = self.route(x, routing)
        aux, metrics = split_aux(metrics)
        aux = logits.new_zeros((), dtype=torch.float32) if aux is None else aux
        if routing.mode == "stored":
            aux = aux + controller_loss(routing.records, self.targets_per_example)
        return ModelOutput(logits, aux, metrics)


def _gather(parts: list[tuple[str, dict]]) -> dict[str, torch.Tensor]:
    """Prefix each layer's metrics with its name; sum the auxiliary losses under AUX_LOSS."""
    out: dict[str, torch.Tensor] = {}
    auxes = []
    for name, metrics in parts:
        aux, rest = split_aux(metrics)
        if aux is not None:
            auxes.append(aux)
        out.update({f"{name}.{k}": v.detach() for k, v in rest.items()})
    if auxes:
        out[AUX_LOSS] = sum(auxes[1:], auxes[0])
    return out


def _unit(kind: str, make, num_modules: int, k: int, features: int, positions: int,
          noise_std: float, balance_weight: float, dense_module) -> nn.Module:
    if kind == "dense":
        return Single(dense_module)
    return ModularLayer([make() for _ in range(num_modules)], features, k, positions,
                        controller=kind, noise_std=noise_std, balance_weight=balance_weight)


class ModularConvNet(RoutedModel):
    """The reference CIFAR-10 modular conv net (module docstring).

    Args:
        name: registry name (messages).  in_channels, img_size, T, num_classes: the recipe.
        controller: "em" | "topk" | "dense" (``CONTROLLER_KINDS``).
        layers: modular conv layers (4).  filters: per module (8).
        num_modules: M (5).  k: K (1).
        frames: how ``[T, B, C, H, W]`` frames become one image: "mean" over T (the
            reference net has no time axis; a choice of this package) or "sum".
        noise_std, balance_weight: top-k gate (``ModularLayer``).
    """

    def __init__(self, *, name: str, in_channels: int, img_size: tuple[int, int], T: int,
                 num_classes: int, controller: str, layers: int, filters: int,
                 num_modules: int, k: int, frames: str, noise_std: float,
                 balance_weight: float) -> None:
        super().__init__()
        if controller not in CONTROLLER_KINDS:
            raise ValueError(f"{name}: model.controller must be one of {CONTROLLER_KINDS}, "
                             f"got {controller!r}")
        if frames not in ("mean", "sum"):
            raise ValueError(f"{name}: model.frames must be 'mean' or 'sum', got {frames!r}")
        for key, value in (("in_channels", in_channels), ("T", T), ("layers", layers),
                           ("filters", filters), ("num_modules", num_modules), ("k", k)):
            check_int(name, key, value, 1)
        self.name, self.in_channels, self.img_size = name, in_channels, tuple(img_size)
        self.T, self.num_classes, self.frames = T, num_classes, frames
        self.controller = controller
        units, c, (h, w) = [], in_channels, self.img_size
        for _ in range(layers):
            out = filters * k if controller == "dense" else filters
            units.append(_unit(controller, lambda c=c: nn.Conv2d(c, filters, 3, padding=1),
                               num_modules, k, c * h * w, 1, noise_std, balance_weight,
                               nn.Conv2d(c, out, 3, padding=1)))
            c, h, w = out, -(-h // 2), -(-w // 2)  # SAME 2x2 max-pool: ceil(H / 2)
        self.layers = nn.ModuleList(units)
        self.head = nn.Linear(c * h * w, num_classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.T, self.in_channels, *self.img_size)

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, B, C, H, W]`` -> ``[B, C, H, W]`` (mean or sum over T); images as they are."""
        ok = x.dim() in (4, 5) and tuple(x.shape[-3:]) == (self.in_channels, *self.img_size)
        if not ok:
            c, (h, w) = self.in_channels, self.img_size
            raise ValueError(f"{self.name} accepts [T, B, {c}, {h}, {w}] frames or "
                             f"[B, {c}, {h}, {w}] images; got {tuple(x.shape)}.")
        if x.dim() == 5:
            x = x.float()
            return x.mean(dim=0) if self.frames == "mean" else x.sum(dim=0)
        return x

    def route(self, x: torch.Tensor, routing: Routing):
        h = self.to_image(x)  # [B, C, H, W]
        parts = []
        for i, unit in enumerate(self.layers):
            h, metrics = unit(h, h.flatten(1).unsqueeze(1), routing)  # features [B, 1, C*H*W]
            h = F.relu(F.max_pool2d(h, 2, ceil_mode=True))
            parts.append((f"layers.{i}", metrics))
        return self.head(h.flatten(1)), _gather(parts)


class ModularLM(RoutedModel):
    """Byte-level causal LM with one modular MLP (module docstring).

    Args:
        name: registry name.  seq_len: N (128), the choice positions per example.
        vocab: 256.  dim: D.  num_heads: attention heads.  expert_hidden: SwiGLU hidden of a
        module.  num_modules: M.  k: K.  controller: "em" | "topk" | "dense" (dense: one
        SwiGLU of hidden K * expert_hidden).  noise_std, balance_weight: top-k gate.
    """

    def __init__(self, *, name: str, seq_len: int, vocab: int, dim: int, num_heads: int,
                 expert_hidden: int, num_modules: int, k: int, controller: str,
                 noise_std: float, balance_weight: float) -> None:
        super().__init__()
        if controller not in CONTROLLER_KINDS:
            raise ValueError(f"{name}: model.controller must be one of {CONTROLLER_KINDS}, "
                             f"got {controller!r}")
        for key, value in (("seq_len", seq_len), ("dim", dim), ("expert_hidden", expert_hidden),
                           ("num_modules", num_modules), ("k", k)):
            check_int(name, key, value, 1)
        self.name, self.seq_len, self.num_classes, self.T = name, seq_len, vocab, seq_len
        self.targets_per_example = seq_len  # the task loss is a mean over N tokens
        self.embed = nn.Embedding(vocab, dim)
        self.norm1 = RMSNorm(dim, eps=1e-6)
        self.attn = CausalSelfAttention(dim, num_heads)
        self.norm2 = RMSNorm(dim, eps=1e-6)
        self.mlp = _unit(controller, lambda: SwiGLU(dim, expert_hidden), num_modules, k, dim,
                         seq_len, noise_std, balance_weight, SwiGLU(dim, expert_hidden * k))
        self.norm = RMSNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, vocab)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.seq_len,)

    def route(self, x: torch.Tensor, routing: Routing):
        if x.dim() != 2 or x.shape[1] != self.seq_len or x.is_floating_point():
            raise ValueError(f"{self.name} accepts [B, {self.seq_len}] int64 byte ids (its "
                             f"choices are per position); got {tuple(x.shape)} {x.dtype}. Set "
                             f"data.T={self.seq_len} or build the model with seq_len=N.")
        b, n = x.shape
        positions = torch.arange(n, device=x.device).expand(b, n)  # [B, N]
        h = self.embed(x)  # [B, N, D]
        h = h + self.attn(self.norm1(h), positions)
        u = self.norm2(h)
        y, metrics = self.mlp(u.reshape(b * n, -1), u, routing)  # rows [B*N, D]
        h = h + y.view(b, n, -1)  # [B*N, D] -> [B, N, D]
        return self.head(self.norm(h)), _gather([("mlp", metrics)])


class EMConvNet(ModularEM, ModularConvNet):
    """``ModularConvNet`` trained by generalised EM (``moe/modular_em.py``)."""


class EMLM(ModularEM, ModularLM):
    """``ModularLM`` trained by generalised EM (``moe/modular_em.py``)."""


_EM_STEP = dict(samples=10, e_step_every=10)  # the reference's sample_size and E-step period


def _build(cls, em_cls, name: str, defaults: dict, overrides: dict):
    hp = check_overrides(name, {**defaults, **_EM_STEP}, overrides)
    samples = check_int(name, "samples", hp.pop("samples"), 1, "E-step candidates S")
    every = check_int(name, "e_step_every", hp.pop("e_step_every"), 1, "steps per E-step")
    model = (em_cls if hp["controller"] == "em" else cls)(name=name, **hp)
    if hp["controller"] == "em":
        model.samples, model.e_step_every = samples, every
    return model


_CONV = dict(layers=4, filters=8, num_modules=5, k=1, frames="mean", noise_std=1.0,
             balance_weight=0.0)
CIFAR = dict(_CONV, in_channels=3, img_size=(32, 32), T=1, num_classes=10)
DIGITS = dict(_CONV, in_channels=2, img_size=(32, 32), T=4, num_classes=10)
TEST_CONV = dict(_CONV, in_channels=2, img_size=(8, 8), T=2, num_classes=10, layers=2,
                 filters=4, num_modules=3)
LM_SMALL = dict(seq_len=128, vocab=256, dim=128, num_heads=4, expert_hidden=128,
                num_modules=8, k=2, noise_std=1.0, balance_weight=0.0)
TEST_LM = dict(LM_SMALL, seq_len=8, dim=16, num_heads=2, expert_hidden=8, num_modules=4)


def _register(base: str, cls, em_cls, defaults: dict, doc: str) -> None:
    for suffix, kind in (("", "em"), ("_dense", "dense"), ("_topk", "topk")):
        register_model(_factory(cls, em_cls, base + suffix, {**defaults, "controller": kind},
                                f"{doc} ({kind}: {_KIND_DOC[kind]})"), name=base + suffix)


def _factory(cls, em_cls, name: str, defaults: dict, doc: str):
    def factory(**overrides):
        return _build(cls, em_cls, name, defaults, overrides)

    factory.__name__, factory.__doc__ = name, doc
    return factory


_KIND_DOC = {"em": "controller trained by generalised EM",
             "dense": "one module of K x the module width, no controller",
             "topk": "noisy top-k controller, no EM, balancing loss off"}

_register("modular_cifar", ModularConvNet, EMConvNet, CIFAR,
          "Reference CIFAR-10 modular net: 4 modular 3x3 conv layers, M=5 of 8 filters, K=1")
_register("modular_digits", ModularConvNet, EMConvNet, DIGITS,
          "digits-dvs frames averaged over T=4, then the reference CIFAR-10 modular net")
_register("test_modular", ModularConvNet, EMConvNet, TEST_CONV,
          "Tiny modular conv net for tests: 2 layers, M=3 of 4 filters, 2x8x8 frames, T=2")
_register("modular_lm_small", ModularLM, EMLM, LM_SMALL,
          "Byte LM: embedding, causal attention, modular SwiGLU MLP (M=8, K=2 per token)")
_register("test_modular_lm", ModularLM, EMLM, TEST_LM,
          "Tiny modular byte LM for tests: N=8, width 16, M=4 experts, K=2")
