"""Errors of the kernel layer, re-exported by ``spikemoe.neurons``."""
from __future__ import annotations

__all__ = ["BackendUnavailableError", "KernelBuildError"]


class BackendUnavailableError(RuntimeError):
    """A LIF backend was asked for that cannot run on this machine; the message says what is
    missing and what to do."""


class KernelBuildError(BackendUnavailableError):
    """A kernel source failed to compile; the message names the kernel and the compiler's
    first error."""
