"""Official checkpoints in: conversion of the official Spikformer / Spike-driven Transformer /
SpikingJelly 2.0 Spikformer state dicts, checked against independent forwards.

Nothing is downloaded. Each test writes the official key list and shapes itself (from
ZK-Zhou/spikformer {imagenet,cifar10,cifar10dvs}/model.py and BICLab/Spike-Driven-Transformer
module/{sps,ms_conv}.py), fills it with random weights and real BN statistics, converts it,
and compares our logits with a forward of the official architecture written here from its
equations: plain torch ops and a hand-written multi-step LIF (tau 2, decay_input, V_th 1,
hard reset to 0; the attention LIF at V_th 0.5). Small sizes: width 32, 2 blocks, 2 heads,
T=2, batch 2, in eval mode (BatchNorm uses the running statistics).
"""
from __future__ import annotations

import argparse
import importlib.util

import pytest
import torch
import torch.nn.functional as F

import spikemoe
from spikemoe.cli.convert import add_convert_parser
from spikemoe.models.official_weights import (
    ConversionError,
    ShapeMismatchError,
    convert_state_dict,
    infer_hyperparameters,
    load_official_checkpoint,
)
from spikemoe.models.weights_io import (
    load_checkpoint_into,
    load_weights,
    read_metadata,
    save_weights,
)

needs_safetensors = pytest.mark.skipif(
    importlib.util.find_spec("safetensors") is None,
    reason="the 'safetensors' package is not installed (pip install safetensors)")

D, DEPTH, HEADS, HIDDEN, CLASSES, T, B, C_IN = 32, 2, 2, 128, 10, 2, 2, 2
ALL = (True, True, True, True)
CIFAR = (False, False, True, True)


# ---------------------------------------------------------------- the official equations


def lif(x: torch.Tensor, v_th: float = 1.0) -> torch.Tensor:
    """Multi-step LIF over dim 0: H = V + (X - V) / 2; S = H >= V_th; V = H (1 - S)."""
    v, out = torch.zeros_like(x[0]), []
    for xt in x:
        h = v + (xt - v) / 2.0
        s = (h >= v_th).to(x.dtype)
        v = h * (1.0 - s)
        out.append(s)
    return torch.stack(out)


def bn(sd: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode BatchNorm over dim 1 of ``[TB, C, ...]``."""
    return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"],
                        sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], training=False, eps=1e-5)


def project(sd: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """The official 1x1 projection on channel-first tokens ``[TB, C, N]``, with the op the
    weight's shape names: Conv1d [o, i, 1], Conv2d [o, i, 1, 1] or Linear [o, i]."""
    w, b = sd[f"{prefix}.weight"], sd.get(f"{prefix}.bias")
    if w.ndim == 3:
        return F.conv1d(x, w, b)
    if w.ndim == 4:
        return F.conv2d(x.unsqueeze(-1), w, b).squeeze(-1)
    return F.linear(x.transpose(1, 2), w, b).transpose(1, 2)  # Linear on [TB, N, C]


def per_step(f, x: torch.Tensor) -> torch.Tensor:
    """Apply a [TB, ...] op to ``[T, B, ...]``."""
    y = f(x.flatten(0, 1))
    return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])


def pool(x: torch.Tensor) -> torch.Tensor:
    return per_step(lambda t: F.max_pool2d(t, 3, stride=2, padding=1), x)


def conv_bn(sd, conv, bn_prefix, x):
    return per_step(lambda t: bn(sd, bn_prefix, F.conv2d(t, sd[conv], padding=1)), x)


def tokens_bn(sd, layer, bn_prefix, x):
    return per_step(lambda t: bn(sd, bn_prefix, project(sd, layer, t)), x)  # [T, B, C', N]


def spikformer_reference(sd, x, *, layer, pools, scale, heads=HEADS):
    """ZK-Zhou/spikformer: SPS (pool after each LIF), blocks x + SSA(x), x + MLP(x), head on
    the token and time mean. ``x [T, B, C, H, W]`` -> logits ``[B, K]``."""
    h = x
    for i, s in enumerate(["", "1", "2", "3"]):
        h = lif(conv_bn(sd, f"patch_embed.proj_conv{s}.weight", f"patch_embed.proj_bn{s}", h))
        if pools[i]:
            h = pool(h)
    h = h + lif(conv_bn(sd, "patch_embed.rpe_conv.weight", "patch_embed.rpe_bn", h))
    x = h.flatten(3)  # [T, B, C, N]
    t, b, c, n = x.shape
    depth = len({k.split(".")[1] for k in sd if k.startswith("block.")})
    for blk in range(depth):
        a = f"block.{blk}.attn"

        def heads_of(name, a=a, x=x):  # [T, B, C, N] -> [T, B, h, N, d]
            s = lif(tokens_bn(sd, f"{a}.{name}_{layer}", f"{a}.{name}_bn", x))
            return s.transpose(-1, -2).reshape(t, b, n, heads, c // heads).permute(0, 1, 3, 2, 4)

        q, k, v = heads_of("q"), heads_of("k"), heads_of("v")
        o = q @ (k.transpose(-2, -1) @ v) * scale  # [T, B, h, N, d]
        o = lif(o.transpose(3, 4).reshape(t, b, c, n), 0.5)
        x = x + lif(tokens_bn(sd, f"{a}.proj_{layer}", f"{a}.proj_bn", o))
        m = f"block.{blk}.mlp"
        y = lif(tokens_bn(sd, f"{m}.fc1_{layer}", f"{m}.fc1_bn", x))
        x = x + lif(tokens_bn(sd, f"{m}.fc2_{layer}", f"{m}.fc2_bn", y))
    return F.linear(x.mean(3).mean(0), sd["head.weight"], sd["head.bias"])


def spike_driven_reference(sd, x, *, pools):
    """BICLab Spike-Driven-Transformer: MS_SPS (stages 1-3 pool after the LIF, stage 4 before
    it, membrane kept), membrane-shortcut blocks with SDSA, head LIF on the token mean."""
    h = x
    for i, s in enumerate(["", "1", "2"]):
        h = lif(conv_bn(sd, f"patch_embed.proj_conv{s}.weight", f"patch_embed.proj_bn{s}", h))
        if pools[i]:
            h = pool(h)
    u = conv_bn(sd, "patch_embed.proj_conv3.weight", "patch_embed.proj_bn3", h)
    if pools[3]:
        u = pool(u)
    u = u + conv_bn(sd, "patch_embed.rpe_conv.weight", "patch_embed.rpe_bn", lif(u))
    x = u.flatten(3)  # [T, B, C, N] membrane
    t, b, c, n = x.shape
    depth = len({k.split(".")[1] for k in sd if k.startswith("block.")})
    for blk in range(depth):
        a, m = f"block.{blk}.attn", f"block.{blk}.mlp"
        s = lif(x)

        def heads_of(name, a=a, s=s):  # [T, B, C, N] -> [T, B, h, N, d]
            y = lif(tokens_bn(sd, f"{a}.{name}_conv", f"{a}.{name}_bn", s))
            return y.transpose(-1, -2).reshape(t, b, n, HEADS, c // HEADS).permute(0, 1, 3, 2, 4)

        q, k, v = heads_of("q"), heads_of("k"), heads_of("v")
        kv = lif((k * v).sum(dim=-2, keepdim=True), 0.5)  # [T, B, h, 1, d]
        o = (q * kv).transpose(3, 4).reshape(t, b, c, n)
        x = x + tokens_bn(sd, f"{a}.proj_conv", f"{a}.proj_bn", o)
        y = lif(tokens_bn(sd, f"{m}.fc1_conv", f"{m}.fc1_bn", lif(x)))
        x = x + tokens_bn(sd, f"{m}.fc2_conv", f"{m}.fc2_bn", y)
    return F.linear(lif(x.mean(3)), sd["head.weight"], sd["head.bias"]).mean(0)


# ---------------------------------------------------------------- official key lists


def _bn(sd, prefix, c, g):
    sd[f"{prefix}.weight"] = 0.5 + torch.rand(c, generator=g)
    sd[f"{prefix}.bias"] = 0.5 * torch.randn(c, generator=g)
    sd[f"{prefix}.running_mean"] = 0.3 * torch.randn(c, generator=g)
    sd[f"{prefix}.running_var"] = 0.5 + torch.rand(c, generator=g)
    sd[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)


def _w(g, *shape):
    return torch.randn(*shape, generator=g) * (2.0 / (shape[1] * (shape[2] if len(shape) > 2 else 1))) ** 0.5


def official_sps(sd, g, in_channels=C_IN, dim=D):
    widths = [in_channels, dim // 8, dim // 4, dim // 2, dim]
    for i, s in enumerate(["", "1", "2", "3"]):
        sd[f"patch_embed.proj_conv{s}.weight"] = _w(g, widths[i + 1], widths[i], 3, 3)
        _bn(sd, f"patch_embed.proj_bn{s}", widths[i + 1], g)
    sd["patch_embed.rpe_conv.weight"] = _w(g, dim, dim, 3, 3)
    _bn(sd, "patch_embed.rpe_bn", dim, g)


def official_spikformer(variant: str, seed: int = 0, dim: int = D) -> dict:
    """The keys and shapes of ZK-Zhou/spikformer ``{variant}/model.py`` (depth 2)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    official_sps(sd, g, dim=dim)
    k1 = {"imagenet": (1,), "cifar10dvs": (1,), "cifar10": ()}[variant]  # Conv1d vs Linear
    mlp_k = {"imagenet": (1, 1), "cifar10dvs": (1,), "cifar10": ()}[variant]
    layer = "linear" if variant == "cifar10" else "conv"
    for blk in range(DEPTH):
        p = f"block.{blk}"
        for norm in ("norm1", "norm2"):  # defined, never called
            sd[f"{p}.{norm}.weight"], sd[f"{p}.{norm}.bias"] = torch.ones(dim), torch.zeros(dim)
        for n in "qkv":
            sd[f"{p}.attn.{n}_{layer}.weight"] = _w(g, dim, dim, *k1)
            if variant == "cifar10":  # nn.Linear(dim, dim): with bias
                sd[f"{p}.attn.{n}_{layer}.bias"] = 0.1 * torch.randn(dim, generator=g)
            _bn(sd, f"{p}.attn.{n}_bn", dim, g)
        sd[f"{p}.attn.proj_{layer}.weight"] = _w(g, dim, dim, *k1)
        sd[f"{p}.attn.proj_{layer}.bias"] = 0.1 * torch.randn(dim, generator=g)
        _bn(sd, f"{p}.attn.proj_bn", dim, g)
        for fc, (o, i) in (("fc1", (HIDDEN, dim)), ("fc2", (dim, HIDDEN))):
            sd[f"{p}.mlp.{fc}_{layer}.weight"] = _w(g, o, i, *mlp_k)
            sd[f"{p}.mlp.{fc}_{layer}.bias"] = 0.1 * torch.randn(o, generator=g)
            _bn(sd, f"{p}.mlp.{fc}_bn", o, g)
    if variant == "cifar10dvs":  # defined, never used in forward
        sd["pos_embed"] = torch.randn(1, 64, dim, generator=g)
        sd["norm.weight"], sd["norm.bias"] = torch.ones(dim), torch.zeros(dim)
    sd["head.weight"] = _w(g, CLASSES, dim)
    sd["head.bias"] = 0.1 * torch.randn(CLASSES, generator=g)
    return sd


def official_spike_driven(seed: int = 0) -> dict:
    """The keys and shapes of BICLab Spike-Driven-Transformer (``sdt``, spike_mode lif)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    official_sps(sd, g)
    for blk in range(DEPTH):
        p = f"block.{blk}"
        for n in "qkv":  # Conv2d(dim, dim, 1, bias=False)
            sd[f"{p}.attn.{n}_conv.weight"] = _w(g, D, D, 1, 1)
            _bn(sd, f"{p}.attn.{n}_bn", D, g)
        sd[f"{p}.attn.talking_heads.weight"] = _w(g, HEADS, HEADS, 1)  # never called
        sd[f"{p}.attn.proj_conv.weight"] = _w(g, D, D, 1, 1)
        sd[f"{p}.attn.proj_conv.bias"] = 0.1 * torch.randn(D, generator=g)
        _bn(sd, f"{p}.attn.proj_bn", D, g)
        for fc, (o, i) in (("fc1", (HIDDEN, D)), ("fc2", (D, HIDDEN))):
            sd[f"{p}.mlp.{fc}_conv.weight"] = _w(g, o, i, 1, 1)
            sd[f"{p}.mlp.{fc}_conv.bias"] = 0.1 * torch.randn(o, generator=g)
            _bn(sd, f"{p}.mlp.{fc}_bn", o, g)
    sd["head.weight"] = _w(g, CLASSES, D)
    sd["head.bias"] = 0.1 * torch.randn(CLASSES, generator=g)
    return sd


def small(name: str, **overrides):
    kw = dict(embed_dim=D, depth=DEPTH, num_heads=HEADS, mlp_hidden=HIDDEN, T=T, backend="torch")
    kw.update(overrides)
    return spikemoe.create_model(name, **kw).eval()


def frames(size: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, C_IN, size, size, generator=g) * 2.0  # event counts 0..2


def converted_logits(source, sd, model, x, **kw):
    state, report = convert_state_dict(source, sd, model, **kw)
    model.load_state_dict(state)
    with torch.no_grad():
        return model(x).logits, report


# ---------------------------------------------------------------- Spikformer


SPIKFORMER_VARIANTS = {
    # variant: (layer attribute, pools, SSA scale, input size, unused keys beyond norm1/norm2)
    "imagenet": ("conv", ALL, 0.125, 64, set()),
    "cifar10": ("linear", CIFAR, 0.125, 32, set()),
    "cifar10dvs": ("conv", ALL, 0.25, 64, {"pos_embed", "norm.weight", "norm.bias"}),
}


@pytest.mark.parametrize("variant", list(SPIKFORMER_VARIANTS))
def test_spikformer_logits_equal_the_official_equations(variant):
    layer, pools, scale, size, extra_unused = SPIKFORMER_VARIANTS[variant]
    sd = official_spikformer(variant)
    model = small("test_spikformer", img_size=(size, size), pools=list(pools), attn_scale=scale)
    x = frames(size)
    ours, report = converted_logits("spikformer", sd, model, x)
    with torch.no_grad():
        ref = spikformer_reference(sd, x, layer=layer, pools=pools, scale=scale)
    assert ref.std() > 0.1  # the network is not silent: logits vary across classes and samples
    assert (ours - ref).abs().max().item() <= 1e-5
    # keys: every target key mapped, except q/k/v biases the Conv1d variants do not have
    target = model.state_dict()
    zero = {f"blocks.{b}.attn.qkv.linear.bias" for b in range(DEPTH)} if layer == "conv" else set()
    assert set(report.zero_filled) == zero
    assert {m.target for m in report.mapped} == set(target) - zero
    assert report.missing == [] and report.differences == []
    norms = {f"block.{b}.{n}.{p}" for b in range(DEPTH) for n in ("norm1", "norm2")
             for p in ("weight", "bias")}
    assert set(report.unused) == norms | extra_unused
    assert "never calls" in report.unused["block.0.norm1.weight"]
    # fused q/k/v: one target key from the three official ones, in q, k, v order
    qkv = next(m for m in report.mapped if m.target == "blocks.1.attn.qkv.bn.running_var")
    assert qkv.sources == tuple(f"block.1.attn.{n}_bn.running_var" for n in "qkv")
    assert torch.equal(model.state_dict()["blocks.1.attn.qkv.bn.running_var"][D:2 * D],
                       sd["block.1.attn.k_bn.running_var"])


def test_spikformer_variant_differences_are_refused_with_the_fix():
    # the cifar10 code pools after stages 3-4 only and uses s=0.125; the dvs code s=0.25
    with pytest.raises(ConversionError, match=r"pools=\[False, False, True, True\]"):
        convert_state_dict("spikformer", official_spikformer("cifar10"), small(
            "test_spikformer", img_size=(32, 32), pools=list(ALL)))
    with pytest.raises(ConversionError, match="attn_scale=0.25"):
        convert_state_dict("spikformer", official_spikformer("cifar10dvs"), small(
            "test_spikformer", img_size=(64, 64), pools=list(ALL)))
    with pytest.raises(ConversionError, match="depth=2"):
        convert_state_dict("spikformer", official_spikformer("imagenet"), small(
            "test_spikformer", img_size=(64, 64), pools=list(ALL), depth=1))
    with pytest.raises(ConversionError, match=r"build a spikformer_\* model"):
        convert_state_dict("spikformer", official_spikformer("imagenet"), small("test_spike_driven"))
    with pytest.raises(ConversionError, match="SEMM twin"):
        convert_state_dict("spikformer", official_spikformer("imagenet"),
                           spikemoe.create_model("test_spikformer_semm"))


def test_shape_mismatch_names_both_keys_and_both_shapes():
    sd = official_spikformer("imagenet")
    model = small("test_spikformer", img_size=(64, 64), pools=list(ALL), embed_dim=64)
    with pytest.raises(ShapeMismatchError) as e:
        convert_state_dict("spikformer", sd, model)
    msg = str(e.value)
    # the first stem conv: official [4, 2, 3, 3] (D/8 = 4) vs ours [8, 2, 3, 3] (64/8)
    assert "patch_embed.proj_conv.weight (4, 2, 3, 3)" in msg
    assert "stem.stages.0.0.weight (8, 2, 3, 3)" in msg
    assert "embed_dim=32" in msg  # the size the checkpoint implies
    # a fused q/k/v mismatch lists the three parts
    sd2 = official_spikformer("imagenet")
    for n in "qkv":
        sd2[f"block.0.attn.{n}_conv.weight"] = torch.zeros(D, D + 1, 1)
    with pytest.raises(ShapeMismatchError) as e:
        convert_state_dict("spikformer", sd2, small("test_spikformer", img_size=(64, 64),
                                                    pools=list(ALL)))
    msg = str(e.value)
    assert "block.0.attn.q_conv.weight (32, 33, 1)" in msg and "block.0.attn.v_conv.weight" in msg
    assert "(as (96, 33))" in msg and "blocks.0.attn.qkv.linear.weight (96, 32)" in msg


def test_unknown_and_missing_keys_are_reported_and_refused_by_default():
    sd = official_spikformer("imagenet")
    sd["block.0.attn.gate.weight"] = torch.zeros(3)  # no counterpart anywhere
    del sd["block.1.mlp.fc2_bn.running_var"]
    model = small("test_spikformer", img_size=(64, 64), pools=list(ALL))
    with pytest.raises(ConversionError) as e:
        convert_state_dict("spikformer", sd, model)
    assert "block.0.attn.gate.weight" in str(e.value)
    assert "blocks.1.mlp.fc2.bn.running_var" in str(e.value)
    state, report = convert_state_dict("spikformer", sd, model, allow_mismatch=True)
    assert report.unused["block.0.attn.gate.weight"].startswith("no counterpart")
    assert report.missing == ["blocks.1.mlp.fc2.bn.running_var"]
    # a missing key keeps the model's own value, so the state still loads strictly
    assert torch.equal(state["blocks.1.mlp.fc2.bn.running_var"], torch.ones(D))
    model.load_state_dict(state)


def test_wrong_source_is_named():
    with pytest.raises(ConversionError, match="'spikingjelly' checkpoint"):
        convert_state_dict("spikformer", _spikingjelly_model()[0].state_dict(),
                           small("test_spikformer"))
    with pytest.raises(ConversionError, match="expected one of spikformer, spike_driven"):
        convert_state_dict("spikeformer", official_spikformer("imagenet"), small("test_spikformer"))


# ---------------------------------------------------------------- Spike-driven Transformer


def test_spike_driven_logits_equal_the_official_equations():
    # pooling_stat "0001": the official MS_SPS and ours pool at the same place (before the
    # stage-4 LIF); pooled stages 1-3 are the next test.
    pools = (False, False, False, True)
    sd = official_spike_driven()
    model = small("test_spike_driven", img_size=(16, 16), pools=list(pools))
    x = frames(16)
    ours, report = converted_logits("spike_driven", sd, model, x)
    with torch.no_grad():
        ref = spike_driven_reference(sd, x, pools=pools)
    assert ref.std() > 0.1
    assert (ours - ref).abs().max().item() <= 1e-5
    assert set(report.unused) == {f"block.{b}.attn.talking_heads.weight" for b in range(DEPTH)}
    assert "never calls" in report.unused["block.0.attn.talking_heads.weight"]
    assert len(report.mapped) == len(model.state_dict()) - DEPTH  # all but the q/k/v biases
    assert any("dvs_mode" in n for n in report.notes)


def test_spike_driven_pooled_stem_matches_or_is_refused():
    """Stages 1-3 of the official MS_SPS pool AFTER their LIF. A stem that pools them before
    it computes other spikes: the conversion must refuse it; one that pools after must match."""
    sd = official_spike_driven(seed=3)
    model = small("test_spike_driven", img_size=(64, 64), pools=list(ALL))
    before = any(isinstance(m, torch.nn.MaxPool2d) for m in model.stem.stages[0].modules())
    if before:
        with pytest.raises(ConversionError, match="stem pooling order"):
            convert_state_dict("spike_driven", sd, model)
        return
    x = frames(64)
    ours, _ = converted_logits("spike_driven", sd, model, x)
    with torch.no_grad():
        ref = spike_driven_reference(sd, x, pools=ALL)
    assert (ours - ref).abs().max().item() <= 1e-5


def test_spike_driven_plif_is_refused():
    sd = official_spike_driven()
    sd["block.0.attn.q_lif.w"] = torch.tensor(0.0)  # MultiStepParametricLIFNode's learned 1/tau
    with pytest.raises(ConversionError, match="plif"):
        convert_state_dict("spike_driven", sd, small("test_spike_driven", img_size=(16, 16),
                                                     pools=[False, False, False, True]))


# ---------------------------------------------------------------- SpikingJelly 2.0


def _spikingjelly_model(seed: int = 0):
    from spikingjelly.activation_based.model.spikformer import Spikformer

    torch.manual_seed(seed)
    sj = Spikformer(T=T, in_channels=C_IN, img_size_h=32, img_size_w=32, patch_size=4,
                    num_classes=CLASSES, embed_dims=D, num_heads=HEADS, mlp_ratio=HIDDEN / D,
                    depths=DEPTH)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # its init (trunc normal 0.02) would leave the network silent
        for p in sj.parameters():
            if p.ndim > 1:
                p.copy_(_w(g, *p.shape))
        for m in sj.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                sd = {}
                _bn(sd, "x", m.num_features, g)
                for k in ("weight", "bias", "running_mean", "running_var"):
                    getattr(m, k).copy_(sd[f"x.{k}"])
    return sj.eval(), small("test_spikformer", img_size=(32, 32), pools=list(CIFAR))


def test_spikingjelly_blocks_and_head_equal_ours_and_stem_order_is_reported():
    from spikingjelly.activation_based import functional

    sj, model = _spikingjelly_model()
    with pytest.raises(ConversionError, match="BEFORE each LIF"):  # the stems differ
        convert_state_dict("spikingjelly", sj.state_dict(), model)
    state, report = convert_state_dict("spikingjelly", sj.state_dict(), model, allow_mismatch=True)
    model.load_state_dict(state)
    assert report.unused == {} and report.missing == []
    zero = {f"blocks.{b}.{n}.linear.bias" for b in range(DEPTH)
            for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    assert set(report.zero_filled) == zero  # SpikingJelly's Conv1d layers have no bias
    assert len(report.mapped) == len(model.state_dict()) - len(zero)
    x = frames(32)
    with torch.no_grad():
        # where the architectures coincide: blocks and head, on SpikingJelly's own stem output
        functional.reset_net(sj)
        functional.reset_net(model)
        feats = sj.patch_embed(x)  # [T, B, D, 8, 8], an integer 0..2 spike sum
        theirs = feats
        for blk in sj.blocks:
            theirs = blk(theirs)
        theirs = sj.head(theirs.flatten(3).mean(-1)).mean(0)  # [T, B, K] -> [B, K]
        tokens = feats.flatten(3).transpose(2, 3)  # [T, B, D, H, W] -> [T, B, N, D]
        for blk in model.blocks:
            tokens, _ = blk(tokens, (8, 8))
        ours = model.head(tokens.mean(2)).mean(0)
        assert theirs.std() > 0.1
        assert (ours - theirs).abs().max().item() <= 1e-5
        # the stem's conv+BN stages are the same layers (the LIF/pool order is what differs)
        for i in range(4):
            w_in = model.stem.stages[i][0].in_channels
            probe = torch.randn(T, B, w_in, 8, 8)
            a = sj.patch_embed.stages[i].conv_bn.block[1](
                sj.patch_embed.stages[i].conv_bn.block[0](probe.flatten(0, 1)))
            assert torch.allclose(model.stem.stages[i](probe).flatten(0, 1), a, atol=1e-6)


# ---------------------------------------------------------------- files


def test_load_official_checkpoint_formats(tmp_path):
    sd = official_spikformer("imagenet")
    # timm's CheckpointSaver: DDP prefixes and argparse args next to the weights
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3,
                "args": argparse.Namespace(model="spikformer", T=4)}, tmp_path / "timm.pth.tar")
    torch.save({"model": sd, "epoch": 1}, tmp_path / "tv.pth")  # cifar10dvs/train.py
    torch.save(sd, tmp_path / "bare.pth")
    for name in ("timm.pth.tar", "tv.pth", "bare.pth"):
        loaded = load_official_checkpoint(tmp_path / name)
        assert loaded.keys() == sd.keys() and torch.equal(loaded["head.bias"], sd["head.bias"])
    assert infer_hyperparameters("spikformer", loaded) == dict(
        in_channels=C_IN, embed_dim=D, mlp_hidden=HIDDEN, num_classes=CLASSES, depth=DEPTH)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="cannot be read"):
        load_official_checkpoint(tmp_path / "junk.pth")
    torch.save({"epoch": 3}, tmp_path / "nothing.pth")
    with pytest.raises(ConversionError, match="'state_dict' / 'model'"):
        load_official_checkpoint(tmp_path / "nothing.pth")
    with pytest.raises(FileNotFoundError):
        load_official_checkpoint(tmp_path / "absent.pth")


@needs_safetensors
def test_safetensors_round_trip_and_errors(tmp_path):
    model = small("test_spikformer")
    path = save_weights(model, tmp_path / "w.safetensors", metadata={"spikemoe.model": "x"})
    loaded = load_weights(path)
    own = model.state_dict()
    assert loaded.keys() == own.keys()
    assert all(torch.equal(loaded[k], own[k]) and loaded[k].dtype == own[k].dtype for k in own)
    assert read_metadata(path) == {"spikemoe.model": "x"}
    fresh = small("test_spikformer")  # another initialisation: loading must overwrite it
    assert load_checkpoint_into(fresh, path) is None
    assert torch.equal(fresh.state_dict()["head.weight"], own["head.weight"])
    with pytest.raises(ValueError, match="not tensors"):
        save_weights({"a": torch.zeros(1), "step": 3}, tmp_path / "bad.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_weights(tmp_path / "junk.safetensors")
    # an official checkpoint exported as safetensors reads the same as its .pth
    sd = official_spikformer("imagenet")
    save_weights(sd, tmp_path / "official.safetensors")
    assert load_official_checkpoint(tmp_path / "official.safetensors").keys() == sd.keys()


def test_checkpoint_loading_converts_official_weights_on_the_fly(tmp_path):
    sd = official_spikformer("imagenet")
    torch.save({"state_dict": sd}, tmp_path / "official.pth.tar")
    model = small("test_spikformer", img_size=(64, 64), pools=list(ALL))
    report = load_checkpoint_into(model, tmp_path / "official.pth.tar")
    assert report.source == "spikformer" and report.variant == "spikformer imagenet/model.py"
    assert torch.equal(model.state_dict()["head.weight"], sd["head.weight"])
    with pytest.raises(ConversionError, match="pools"):  # refused, not loaded half-right
        load_checkpoint_into(small("test_spikformer"), tmp_path / "official.pth.tar")


def _convert_cli(argv):
    parser = argparse.ArgumentParser(prog="spikemoe")
    add_convert_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_convert_command_writes_a_checkpoint_evaluate_reads(tmp_path, capsys):
    from spikemoe.engine.checkpoint import load_checkpoint
    from spikemoe.engine.config import config_from_dict

    sd = official_spikformer("cifar10dvs")
    torch.save({"model": sd, "args": argparse.Namespace(T=16)}, tmp_path / "dvs.pth")
    overrides = ["embed_dim=32", "depth=2", "num_heads=2", "mlp_hidden=128", "T=2",
                 "img_size=[64, 64]", "pools=[true, true, true, true]", "attn_scale=0.25"]
    out = tmp_path / "converted.pt"
    assert _convert_cli(["convert", "--from", "spikformer", str(tmp_path / "dvs.pth"), "--model",
                         "test_spikformer", "--out", str(out), "--set", *overrides]) == 0
    printed = capsys.readouterr().out
    assert "86 target keys mapped from 110 source keys; 11 source keys unused" in printed
    assert "pos_embed: a position embedding" in printed
    state = load_checkpoint(out)  # the engine's reader: weights-only, needs model + config
    cfg = config_from_dict(state["config"])
    assert cfg.model.name == "test_spikformer" and cfg.model.kwargs["attn_scale"] == 0.25
    model = spikemoe.create_model(cfg.model.name, **cfg.model.kwargs).eval()
    model.load_state_dict(state["model"])
    x = frames(64)
    with torch.no_grad():
        ref = spikformer_reference(sd, x, layer="conv", pools=ALL, scale=0.25)
        assert (model(x).logits - ref).abs().max().item() <= 1e-5
    # a difference is refused with the override that fixes it; the file is not written
    with pytest.raises(ConversionError, match="attn_scale=0.25"):
        _convert_cli(["convert", "--from", "spikformer", str(tmp_path / "dvs.pth"), "--model",
                      "test_spikformer", "--out", str(tmp_path / "no.pt"), "--set",
                      *overrides[:-1]])
    assert not (tmp_path / "no.pt").exists()


@needs_safetensors
def test_convert_command_writes_safetensors(tmp_path, capsys):
    sd = official_spike_driven()
    torch.save(sd, tmp_path / "sdt.pth")
    out = tmp_path / "sdt.safetensors"
    assert _convert_cli(["convert", "--from", "spike_driven", str(tmp_path / "sdt.pth"),
                         "--model", "test_spike_driven", "--out", str(out), "--quiet", "--set",
                         "num_heads=2", "depth=2", "pools=[false, false, false, true]"]) == 0
    assert "talking_heads" not in capsys.readouterr().out  # --quiet: counts only
    meta = read_metadata(out)
    assert meta["spikemoe.model"] == "test_spike_driven" and meta["spikemoe.source"] == "spike_driven"
    model = small("test_spike_driven", pools=[False, False, False, True])
    load_checkpoint_into(model, out)
    assert torch.equal(model.state_dict()["blocks.1.attn.qkv.bn.weight"],
                       torch.cat([sd[f"block.1.attn.{n}_bn.weight"] for n in "qkv"]))


@pytest.mark.skipif("checkpoint" not in __import__("inspect").signature(
    spikemoe.create_model).parameters, reason="create_model(name, checkpoint=PATH) not wired yet")
def test_create_model_loads_an_official_checkpoint(tmp_path):
    sd = official_spikformer("cifar10")
    torch.save({"state_dict": sd}, tmp_path / "cifar10.pth.tar")
    kw = dict(embed_dim=D, depth=DEPTH, num_heads=HEADS, mlp_hidden=HIDDEN, T=T,
              img_size=(32, 32), pools=list(CIFAR))
    model = spikemoe.create_model("test_spikformer", checkpoint=tmp_path / "cifar10.pth.tar", **kw)
    q_bias = torch.cat([sd[f"block.0.attn.{n}_linear.bias"] for n in "qkv"])
    assert torch.equal(model.state_dict()["blocks.0.attn.qkv.linear.bias"], q_bias)
