"""Memory savings (issue 10): spikes saved as bytes, max-pool argmax as window offsets, the
compact LIF, and SpikingJelly's memopt as ``run.memopt``. Each saving must keep values and
gradients bit for bit, and must actually save."""
import textwrap

import pytest
import torch
from torch import nn

import spikemoe
from spikemoe.engine import Trainer, load_config
from spikemoe.engine.config import ConfigError
from spikemoe.engine.memopt import MemoptError, apply_memopt
from spikemoe.engine.synthetic import TinyANN, synthetic_bundle
from spikemoe.kernels import compact_lif
from spikemoe.layers.saved import CompactMaxPool2d, compact_saved, full_saving
from spikemoe.neurons import make_lif

TWINS = ["test_spikformer", "test_spikformer_semm", "test_spike_driven", "test_spike_driven_semm"]


class SavedBytes:
    """Outer saved-tensor hooks: the bytes autograd keeps for the backward (each storage once,
    as stored: spikemoe's hooks hand theirs on already packed) and their dtypes."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}
        self.dtypes: list[torch.dtype] = []
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)

    def pack(self, t):
        self.storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        self.dtypes.append(t.dtype)
        return t

    @property
    def total(self) -> int:
        return sum(self.storages.values())

    def __enter__(self):
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)


def _run(model, x, full: bool):
    """Forward + backward; returns logits, every gradient and buffer, and the saved bytes."""
    model.zero_grad(set_to_none=True)
    with (full_saving() if full else torch.enable_grad()), SavedBytes() as saved:
        out = model(x)
        loss = out.logits.square().sum() + out.aux_loss
    loss.backward()
    values = [out.logits.detach()] + [p.grad.clone() for p in model.parameters()]
    return values + [b.clone() for b in model.buffers()], saved.total


@pytest.mark.parametrize("name", TWINS)
def test_twin_values_and_gradients_are_bit_identical_with_less_saved(name):
    results = []
    for full in (True, False):
        torch.manual_seed(0)
        model = spikemoe.create_model(name)
        T, C, H, W = model.input_shape
        x = (torch.rand(T, 3, C, H, W, generator=torch.Generator().manual_seed(1)) < 0.3) * 2.0
        results.append(_run(model, x, full))
    (ref, ref_bytes), (ours, our_bytes) = results
    assert len(ref) == len(ours)
    assert all(torch.equal(a, b) for a, b in zip(ref, ours, strict=True))  # logits, grads, BN stats
    # LIF: 12 -> 4 bytes an element; spike inputs 4 -> 1; pools 24 -> 2 bytes an output
    assert our_bytes < 0.6 * ref_bytes, (our_bytes, ref_bytes)  # 0.50-0.55 on the twins


@pytest.mark.parametrize("slice_", [1 << 18, 16])  # whole, and in slices of 16 neurons
@pytest.mark.parametrize("kw", [{}, {"v_threshold": 0.5}, {"v_reset": None}, {"tau": 3.0, "v_reset": -0.2}])
def test_compact_lif_matches_spikingjelly_and_keeps_only_h(kw, slice_, monkeypatch):
    monkeypatch.setattr(compact_lif, "CPU_SLICE", slice_)
    x = torch.randn(5, 3, 7, generator=torch.Generator().manual_seed(2)) * 2
    g = torch.randn(5, 3, 7, generator=torch.Generator().manual_seed(3))
    out = []
    for full in (True, False):
        lif, xx = make_lif(**kw), x.clone().requires_grad_()
        with (full_saving() if full else torch.enable_grad()), SavedBytes() as saved:
            s1 = lif(xx)
            s2 = lif(xx * 0.5)  # the second call starts from the first one's membrane
        gt = g.transpose(1, 2).contiguous().transpose(1, 2)  # a non-contiguous incoming gradient
        (s1 * g + s2 * gt).sum().backward()
        out.append(([s1, s2, xx.grad, lif.v.detach()], saved.total))
    assert all(torch.equal(a, b) for a, b in zip(out[0][0], out[1][0], strict=True))
    # ours keeps H (float32) per call and nothing else; SpikingJelly's torch path on CPU keeps
    # H - V_th and, with a hard reset, (1 - S) and H for the reset as well
    assert out[1][1] == 2 * 4 * x.numel()
    assert out[0][1] == (1 if kw.get("v_reset", 0.0) is None else 2) * out[1][1]


def test_compact_saved_keeps_spikes_as_bytes_and_everything_else_as_is():
    lin = nn.Linear(6, 3)
    spikes = (torch.rand(10, 6, generator=torch.Generator().manual_seed(4)) < 0.5).float()
    counts = spikes * 3 + 1  # small integers: bytes too
    real = spikes + 0.5  # fractional: kept as float
    big = spikes * 256  # out of the byte range: kept as float
    for x, expect in ((spikes, torch.uint8), (counts, torch.uint8), (real, torch.float32),
                      (big, torch.float32)):
        grads = []
        for use in (False, True):
            lin.zero_grad()
            xx = x.clone().requires_grad_(False)
            with SavedBytes() as saved, (compact_saved(lin.weight, lin.bias) if use
                                         else torch.enable_grad()):
                y = lin(xx)
            y.pow(2).sum().backward()
            grads.append((lin.weight.grad.clone(), lin.bias.grad.clone()))
            if use:
                assert expect in saved.dtypes
        assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_compact_saved_restores_layout_for_strided_views():
    # a transposed spike view into bmm: the backward must see the same strides and values
    a = (torch.rand(2, 5, 4, generator=torch.Generator().manual_seed(5)) < 0.5).float()
    w = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(6), requires_grad=True)
    grads = []
    for use in (False, True):
        w.grad = None
        with compact_saved() if use else torch.enable_grad():
            y = torch.bmm(a.transpose(1, 2), w)  # [2, 4, 5] @ [2, 5, 3]
        (y * torch.arange(y.numel()).view_as(y)).sum().backward()
        grads.append(w.grad.clone())
    assert torch.equal(*grads)


@pytest.mark.parametrize("shape,kernel,stride,padding,ceil", [
    ((2, 3, 9, 9), 3, 2, 1, False), ((1, 2, 8, 7), 3, 2, 1, True), ((2, 1, 6, 6), 2, 2, 0, False)])
def test_compact_maxpool_same_as_torch_and_saves_two_bytes_per_output(shape, kernel, stride, padding,
                                                                      ceil):
    gen = torch.Generator().manual_seed(7)
    for x in ((torch.rand(shape, generator=gen) < 0.4).float(), torch.randn(shape, generator=gen)):
        out = []
        for pool in (nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil),
                     CompactMaxPool2d(kernel, stride, padding, ceil_mode=ceil)):
            xx = x.clone().requires_grad_()
            with SavedBytes() as saved:
                y = pool(xx)
            (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
            out.append((y.detach(), xx.grad, saved))
        assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])  # ties too
        assert out[1][2].dtypes == [torch.int16] and out[1][2].total == 2 * out[1][0].numel()


def test_memopt_level_0_and_null_leave_the_model_unchanged():
    torch.manual_seed(0)
    model = spikemoe.create_model("test_spikformer")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [type(m) for m in model.modules()]
    for level in (0, None):
        assert apply_memopt(model, level, torch.zeros(1, 2, 16, 16)) is model
        assert [type(m) for m in model.modules()] == modules
        after = model.state_dict()
        assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_memopt_level_1_checkpoints_stem_and_blocks_with_the_same_gradients():
    results, models = [], []
    for level in (0, 1):
        torch.manual_seed(0)
        model = spikemoe.create_model("test_spikformer_semm")
        T, C, H, W = model.input_shape
        x = (torch.rand(T, 3, C, H, W, generator=torch.Generator().manual_seed(1)) < 0.3) * 2.0
        apply_memopt(model, level, x)
        results.append(_run(model, x, full=False)[0])
        models.append(model)
    wrapped = [n for n, m in models[1].named_children() if type(m).__name__ == "CheckpointWrapper"]
    assert wrapped == ["stem"]
    assert [type(b).__name__ for b in models[1].blocks] == ["CheckpointWrapper"]
    assert models[0].state_dict().keys() == models[1].state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


def test_memopt_refusals_say_why():
    model = spikemoe.create_model("test_spikformer")
    x = torch.zeros(1, 2, 16, 16)
    with pytest.raises(MemoptError, match=r"run.memopt=2.*need the model on a GPU.*run.memopt=1"):
        apply_memopt(model, 2, x)
    with pytest.raises(MemoptError, match=r"run.memopt must be one of 0, 1, 2, 3, 4"):
        apply_memopt(model, 7, x)
    with pytest.raises(MemoptError, match=r"TinyANN.*run.memopt=null"):
        apply_memopt(TinyANN(), 1, x)


@pytest.mark.parametrize("value", ["7", "-1"])
def test_config_refuses_a_bad_memopt_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"run\.memopt must be 0-4 or null"):
        load_config(None, [f"run.memopt={value}"])
    assert load_config(None, ["run.memopt=1"]).run.memopt == 1
    assert load_config(None, []).run.memopt is None


RECIPE = textwrap.dedent("""\
    model: {name: test_spikformer_semm, num_classes: 4}
    data: {batch_size: 8}
    schedule: {epochs: 1, warmup_epochs: 0}
    run: {log_every: 2, progress: false, tensorboard: false, profile_samples: 0,
          stop_after_steps: 2}
""")


def test_trainer_with_memopt_1_trains_exactly_as_without(tmp_path):
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    weights = []
    for level in ("null", "1"):
        cfg = load_config(tmp_path / "recipe.yaml", [f"run.out_dir={tmp_path}", f"run.name=m{level}",
                                                     f"run.memopt={level}"])
        trainer = Trainer(cfg, data=synthetic_bundle())
        trainer.fit()
        weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
