"""LIF neurons: a golden trace by hand, backend parity and clear backend errors."""
import importlib.util

import pytest
import torch
from spikingjelly.activation_based import functional, neuron, surrogate

from spikemoe import neurons
from spikemoe.kernels import build_util
from spikemoe.kernels.cpu_build import load_cpu_kernels
from spikemoe.neurons import BACKENDS, BackendUnavailableError, FusedLIF, make_lif


@pytest.fixture
def cupy_on_cpu(monkeypatch, tmp_path_factory):
    """backend='cupy' built without CuPy: on CPU tensors its kernels run from their CPU build
    (the same source), compiled into a temporary folder."""
    if build_util.find_compiler("g++") is None:
        pytest.skip("needs g++ to build the kernels for the CPU")
    monkeypatch.setenv("SPIKEMOE_KERNEL_CACHE", str(tmp_path_factory.mktemp("kernels")))
    load_cpu_kernels()
    monkeypatch.setattr(neurons, "_unavailable", lambda backend: None)


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
    if importlib.util.find_spec("cupy") is None:
        with pytest.raises(BackendUnavailableError,
                           match="CuPy is not installed.*pip install -e '.\\[cuda\\]'.*backend='auto'"):
            make_lif(backend="cupy")
    elif not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="NVIDIA GPU|GPU"):
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


def test_backend_status_names_every_backend_and_why_not():
    status = neurons.backend_status()
    assert tuple(status) == BACKENDS
    assert status["torch"] == {"available": True, "reason": None}
    for name, st in status.items():
        assert isinstance(st["available"], bool)
        assert st["available"] or (st["reason"] and "\n" not in st["reason"]), name


def test_fused_lif_matches_spikingjelly_lifnode_across_calls(cupy_on_cpu):
    # backend='cupy' vs SpikingJelly's own LIFNode (multi-step, CPU kernel), over two calls
    # without a reset (the membrane carries over, and so does its gradient).
    torch.manual_seed(0)
    for detach, v_reset in ((True, 0.0), (False, None)):
        ours = make_lif(backend="cupy", detach_reset=detach, v_reset=v_reset)
        assert isinstance(ours, FusedLIF)
        ref = neuron.LIFNode(tau=2.0, v_threshold=1.0, v_reset=v_reset, detach_reset=detach,
                             surrogate_function=surrogate.Sigmoid(alpha=4.0), step_mode="m")
        x1, x2 = torch.randn(6, 3, 7) * 2, torch.randn(4, 3, 7) * 2
        grads = []
        for lif in (ours, ref):
            a, b = x1.clone().requires_grad_(True), x2.clone().requires_grad_(True)
            s1, s2 = lif(a), lif(b)
            (s1.sum() + (s2 * torch.arange(7.0)).sum()).backward()
            grads.append((s1, s2, lif.v.float(), a.grad, b.grad))
        assert grads[0][0].sum() > 0
        for mine, theirs in zip(*grads):
            torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)
        functional.reset_net(ours)
        assert ours.v == (0.0 if v_reset is None else v_reset)
