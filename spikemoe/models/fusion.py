"""Two-view digit classifiers: spiking events + intensity image, fused by a gradient-sensitive
gate (``moe/fusion.py``; Shan et al., ICASSP 2025, arXiv 2501.08057), against concatenation and
each view alone, all trained by the same trainer on digits-dvs ``views="events+image"``.

    events [T, B, 2, 32, 32] -> SpikingPatchSplit (Spikformer SPS, D/8..D, 4 pools) -> mean over
                                T and the 2x2 tokens (firing rates)              -> LN -> [B, D]
    image  [B, 1, 32, 32]    -> the same conv widths with ReLU, one step, 4 pools, a residual
                                conv (the SPS's RPE) -> mean over 2x2             -> LN -> [B, D]
    fusion  gate: sum_v w_v x_v [B, D]   concat: [x_events, x_image] [B, 2D]   single: x_v
    shared  Linear -> GELU -> Linear -> GELU (width H)      head  Linear(H, classes)

Where the paper is silent (it fuses speech features once, at the input): the views are fused
after their own encoders, because an event stack and an image share no input space; each
view's features are layer-normalised (``view_norm``) so that a weight means trust, not scale
(a firing rate and a ReLU mean differ in size); the shared layers are an ANN MLP (the fused
features are real-valued). Concatenation widens the first shared layer to 2D inputs; its
width H is lowered so that the model has the gate model's parameter count (``_matched_hidden``).

``test_view`` (a constructor switch, any mode): 'both'; a view's name (the other view is
dropped: weight 0, its encoder not run; the logits equal the single-view path bit for bit);
'<view>+noise_<other>' (the other view's input is replaced by noise: each sample's own values
shuffled over positions and time, seeded by ``noise_seed``: same intensity histogram or event
count, no digit).

``measure_epoch`` (the conflict the paper motivates): on a held-out batch, the loss of each
view alone (the ``test_view`` path, plain cross-entropy), its gradient on the shared layers
(MLP and head), and the cosine between the two views' flattened gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn

from ..contract import ModelOutput, SpikeMoEModel
from ..layers.patch_split import PAPER_POOLS, SpikingPatchSplit
from ..moe.fusion import DEFAULT_STAGES, GradientSensitiveFusion, StagedViewDropout
from .registry import check_overrides, register_model

__all__ = ["FUSIONS", "FusionClassifier", "ImageEncoder", "SpikingEventEncoder",
           "ViewClassifier", "shuffle_noise"]

FUSIONS = ("gate", "concat", "single")


class SpikingEventEncoder(nn.Module):
    """``[T, B, C, H, W]`` frames -> ``[B, D]``: SPS, then the mean over T and tokens."""

    def __init__(self, in_channels: int, dim: int, backend: str = "auto") -> None:
        super().__init__()
        self.in_channels = in_channels
        self.stem = SpikingPatchSplit(in_channels, dim, PAPER_POOLS["dvs"], backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[2] != self.in_channels:
            raise ValueError(f"the events view takes [T, B, {self.in_channels}, H, W] frames, got "
                             f"{tuple(x.shape)}")
        return self.stem(x).mean(dim=(0, 3, 4))  # [T, B, D, h, w] -> [B, D]


class ImageEncoder(nn.Module):
    """``[B, C, H, W]`` -> ``[B, D]``: conv-BN-ReLU-maxpool at widths D/8..D, a residual conv."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        widths = [in_channels, dim // 8, dim // 4, dim // 2, dim]
        self.stages = nn.Sequential(*(nn.Sequential(
            nn.Conv2d(widths[i], widths[i + 1], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[i + 1]), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
            for i in range(4)))
        self.rpe = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"the image view takes [B, {self.in_channels}, H, W], got "
                             f"{tuple(x.shape)}")
        s = self.stages(x)  # [B, C, H, W] -> [B, D, H/16, W/16]
        return (s + self.rpe(s)).mean(dim=(2, 3))  # [B, D, h, w] -> [B, D]


def shuffle_noise(x: torch.Tensor, batch_axis: int, generator: torch.Generator) -> torch.Tensor:
    """Each sample's values shuffled over all its other axes (``test_view`` noise)."""
    xb = x.movedim(batch_axis, 0)
    flat = xb.reshape(xb.shape[0], -1)  # [B, ...] -> [B, N]
    order = torch.rand(flat.shape, generator=generator, device=x.device).argsort(dim=1)
    return flat.gather(1, order).reshape(xb.shape).movedim(0, batch_axis)


class ViewClassifier(SpikeMoEModel):
    """Encoders per view -> fusion -> shared MLP -> head (module docstring).

    Args:
        encoders: ``{view: module -> [B, D]}`` in view order; frames (5-d inputs) are time-major.
        dim: D. hidden: H. num_classes, T: declared facts (T: frames of the events view).
        fusion: 'gate' | 'concat' | 'single' (one view).
        gradient_sensitive, sensitivity, agreement_momentum: the gate's (``moe/fusion.py``).
        view_dropout: stages ``((first_epoch, probabilities), ...)`` or None (off); with
            'concat' a dropped view's features are zero.
        samples_per_epoch: for the dropout stages (digits-dvs train split: 1442).
        test_view: 'both', a view name, or '<view>+noise_<other>' (module docstring).
        noise_seed: seed of the test-time noise (the same noise for the same batch shape).
        view_norm: LayerNorm on each view's features before fusion (module docstring).
    """

    def __init__(self, *, encoders: dict[str, nn.Module], dim: int, hidden: int,
                 num_classes: int, T: int, fusion: str = "gate", gradient_sensitive: bool = True,
                 sensitivity: float = 1.0, agreement_momentum: float = 0.9,
                 view_dropout=None, samples_per_epoch: int = 1442, test_view: str = "both",
                 noise_seed: int = 0, view_norm: bool = True, name: str = "fusion") -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"{name}: fusion must be one of {FUSIONS}, got {fusion!r}")
        views = list(encoders)
        if (fusion == "single") != (len(views) == 1):
            raise ValueError(f"{name}: fusion='single' takes exactly one view and 'gate'/'concat' "
                             f"two or more, got fusion={fusion!r} with views {views}")
        self.name, self.views, self.fusion_kind = name, views, fusion
        self.num_classes, self.T, self.input_shape = num_classes, T, None  # inputs are dicts
        self.noise_seed = int(noise_seed)
        self.encoders = nn.ModuleDict(encoders)
        self.norms = nn.ModuleDict({v: nn.LayerNorm(dim) if view_norm else nn.Identity()
                                    for v in views})
        self.fusion = (GradientSensitiveFusion(len(views), dim, gradient_sensitive=gradient_sensitive,
                                               sensitivity=sensitivity,
                                               agreement_momentum=agreement_momentum)
                       if fusion == "gate" else None)
        self.view_dropout = (StagedViewDropout(len(views), view_dropout, samples_per_epoch)
                             if view_dropout is not None and fusion != "single" else None)
        width = dim * len(views) if fusion == "concat" else dim
        self.shared = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                    nn.GELU())
        self.head = nn.Linear(hidden, num_classes)
        self.test_view = test_view

    @property
    def test_view(self) -> str:
        return self._test_view

    @test_view.setter
    def test_view(self, value: str) -> None:
        allowed = ["both", *self.views] + [f"{a}+noise_{b}" for a in self.views
                                           for b in self.views if a != b]
        if value not in allowed:
            raise ValueError(f"{self.name}: test_view must be one of {allowed}, got {value!r}")
        self._test_view = value

    def _inputs(self, x) -> dict[str, torch.Tensor]:
        if isinstance(x, torch.Tensor) and len(self.views) == 1:
            return {self.views[0]: x}
        if not isinstance(x, dict) or not set(self.views) <= set(x):
            found = sorted(x) if isinstance(x, dict) else f"a {type(x).__name__}"
            raise ValueError(f"{self.name} takes a dict with the views {self.views} (digits-dvs "
                             f"with data.views=events+image: events [T, B, 2, H, W], image "
                             f"[B, 1, H, W]); got {found}")
        return x

    def forward(self, x) -> ModelOutput:
        functional.reset_net(self)  # state is reset by structure, never by the caller
        inputs = self._inputs(x)
        tv = self.test_view
        noisy = tv.split("+noise_")[1] if "+noise_" in tv else None
        feats: list[torch.Tensor | None] = []
        for v in self.views:
            if tv in self.views and v != tv:
                feats.append(None)  # dropped at test time: weight 0, encoder not run
                continue
            xv = inputs[v]
            if v == noisy:
                g = torch.Generator(device=xv.device).manual_seed(self.noise_seed)
                xv = shuffle_noise(xv, 1 if xv.ndim == 5 else 0, g)
            feats.append(self.norms[v](self.encoders[v](xv)))
        ref = next(f for f in feats if f is not None)
        B = ref.shape[0]
        keep = torch.tensor([f is not None for f in feats], device=ref.device).expand(B, -1)
        metrics: dict[str, torch.Tensor] = {}
        if self.view_dropout is not None:
            keep = keep & self.view_dropout(B, ref.device)  # [B, V]
            metrics["fusion.kept"] = keep.float().mean(0)
        if self.fusion_kind == "single":
            z = ref
        elif self.fusion_kind == "concat":  # a dropped view's features are zero
            z = torch.cat([torch.where(keep[:, i, None], f, torch.zeros_like(f))
                           if f is not None else torch.zeros_like(ref)
                           for i, f in enumerate(feats)], 1)  # V x [B, D] -> [B, V D]
        else:
            z, fused = self.fusion(feats, keep)
            metrics.update({f"fusion.{k}": v for k, v in fused.items()})
        logits = self.head(self.shared(z))
        return ModelOutput(logits, logits.new_zeros(()), metrics)


class FusionClassifier(ViewClassifier):
    """A ``ViewClassifier`` of two or more views that measures their gradient conflict."""

    def measure_epoch(self, x, y: torch.Tensor) -> dict[str, float]:
        """Each view alone (eval mode, ``test_view=v``): cross-entropy on ``(x, y)``, its
        gradient on the shared MLP and head (``torch.autograd.grad``: no ``.grad`` is
        touched), their norms, the view's top-1; ``grad_cosine``: the cosine of the first two
        views' flattened gradients (more views: also ``grad_cosine.<a>.<b>`` per pair, and
        ``grad_cosine`` their mean). Mode, ``test_view``, buffers and the torch RNG are
        restored; neurons are reset."""
        params = [p for p in (*self.shared.parameters(), *self.head.parameters())
                  if p.requires_grad]
        state = (self.training, self.test_view, torch.get_rng_state(),
                 [b.clone() for b in self.buffers()])
        cuda = params[0].device.type == "cuda"
        cuda_rng = torch.cuda.get_rng_state(params[0].device) if cuda else None
        out: dict[str, float] = {}
        grads = {}
        try:
            self.eval()
            with torch.enable_grad():
                for v in self.views:
                    self.test_view = v
                    logits = self(x).logits.float()
                    g = torch.autograd.grad(F.cross_entropy(logits, y), params)
                    grads[v] = torch.cat([t.reshape(-1) for t in g])
                    out[f"grad_norm.{v}"] = grads[v].norm().item()
                    out[f"top1.{v}_only"] = 100 * (logits.argmax(1) == y).float().mean().item()
        finally:
            training, self.test_view, rng, buffers = state
            self.train(training)
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, params[0].device)
            with torch.no_grad():
                for b, saved in zip(self.buffers(), buffers):
                    b.copy_(saved)
            functional.reset_net(self)
        pairs = [(a, b) for i, a in enumerate(self.views) for b in self.views[i + 1:]]
        cos = {f"grad_cosine.{a}.{b}": F.cosine_similarity(grads[a], grads[b], dim=0).item()
               for a, b in pairs}
        out["grad_cosine"] = sum(cos.values()) / len(cos)
        if len(pairs) > 1:
            out.update(cos)
        return out


def _matched_hidden(dim: int, hidden: int, views: int, classes: int) -> int:
    """The shared width H' of the concat model with the gate model's parameter count: the gate
    has ``V (D + 1) + V`` gate parameters and a first layer of D inputs; concat none and V D."""
    def shared(d_in: int, h: int) -> int:
        return d_in * h + h + h * h + h + h * classes + classes

    target = shared(dim, hidden) + views * (dim + 1) + views
    return min(range(1, 2 * hidden), key=lambda h: abs(shared(views * dim, h) - target))


# digits-dvs recipe: T=4 frames of 2x32x32 events and a 1x32x32 image, 10 classes.
DIGITS = dict(dim=64, hidden=128, num_classes=10, T=4, gradient_sensitive=True, sensitivity=1.0,
              agreement_momentum=0.9, view_dropout=None, samples_per_epoch=1442,
              test_view="both", noise_seed=0, view_norm=True, backend="auto")
TEST = dict(DIGITS, dim=16, hidden=32, T=2)  # test_* twins: same inputs, narrow


def _build(name: str, defaults: dict, overrides: dict, views: tuple[str, ...], fusion: str
           ) -> ViewClassifier:
    kw = check_overrides(name, defaults, overrides)
    backend, dim = kw.pop("backend"), kw["dim"]
    make = {"events": lambda: SpikingEventEncoder(2, dim, backend),
            "image": lambda: ImageEncoder(1, dim)}
    if fusion == "concat" and "hidden" not in overrides:
        kw["hidden"] = _matched_hidden(dim, kw["hidden"], len(views), kw["num_classes"])
    cls = FusionClassifier if len(views) > 1 else ViewClassifier
    return cls(encoders={v: make[v]() for v in views}, fusion=fusion, name=name, **kw)


def _family(suffix: str, views: tuple[str, ...], fusion: str, extra: dict, doc: str) -> None:
    for prefix, base in (("fusion_", DIGITS), ("test_fusion_", TEST)):
        name = f"{prefix}{suffix}" if prefix == "test_fusion_" else f"{prefix}{suffix}_digits"

        def factory(_name=name, _base=base, **overrides):
            return _build(_name, {**_base, **extra}, overrides, views, fusion)

        factory.__name__, factory.__doc__ = name, doc
        register_model(factory, name=name)


_family("gate", ("events", "image"), "gate", {},
        "Events (spiking) + image (ANN) fused by the gradient-sensitive gate; D 64, H 128.")
_family("gate_dropout", ("events", "image"), "gate", {"view_dropout": DEFAULT_STAGES},
        "The gate model with multi-stage view dropout (moe/fusion.py DEFAULT_STAGES).")
_family("concat", ("events", "image"), "concat", {},
        "Events + image concatenated; shared width lowered to the gate model's parameters.")
_family("events", ("events",), "single", {}, "The events view alone: spiking encoder + shared MLP.")
_family("image", ("image",), "single", {}, "The image view alone: ANN encoder + shared MLP.")
