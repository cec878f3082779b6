"""spikemoe's fused kernels, compiled for the CPU from their CUDA source, against hand
arithmetic and SpikingJelly's torch reference (``spikingjelly._ops.lif.reference``)."""
import itertools

import numpy as np
import pytest
import torch

from spikemoe.kernels import build_util, cpu_build
from spikemoe.kernels.errors import BackendUnavailableError, KernelBuildError
from spikemoe.kernels.functions import LifConfig, emsa_gate, emsp_gate, lif_multistep
from spikemoe.kernels.specs import launch_config, source_dir
from spikemoe.kernels.verify import CHECK_SHAPES, GATE_WIDTH, all_configs, compare

needs_gxx = pytest.mark.skipif(build_util.find_compiler("g++") is None,
                               reason="needs g++ to build the kernels for the CPU")


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    if build_util.find_compiler("g++") is None:
        pytest.skip("needs g++ to build the kernels for the CPU")
    return cpu_build.load_cpu_kernels(tmp_path_factory.mktemp("kernels"))


@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 1000, 4097])
@pytest.mark.parametrize("block", [1, 32, 256, 1024])
def test_launch_config_covers_each_element_once(n, block):
    grid, blk = launch_config(n, block)
    assert blk == block
    # every thread of the grid computes n = blockIdx * blockDim + threadIdx and stops at n >= N
    idx = (np.arange(grid)[:, None] * blk + np.arange(blk)[None, :]).ravel()
    covered = idx[idx < n]
    assert np.array_equal(np.sort(covered), np.arange(n))  # each element exactly once
    assert grid * blk - n < blk  # and no whole block idle


def test_launch_config_rejects_what_cuda_cannot_launch():
    with pytest.raises(ValueError, match="block must be in 1..1024"):
        launch_config(10, 2048)
    with pytest.raises(ValueError, match=">= 0"):
        launch_config(-1)
    with pytest.raises(ValueError, match="2\\^31 - 1"):
        launch_config(2**31 * 4, 1)


def test_cpu_launch_touches_every_element_and_nothing_past_the_end(kernels):
    # N = 50 with blocks of 7 (8 blocks, 6 idle threads): v_last must be written for all 50
    # and the guard cells after the end never touched.
    N, pad = 50, 6
    x = torch.full((N + pad,), 3.0)
    v0 = torch.zeros(N + pad)
    spike = torch.full((N + pad,), -1.0)
    v_last = torch.full((N + pad,), float("nan"))
    kernels.launch("lif_fwd", torch.float32, N,
                   (x[:N], v0[:N], spike[:N], None, v_last[:N], N, 1, *LifConfig().scalars()),
                   block=7)
    assert spike[:N].eq(1).all() and v_last[:N].eq(0).all()  # H = 1.5 >= 1: spike, reset to 0
    assert spike[N:].eq(-1).all() and v_last[N:].isnan().all()


@needs_gxx
def test_lif_golden_trace_by_hand(kernels):
    # tau 2, V_th 1, hard reset to 0, detach_reset, alpha 4; X = 1.5 every step.
    # H0 = 0 + (1.5 - 0) / 2 = 0.75 (no spike); H1 = 0.75 + (1.5 - 0.75) / 2 = 1.125 (spike).
    x = torch.full((2, 1), 1.5, requires_grad=True)
    s, v = lif_multistep(x, None, LifConfig(detach_reset=True), kernels=kernels)
    assert s.flatten().tolist() == [0.0, 1.0] and v.item() == 0.0
    # Backward with gS = 1, 1. sigma'(u) = 4 sig(4u)(1 - sig(4u)):
    # t=1: u = 0.125, sigma' = 4 * 0.622459 * 0.377541 = 0.940015; S = 1 so dV/dH = 0;
    #      gH1 = 0.940015, gX1 = gH1 / 2 = 0.470007, carried gV0 = gH1 - gH1 / 2 = 0.470007.
    # t=0: u = -0.25, sigma' = 4 * 0.268941 * 0.731059 = 0.786448; S = 0 so dV/dH = 1;
    #      gH0 = 0.786448 + 0.470007 = 1.256455, gX0 = 0.628228.
    s.sum().backward()
    torch.testing.assert_close(x.grad.flatten(), torch.tensor([0.628228, 0.470007]),
                               atol=2e-6, rtol=0)


@needs_gxx
def test_emsa_gate_broadcasts_router_over_expert_width_by_hand(kernels):
    # One token-expert (M = 1) of width D = 2, T = 2; O = 10 always fires (V_th 0.5).
    o = torch.full((2, 1, 2), 10.0, requires_grad=True)
    r = torch.tensor([[1.0], [0.0]], requires_grad=True)  # routed at t=0 only
    y, _, _ = emsa_gate(o, r, kernels=kernels)
    assert y.tolist() == [[[1.0, 1.0]], [[0.0, 0.0]]]  # Y = R (.) S
    gy = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])
    y.backward(gy)
    # gR[t] = sum_d gY[t, d] S[t, d] = 1 + 2 = 3 at t=0, 3 + 4 = 7 at t=1.
    assert r.grad.tolist() == [[3.0], [7.0]]


@needs_gxx
def test_emsp_gate_returns_gate_spikes_and_gradients_to_both_inputs_by_hand(kernels):
    g = torch.tensor([[4.0, 0.0], [4.0, 0.0]], requires_grad=True)  # channel 0 fires
    z = torch.tensor([[1.0, 1.0], [0.0, 1.0]], requires_grad=True)
    y, spikes, _ = emsp_gate(g, z, return_spikes=True, kernels=kernels)
    assert spikes.tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert y.tolist() == [[1.0, 0.0], [0.0, 0.0]]  # G (.) Z2
    y.sum().backward()
    assert z.grad.tolist() == [[1.0, 0.0], [1.0, 0.0]]  # gZ2 = gY G
    assert g.grad[:, 1].abs().max() > 0  # the silent channel still gets a surrogate gradient


@pytest.mark.parametrize("kernel", ["lif", "emsa_gate", "emsp_gate"])
def test_kernels_match_spikingjelly_reference_float32(kernels, kernel):
    # Every option combination x N = 1, N not a multiple of the block, T = 1, T = 64.
    worst = 0.0
    for (T, N), cfg in itertools.product(CHECK_SHAPES, all_configs(
            0.5 if kernel == "emsa_gate" else 1.0)):
        if kernel == "emsa_gate":
            N *= GATE_WIDTH  # M = N token-experts of width 4 (N = 1 stays one expert)
        c = compare(kernel, T, N, cfg, torch.float32, kernels)
        assert c.spikes_equal, (kernel, T, N, cfg)
        assert c.max_err_fwd <= 1e-6 and c.max_err_grad <= 1e-6, (kernel, T, N, cfg, c)
        worst = max(worst, c.max_err_grad)
    assert worst > 0 or kernel != "lif"  # gradients were compared, not skipped


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kernel", ["lif", "emsa_gate", "emsp_gate"])
def test_half_storage_keeps_float32_state(kernels, kernel, dtype):
    # Inputs rounded to the dtype, state in float32: spikes identical to the float32
    # reference on the same (rounded) inputs; gradients within one rounding of the dtype.
    for (T, N), cfg in itertools.product(((64, 300), (3, 1)), all_configs()[::3]):
        if kernel == "emsa_gate":
            N *= GATE_WIDTH
        c = compare(kernel, T, N, cfg, dtype, kernels)
        assert c.spikes_equal and c.max_err_fwd == 0, (kernel, dtype, T, N, cfg)
        assert c.max_err_grad <= torch.finfo(dtype).eps, (kernel, dtype, T, N, cfg, c)


@needs_gxx
def test_inference_forward_equals_training_forward(kernels):
    torch.manual_seed(0)
    x = torch.randn(16, 3, 5) * 2
    train_s, train_v = lif_multistep(x.clone().requires_grad_(True), kernels=kernels)
    with torch.no_grad():
        eval_s, eval_v = lif_multistep(x, kernels=kernels)
    assert eval_s.grad_fn is None and train_s.grad_fn is not None
    assert torch.equal(train_s.detach(), eval_s) and torch.equal(train_v.detach(), eval_v)
    assert eval_s.sum() > 0


@needs_gxx
def test_bad_shapes_and_dtypes_are_explained(kernels):
    with pytest.raises(ValueError, match="R must have O's shape without its last"):
        emsa_gate(torch.zeros(2, 3, 4), torch.zeros(2, 4), kernels=kernels)
    with pytest.raises(ValueError, match="same shape"):
        emsp_gate(torch.zeros(2, 3), torch.zeros(2, 4), kernels=kernels)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        lif_multistep(torch.zeros(2, 3, dtype=torch.float64), kernels=kernels)
    with pytest.raises(ValueError, match="v0 has 2 elements"):
        lif_multistep(torch.zeros(2, 3), torch.zeros(2), kernels=kernels)


@needs_gxx
def test_compile_failure_names_the_kernel_and_first_error(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for f in source_dir().iterdir():
        if f.suffix in (".cu", ".cuh", ".h"):
            (src / f.name).write_text(f.read_text())
    (src / "emsp_gate.cu").write_text((src / "emsp_gate.cu").read_text()
                                      .replace("gv0[n] = carry;", "gv0[n] = carry_typo;", 1))
    monkeypatch.setattr(cpu_build, "source_dir", lambda: src)
    monkeypatch.setattr(build_util, "source_dir", lambda: src)
    with pytest.raises(KernelBuildError, match="kernel 'emsp_gate'.*carry_typo"):
        cpu_build.build_cpu_library(tmp_path / "build")


def test_missing_compiler_is_explained(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(cpu_build, "find_compiler", lambda name: None)
    with pytest.raises(BackendUnavailableError, match="needs a C\\+\\+ compiler.*apt-get install g\\+\\+"):
        cpu_build.build_cpu_library()
