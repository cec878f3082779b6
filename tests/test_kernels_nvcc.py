"""Every kernel source compiles with nvcc for sm_80 and sm_90, warnings as errors (no GPU
needed: nvcc compiles to cubins, which runs ptxas on the inline PTX too), and with NVRTC as
the cupy backend compiles it (libnvrtc ships in torch's CUDA wheels)."""
import pytest

from spikemoe.kernels import build_util, cupy_runtime, nvcc_check, nvrtc_check
from spikemoe.kernels.specs import SOURCES, source_dir

needs_nvcc = pytest.mark.skipif(build_util.find_compiler("nvcc") is None,
                                reason="needs nvcc (the CUDA toolkit) to compile the kernels")
needs_nvrtc = pytest.mark.skipif(nvrtc_check.find_nvrtc() is None,
                                 reason="needs libnvrtc (torch's CUDA wheels or the CUDA toolkit)")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if build_util.find_compiler("nvcc") is None:
        pytest.skip("needs nvcc (the CUDA toolkit) to compile the kernels")
    return nvcc_check.compile_all(tmp_path_factory.mktemp("cubins"))


def test_every_kernel_compiles_for_sm80_and_sm90(results):
    assert {(r.kernel, r.arch) for r in results} == {
        (s.name, arch) for s in SOURCES for arch in ("sm_80", "sm_90")}
    failed = [f"{r.kernel} {r.arch}: {r.error}" for r in results if not r.ok]
    assert not failed, failed


@needs_nvcc
def test_warnings_are_errors_and_the_failure_names_kernel_and_first_error(tmp_path, monkeypatch):
    # An unused variable is a front-end warning (#177-D); with nvcc 13's `-Werror all-warnings`
    # it must fail the compile, and the result must carry that first error line.
    assert "-Werror" in nvcc_check.NVCC_FLAGS and "all-warnings" in nvcc_check.NVCC_FLAGS
    src = tmp_path / "src"
    src.mkdir()
    for f in source_dir().iterdir():
        if f.suffix in (".cu", ".cuh"):
            (src / f.name).write_text(f.read_text())
    (src / "lif.cu").write_text((src / "lif.cu").read_text().replace(
        "    float v = v0[n];", "    int unused_on_purpose = 3;\n    float v = v0[n];", 1))
    monkeypatch.setattr(nvcc_check, "source_dir", lambda: src)
    r = nvcc_check.compile_source("lif", "sm_80", tmp_path)
    assert not r.ok and r.kernel == "lif"
    assert "unused_on_purpose" in r.error and "error" in r.error.lower()


@needs_nvrtc
def test_nvrtc_compiles_the_text_the_cupy_backend_compiles():
    results = nvrtc_check.compile_all()
    assert results is not None, f"libnvrtc at {nvrtc_check.find_nvrtc()} did not load"
    failed = [f"{r.kernel} {r.arch}: {r.error}" for r in results if not r.ok]
    assert not failed, failed
    assert len(results) == 2 * len(SOURCES)


@needs_nvrtc
def test_nvrtc_warnings_count_as_failures(monkeypatch):
    real = cupy_runtime.nvrtc_source
    monkeypatch.setattr(cupy_runtime, "nvrtc_source", lambda f: real(f).replace(
        "    float v = v0[n];", "    int unused_on_purpose = 3;\n    float v = v0[n];", 1))
    r = {(x.kernel, x.arch): x for x in nvrtc_check.compile_all(archs=("sm_80",))}
    assert not r[("lif", "sm_80")].ok and "unused_on_purpose" in r[("lif", "sm_80")].error
