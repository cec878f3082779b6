"""Shared test fixtures."""
import pytest
import torch
from torch import nn


def _excite(model: nn.Module, seed: int = 0) -> nn.Module:
    """Untrained nets barely fire (weights std 0.02): weights of std 3 / sqrt(fan_in) and
    BN biases 0.5 make every stage fire, at rates that depend on the input token."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 3 / fan_in ** 0.5)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.bias.fill_(0.5)
    return model


@pytest.fixture
def excite():
    """``excite(model, seed=0)``: rescale a spiking model's weights so that every layer fires."""
    return _excite


def _kill_once_written(cmd: list[str], path, timeout_s: float = 120) -> None:
    """Start ``cmd``, wait until ``path`` exists, then SIGKILL the process (it must still be
    running then: a run that ends first fails the test with its stderr)."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + timeout_s
        while not path.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()


@pytest.fixture
def kill_once_written():
    """``kill_once_written(cmd, path)``: run ``cmd`` and SIGKILL it as soon as ``path`` exists."""
    return _kill_once_written


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Every test (and every process a test starts) caches frames and compiled kernels in
    temporary folders, never in the user's ``~/.cache/spikemoe``."""
    import os

    saved = {k: os.environ.get(k) for k in ("SPIKEMOE_CACHE", "SPIKEMOE_KERNEL_CACHE")}
    os.environ["SPIKEMOE_CACHE"] = str(tmp_path_factory.mktemp("spikemoe-cache"))
    os.environ["SPIKEMOE_KERNEL_CACHE"] = str(tmp_path_factory.mktemp("spikemoe-kernels"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
