"""LIF neurons: a golden trace by hand, backend parity and clear backend errors."""
import pytest
import torch

from spikemoe.neurons import BackendUnavailableError, make_lif


def test_golden_trace_constant_input_tau2_threshold1():
    # H[t] = V[t-1] + (X - V[t-1]) / 2, spike when H >= 1, hard reset to 0.
    # X = 1.5: H1 = 0.75 (no spike, V = 0.75); H2 = 0.75 + 0.375 = 1.125 (spike, V = 0);
    # then the pattern repeats: 0, 1, 0, 1, ...
    lif = make_lif(tau=2.0, v_threshold=1.0)
    spikes = lif(torch.full((6, 1), 1.5))
    assert spikes.flatten().tolist() == [0, 1, 0, 1, 0, 1]
    # X = 0.8: V climbs to 0.4, 0.6, 0.7, ... -> 0.8 < 1, never a spike.
    lif = make_lif(tau=2.0)
    assert lif(torch.full((20, 1), 0.8)).sum() == 0
    assert lif.v.item() == pytest.approx(0.8 * (1 - 0.5**20))


def test_golden_trace_threshold_half():
    # The attention neuron: V_th = 0.5. X = 0.8: H1 = 0.4 (no), H2 = 0.4 + 0.2 = 0.6 (spike).
    lif = make_lif(v_threshold=0.5)
    assert lif(torch.full((4, 1), 0.8)).flatten().tolist() == [0, 1, 0, 1]


def test_yaml_int_tau_is_accepted_and_bad_tau_is_explained():
    assert make_lif(tau=2).tau == 2.0  # YAML gives ints; SpikingJelly asserts on them
    with pytest.raises(ValueError, match="tau must be > 1"):
        make_lif(tau=1)
    with pytest.raises(ValueError, match="tau must be a number"):
        make_lif(tau="two")


def test_every_neuron_gets_its_own_surrogate():
    a, b = make_lif(), make_lif()
    assert a.surrogate_function is not b.surrogate_function
    assert a.surrogate_function.alpha == 4.0


@pytest.mark.parametrize("train", [True, False])
def test_auto_and_torch_backends_agree_forward_and_backward(train):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 17) * 2
    outs = {}
    for backend in ("auto", "torch"):
        lif = make_lif(backend=backend).train(train)
        xi = x.clone().requires_grad_(True)
        s = lif(xi)
        (s * torch.arange(17.0)).sum().backward()
        outs[backend] = (s, xi.grad, lif.v)
    assert outs["auto"][0].sum() > 0  # the input does make spikes
    for a, b in zip(outs["auto"], outs["torch"]):
        torch.testing.assert_close(a, b)


def test_unavailable_backends_say_what_to_do():
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU.*backend='auto'"):
            make_lif(backend="triton")
    with pytest.raises(BackendUnavailableError, match="not installed in this release.*backend='auto'"):
        make_lif(backend="cupy")
    with pytest.raises(ValueError, match="backend must be one of"):
        make_lif(backend="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_cuda_auto_matches_torch_reference():
    torch.manual_seed(0)
    x = (torch.randn(8, 64, 129) * 2).cuda()
    ref, fast = make_lif(backend="torch"), make_lif(backend="auto")
    xr, xf = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    sr, sf = ref(xr), fast(xf)
    sr.sum().backward()
    sf.sum().backward()
    torch.testing.assert_close(sf, sr)
    torch.testing.assert_close(xf.grad, xr.grad)
