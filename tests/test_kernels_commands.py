"""`spikemoe backends [--check] [--json]`: the backends' status and the kernels' check."""
import json

import pytest

from spikemoe.cli import main
from spikemoe.kernels import build_util, nvcc_check, nvrtc_check, verify
from spikemoe.neurons import BACKENDS

KERNEL_KEYS = {"sm_80", "sm_90", "max_err_fwd", "max_err_grad"}


def _fake_nvcc(fail=None):
    def compile_all(out_dir=None, archs=nvcc_check.ARCHS):
        return [nvcc_check.NvccResult(k, a, (k, a) != fail,
                                      None if (k, a) != fail else f"{k}.cu(3): error: boom")
                for k in ("lif", "emsa_gate", "emsp_gate") for a in archs]
    return compile_all


def test_backends_json_lists_every_backend(capsys):
    assert main(["backends", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"backends", "kernels"} and out["kernels"] == {}
    assert tuple(out["backends"]) == BACKENDS
    for b in out["backends"].values():
        assert set(b) == {"available", "reason"}
    assert out["backends"]["torch"]["available"] is True


@pytest.fixture
def quick_check(monkeypatch, tmp_path):
    """--check with nvcc faked (tests/test_kernels_nvcc.py runs the real one) and the CPU
    comparison on one shape, compiled into tmp_path."""
    if build_util.find_compiler("g++") is None:
        pytest.skip("needs g++ to build the kernels for the CPU")
    monkeypatch.setenv("SPIKEMOE_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(verify, "CHECK_SHAPES", ((3, 5),))
    monkeypatch.setattr(nvrtc_check, "compile_all", lambda archs: None)  # as if no libnvrtc
    return monkeypatch


def test_backends_check_json_has_exactly_the_issue_keys(quick_check, capsys):
    quick_check.setattr(nvcc_check, "compile_all", _fake_nvcc())
    assert main(["backends", "--check", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["kernels"]) == {"lif", "emsa_gate", "emsp_gate"}
    for name, k in out["kernels"].items():
        assert set(k) == KERNEL_KEYS, name
        assert k["sm_80"] is True and k["sm_90"] is True
        assert 0 <= k["max_err_fwd"] <= 1e-6 and 0 <= k["max_err_grad"] <= 1e-6


def test_backends_check_names_a_failing_kernel_and_exits_1(quick_check, capsys):
    quick_check.setattr(nvcc_check, "compile_all", _fake_nvcc(fail=("emsa_gate", "sm_90")))
    assert main(["backends", "--check"]) == 1
    text = capsys.readouterr().out
    assert "FAILED emsa_gate sm_90: nvcc: emsa_gate.cu(3): error: boom" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("emsa_gate "))
    assert row.split()[1:3] == ["true", "false"]


def test_check_without_nvcc_trusts_nvrtc_alone(monkeypatch):
    """A pip-CuPy user has NVRTC but no CUDA toolkit: the kernels count as compiled when the
    compiler that is present succeeds, and nvcc's absence is no failure."""
    from spikemoe.kernels import build_util, nvrtc_check, verify
    from spikemoe.kernels import check as commands
    from spikemoe.kernels.specs import SOURCES

    real = build_util.find_compiler
    monkeypatch.setattr(build_util, "find_compiler",
                        lambda name: None if name == "nvcc" else real(name))
    monkeypatch.setattr(nvrtc_check, "compile_all", lambda archs: [
        nvrtc_check.NvrtcResult(s.name, a, True) for s in SOURCES for a in archs])
    monkeypatch.setattr(verify, "check_cpu_build", lambda: {})
    kernels, notes = commands.run_check()
    assert all(k["sm_80"] and k["sm_90"] for k in kernels.values()) and notes == []
    # and with neither compiler: not compiled, said once
    monkeypatch.setattr(nvrtc_check, "compile_all", lambda archs: None)
    kernels, notes = commands.run_check()
    assert not any(k["sm_80"] for k in kernels.values())
    assert len(notes) == 1 and "neither nvcc nor NVRTC" in notes[0]
