"""The cheap counting paths give the counts of the plain definitions: operand statistics in
few reads, convolution events from a coverage map computed once per shape (never a count
cached by shape: the same layer or shape met with other values is counted from its values),
the lean dispatch mode naming layers as SpikingJelly's does, and each sample's counts read
from its batch equal to the sample run alone, with the fallback when they would not be.

LIF arithmetic (tau 2, V_th 1, hard reset): a LIF fed ``2 * S`` (S binary) emits exactly S.
"""
import math

import pytest
import torch
from spikingjelly.activation_based.op_counter import DispatchCounterMode
from torch import nn

import spikemoe
from spikemoe.analysis import profile_model
from spikemoe.analysis.energy import COST_TABLES, layer_energy
from spikemoe.analysis.op_counts import LayerOpCounter, count_operations
from spikemoe.analysis.operand_stats import (
    conv_cover,
    operand_stats,
    sample_layout,
    shared_layout,
)
from spikemoe.neurons import make_lif

FP32 = COST_TABLES["45nm-fp32"]


def _dicts(records):
    return [r.to_dict() for r in records]


# ------------------------------------------------------------------ operand statistics


def test_operand_stats_whole_and_per_sample_by_hand():
    x = torch.tensor([[0, 1, 1, 0],        # binary, 2 nonzero
                      [0, 0.5, 1, 0],      # in [0, 1], not binary
                      [2, 0, 1, -0.0],     # counts: integer, -0.0 is a zero
                      [1, 1e-40, 0, 0]])   # 1e-40 is nonzero: a float sum would lose it
    per = operand_stats(x, x.reshape(1, 4, -1))  # 4 samples, no time axis
    assert per.binary == [True, False, False, False]
    assert per.integer == [True, False, True, False]
    assert per.nonzero == [2, 2, 2, 2] and not per.signed and per.peak == 2
    whole = operand_stats(x)
    assert (whole.binary, whole.integer, whole.nonzero) == ([False], [False], [8])
    for t, binary, integer, nz in [
            (torch.tensor([0.0, 1.0, -0.0]), True, True, 1),
            (torch.tensor([0.0, 1.0, float("nan")]), False, False, 2),  # NaN: nonzero, no count
            (torch.tensor([0.0, 3.0, float("inf")]), False, True, 2),  # as x == floor(x) says
            (torch.tensor([0.0, -1.0]), False, False, 1),
            (torch.tensor([True, False, True]), True, True, 2),
            (torch.tensor([0, 1, 1], dtype=torch.float16), True, True, 2),
            (torch.tensor([0, 2, 1]), False, True, 2)]:  # int64
        s = operand_stats(t)
        naive_binary = bool(((t == 0) | (t == 1)).all())
        naive_integer = bool((t >= 0).all() and (t == torch.floor(t.double())).all())
        assert (s.binary, s.integer, s.nonzero) == ([binary], [integer], [nz]), t
        assert (binary, integer, nz) == (naive_binary, naive_integer, int(t.count_nonzero()))


def test_sample_layouts_of_time_major_and_batch_first_operands():
    T, B = 4, 2
    assert sample_layout(torch.zeros(T * B * 3, 5), T, B) == (T, B)  # [T*B*N, C] tokens
    assert sample_layout(torch.zeros(T, B, 3, 5), T, B) == (T, B)  # [T, B, N, C]
    assert sample_layout(torch.zeros(B, 5), T, B) == (1, B)  # [B, C]: after a mean over T
    assert sample_layout(torch.zeros(3, 5), T, B) is None  # 3 rows: no sample axis
    # a convolution input's first axis is images: [T=4, C=2, ...] is 4 images, not [T, B]
    assert sample_layout(torch.zeros(T, B, 3, 3), T, B, rows=True) == (1, B)
    # one op's operands must agree: a mask [T, B, N, C] times a broadcast [T, 1, N, C] (whose
    # 4 rows alone would pass for [B*2, ...]) has no per-sample reading
    assert shared_layout([torch.zeros(T, B, 3, 5)] * 2, T, B) == (T, B)
    assert shared_layout([torch.zeros(T, B, 3, 5), torch.zeros(T, 1, 3, 5)], T, B) is None


# ---------------------------------------------------------- convolution events by cover


def test_conv_cover_by_hand():
    # size 4, kernel 3, stride 1, padding 1: 4 windows [-1..1], [0..2], [1..3], [2..4]
    assert conv_cover((4,), (4,), (3,), (1,), (1,), (1,)).tolist() == [2, 3, 3, 2]
    # size 5, kernel 3, stride 2, padding 1: windows [-1..1], [1..3], [3..5]
    assert conv_cover((5,), (3,), (3,), (2,), (1,), (1,)).tolist() == [1, 2, 1, 2, 1]
    # 2-D: the outer product of the axes
    assert conv_cover((4, 5), (4, 3), (3, 3), (1, 2), (1, 1), (1, 1)).tolist() == [
        [a * b for b in (1, 2, 1, 2, 1)] for a in (2, 3, 3, 2)]


@pytest.mark.parametrize("conv", [
    nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False),
    nn.Conv2d(3, 5, (3, 2), stride=(1, 2), padding=(2, 0), dilation=(2, 1)),
    nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),  # depthwise, as EMSP's gate
    nn.Conv1d(2, 4, 5, stride=3, padding=2)])
def test_conv_events_equal_the_convolution_run_with_ones(conv):
    g = torch.Generator().manual_seed(0)
    shape = (6, conv.in_channels, 9, 7) if isinstance(conv, nn.Conv2d) else (6, 2, 11)
    for x in ((torch.rand(shape, generator=g) < 0.3).float(),  # spikes
              torch.randint(0, 4, shape, generator=g).float()):  # spike counts 0..3
        counter, _ = count_operations(nn.Sequential(conv), x)
        (rec,) = counter.layer_records()
        ones = torch.ones_like(conv.weight, dtype=torch.float64)
        f = torch.nn.functional.conv2d if x.dim() == 4 else torch.nn.functional.conv1d
        expected = f(x.double(), ones, None, conv.stride, conv.padding, conv.dilation,
                     conv.groups).sum()
        assert rec.events == int(expected) > 0
        # per sample (time-major rows [T*B, ...], T = 2, B = 3): each sample's own convolution
        per = LayerOpCounter(per_sample=(2, 3)).bind(conv)
        with torch.no_grad(), DispatchCounterMode([per]):
            conv(x)
        rows = x.reshape(2, 3, *x.shape[1:])
        for b, records in per.sample_records().items():
            alone = f(rows[:, b].double(), ones, None, conv.stride, conv.padding, conv.dilation,
                      conv.groups).sum()
            assert records[0].events == int(alone)


class _TwiceSameShape(nn.Module):
    """The same conv run on two inputs, then two convs of one shape on one input each."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.c1 = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(1, 2, 3, padding=1, bias=False)

    def forward(self, x):  # x: [2, 1, 4, 4]: a spike map, a count map
        return self.c0(x[:1]), self.c0(x[1:]), self.c1(x[:1]), self.c2(x[1:])


def test_a_layer_or_shape_met_again_is_counted_from_its_values():
    x = torch.zeros(2, 1, 4, 4)
    x[0, 0, 0, 0] = 1  # a spike in the corner: read by 2 x 2 = 4 windows
    x[1, 0, 1, 1] = 3  # a count of 3 inside: read by 3 x 3 = 9 windows
    recs = {r.layer: r for r in count_operations(_TwiceSameShape(), x)[0].layer_records()}
    # 2 output channels each: 4 * 2 = 8 and 3 * 9 * 2 = 54 accumulates
    assert (recs["c1"].events, recs["c1"].binary) == (8, True)
    assert (recs["c2"].events, recs["c2"].binary, recs["c2"].integer) == (54, False, True)
    c0 = recs["c0"]  # both inputs, one record: the flags of both, the sum of both
    assert (c0.calls, c0.events, c0.binary, c0.integer) == (2, 8 + 54, False, True)
    assert (c0.input_nonzero, c0.input_elements, c0.first) == (2, 32, True)
    assert c0.dense_macs == 2 * (2 * 16 * 9)


# ------------------------------------------------ the lean mode and per-sample counts


def _excited(name, excite):
    torch.manual_seed(0)
    return excite(spikemoe.create_model(name), seed=1).eval()


@pytest.mark.parametrize("name", ["test_spikformer_semm", "test_spike_driven_semm"])
def test_counting_mode_gives_spikingjelly_mode_records(name, excite):
    model = _excited(name, excite)
    x = torch.randint(0, 4, (2, 3, 2, 16, 16), generator=torch.Generator().manual_seed(0)).float()
    ours, _ = count_operations(model, x)
    theirs = LayerOpCounter().bind(model)
    theirs.new_forward()
    with torch.no_grad(), DispatchCounterMode([theirs]):
        model(x)
    assert _dicts(ours.layer_records()) == _dicts(theirs.layer_records())
    assert {r.kind for r in ours.layer_records()} >= {"conv", "linear", "mask"}


@pytest.mark.parametrize("name", ["test_spikformer_semm", "test_spike_driven_semm",
                                  "test_spikingformer"])
def test_each_sample_read_from_its_batch_equals_the_sample_run_alone(name, excite):
    model = _excited(name, excite)
    x = torch.randint(0, 4, (2, 3, 2, 16, 16), generator=torch.Generator().manual_seed(0)).float()
    batch, _ = count_operations(model, x, per_sample=(2, 3))
    per = batch.sample_records()
    assert per is not None, batch.unattributed
    for b in range(3):
        alone, _ = count_operations(model, x[:, b:b + 1])
        assert _dicts(per[b]) == _dicts(alone.layer_records())
    # and the samples add up to the batch (every count is a sum over samples)
    for i, rec in enumerate(batch.layer_records()):
        assert rec.events == sum(p[i].events for p in per.values())
        assert rec.input_nonzero == sum(p[i].input_nonzero for p in per.values())
    if name == "test_spike_driven_semm":  # SDSA's column sum over a mask is among them
        assert any(r.kind == "sum" and r.events for r in per[0])
    assert len({tuple(r.input_nonzero for r in p) for p in per.values()}) == 3  # they differ
    kept = count_operations(model, x, per_sample=(2, 3), keep=[2])[0].sample_records()
    assert list(kept) == [2] and _dicts(kept[2]) == _dicts(per[2])


def _digits(n):
    from spikemoe.data import create_dataset

    ds = create_dataset("digits-dvs", "test", T=2, size=16, augment=False)
    return [ds[i] for i in range(n)]


def _spread_alone(model, samples, convention):
    """The spread as defined: each sample run alone under its own counter, priced."""
    points = []
    for x, _ in samples:
        xs = x.unsqueeze(1)  # [T, 1, C, H, W]
        records = count_operations(model, xs)[0].layer_records()
        points.append(sum(layer_energy(r, convention, FP32, 1, xs.shape[0], False).energy_pj
                          for r in records) * 1e-9)
    n = len(points)
    mean = min(max(math.fsum(points) / n, min(points)), max(points))
    std = math.sqrt(sum((v - mean) ** 2 for v in points) / (n - 1))
    return mean, std, min(points), max(points)


def test_profile_spread_equals_the_samples_run_alone(excite):
    model = _excited("test_spikformer_semm", excite)
    samples = _digits(10)
    p = profile_model(model, samples, batch_size=4, spread_samples=6)  # over two batches
    for c in ("literal", "events", "strict"):
        s = p.energy[c].per_inference
        assert s.spread_samples == 6
        assert (s.spread_mean, s.std, s.min, s.max) == _spread_alone(model, samples[:6], c)
        assert s.min < s.max  # the samples differ: not vacuous


class _BatchMajorRows(nn.Module):
    """A Linear on rows laid out batch-major, [B*T, F]: with T * B rows they look time-major
    to ``sample_layout``, which then reads the wrong rows as a sample's."""

    def __init__(self):
        super().__init__()
        self.lif, self.fc = make_lif(backend="torch"), nn.Linear(4, 3)

    def forward(self, x):  # [T, B, 1, 2, 2]
        s = self.lif(x).flatten(2).transpose(0, 1)  # [T, B, 4] -> [B, T, 4]
        return self.fc(s.reshape(-1, 4)).reshape(x.shape[1], x.shape[0], 3).mean(1)


def test_a_sample_layout_read_wrong_falls_back_to_running_alone():
    g = torch.Generator().manual_seed(0)
    samples = [(2 * (torch.rand(2, 1, 2, 2, generator=g) < 0.2 * (i + 1)).float(), 0)
               for i in range(4)]  # [T=2, 1, 2, 2] each, sample i fires more the larger i
    model = _BatchMajorRows().eval()
    xb = torch.stack([x for x, _ in samples], 1)  # [T, B=4, 1, 2, 2]
    per = count_operations(model, xb, per_sample=(2, 4))[0].sample_records()
    alone = count_operations(model, xb[:, :1])[0].layer_records()
    assert _dicts(per[0]) != _dicts(alone)  # misread: not what sample 0 did alone
    p = profile_model(model, samples, batch_size=4, spread_samples=4)
    for c in ("literal", "events", "strict"):
        s = p.energy[c].per_inference
        expected = _spread_alone(model, samples, c)
        assert (s.spread_mean, s.std, s.min, s.max) == expected and s.min < s.max


class _NormInside(nn.Module):
    """LIF -> BatchNorm -> Linear, and a LIF with a Dropout run inside its own forward: the
    normalisation and dropout run outside the counting mode (nothing of theirs is counted),
    also when called where the mode is already off."""

    def __init__(self):
        super().__init__()
        self.lif, self.fc = make_lif(backend="torch"), nn.Linear(4, 2)
        self.bn = nn.BatchNorm1d(4, eps=0.0)  # at initialisation (mean 0, var 1): the identity
        self.lif2, self.fc2 = make_lif(backend="torch"), nn.Linear(4, 3)
        self.lif2.drop = nn.Dropout(0.5)
        forward = self.lif2.forward
        self.lif2.forward = lambda x: forward(self.lif2.drop(x))

    def forward(self, x):  # [T, B, 4]
        s = self.lif(x)  # [T, B, 4] -> BN over the 4 features: [T*B, 4]
        return self.fc(self.bn(s.reshape(-1, 4)).reshape(s.shape)), self.fc2(self.lif2(x))


def test_normalisation_runs_outside_the_mode_and_its_output_is_counted_after():
    net = _NormInside().eval()
    s = torch.tensor([[[1, 0, 1, 0], [0, 1, 1, 1]], [[0, 0, 0, 1], [1, 0, 0, 1]]])
    recs = {r.layer: r for r in count_operations(net, 2 * s.float())[0].layer_records()}
    assert set(recs) == {"fc", "fc2"}  # BN, dropout: no record
    # 2 + 3 + 1 + 2 = 8 spikes of 16, each reaching 2 (fc) or 3 (fc2) outputs
    assert (recs["fc"].binary, recs["fc"].input_nonzero, recs["fc"].events) == (True, 8, 16)
    assert (recs["fc2"].input_nonzero, recs["fc2"].events) == (8, 24)
