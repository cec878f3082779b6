"""The fused kernels on a GPU through CuPy (skipped without CuPy and a GPU), and the clear
error where they cannot run."""
import importlib.util

import pytest
import torch

from spikemoe.kernels.cupy_runtime import cupy_unavailable_reason, load_cupy_kernels
from spikemoe.kernels.errors import BackendUnavailableError
from spikemoe.kernels.verify import CHECK_SHAPES, GATE_WIDTH, all_configs, compare

_REASON = cupy_unavailable_reason()


@pytest.mark.skipif(_REASON is None, reason="CuPy and a GPU are present: nothing is missing")
def test_without_cupy_or_gpu_the_error_says_what_to_install():
    with pytest.raises(BackendUnavailableError) as e:
        load_cupy_kernels("cuda:0")
    msg = str(e.value)
    assert "pip install -e '.[cuda]'" in msg and "backend='auto'" in msg
    if importlib.util.find_spec("cupy") is None:
        assert "CuPy is not installed" in msg
    assert "Traceback" not in msg


@pytest.mark.cuda
@pytest.mark.skipif(_REASON is not None, reason=f"cupy backend cannot run here: {_REASON}")
@pytest.mark.parametrize("kernel", ["lif", "emsa_gate", "emsp_gate"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("train", [True, False])
def test_cupy_kernels_match_reference(kernel, dtype, train):
    kernels = load_cupy_kernels("cuda")
    for (T, N), cfg in zip(CHECK_SHAPES * 3, all_configs(0.5 if kernel == "emsa_gate" else 1.0)):
        if kernel == "emsa_gate":
            N *= GATE_WIDTH
        c = compare(kernel, T, N, cfg, dtype, kernels, train=train)
        # On the GPU the compiler may fuse multiply-adds: allow a few float32 ulps.
        tol = 1e-5 if dtype == torch.float32 else torch.finfo(dtype).eps
        assert c.spikes_equal and c.max_err_fwd <= tol and c.max_err_grad <= tol, (T, N, cfg, c)


def test_gpu_check_script_parses_its_arguments_and_says_what_it_needs(monkeypatch, tmp_path, capsys):
    # benchmarks/gpu_check.py is the one prepared GPU run: importable, its arguments parse,
    # and without a GPU (or CuPy) it exits 2 with one line saying what to do.
    import importlib.util as iu
    from pathlib import Path

    monkeypatch.setenv("SJ_LIF_CUDA_IMPLEMENTATION", "auto")  # its import-time default stays out
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = iu.spec_from_file_location("gpu_check", path)
    mod = iu.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = mod.parse_args(["--out", str(tmp_path / "g.json"), "--skip", "train_step"])
    assert args.skip == ["train_step"] and args.iters == 20
    if _REASON is None:
        pytest.skip("a GPU and CuPy are here: run the script itself")
    assert mod.main(["--out", str(tmp_path / "g.json")]) == 2
    err = capsys.readouterr().err
    assert "pip install -e '.[cuda]'" in err
    assert not (tmp_path / "g.json").exists()
