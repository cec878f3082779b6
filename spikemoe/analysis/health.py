"""Is the profiled network alive? Silent spiking layers, as typed warnings.

An untrained (or badly trained) spiking network can fire no spike at all: every LIF
stays below threshold, the logits are the head's bias, and the energy per inference is
only the first layer's dense MACs. Its energy figures are then not a measurement of a
network that computes anything, and must not be read as one. From the per-layer spike
counts of ``FiringRateMonitor`` (over every profiled sample) this module names:

    no_spikes       every spiking neuron layer fired 0 spikes
    stem_silent     the first spiking layer (in execution order: the stem's first LIF) fired
                    0 spikes: nothing of the input passes it; later layers can only fire from
                    biases, whatever the input
    silent_layers   other layers that fired 0 spikes over the whole profile

A layer is silent when its spike count is exactly 0 over all samples (not "low"). The
warnings are JSON-ready dicts ``{"code", "message", "layers"}`` (``ProfileWarning``); the
profile stores them under ``warnings`` and the silent layers under ``firing.silent_layers``.
Written by hand: no library has a notion of a dead spiking network.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["WARNING_CODES", "ProfileWarning", "firing_warnings", "silent_layers"]

WARNING_CODES = ("no_spikes", "stem_silent", "silent_layers")


@dataclass
class ProfileWarning:
    """One warning about a profile.

    Attributes:
        code: one of ``WARNING_CODES``.
        message: one sentence for a person: what was found and what it means.
        layers: the neuron layers concerned (module names), in execution order.
    """

    code: str
    message: str
    layers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def silent_layers(layers: dict[str, dict]) -> list[str]:
    """Names of the layers with no spike over the whole profile.

    Args:
        layers: ``FiringRates.layers`` (``profile["firing"]["layers"]``): name -> a dict with
            ``spikes`` (count over all samples and time steps), in execution order.
    """
    return [name for name, v in layers.items() if float(v["spikes"]) == 0]


def _names(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def firing_warnings(layers: dict[str, dict], samples: int | None = None) -> list[ProfileWarning]:
    """The warnings for a profile's per-layer firing (module docstring); [] when every layer
    fires or the model has no spiking neurons (``layers`` empty)."""
    silent = silent_layers(layers)
    if not silent:
        return []
    over = f" over {samples} sample(s)" if samples is not None else ""
    if len(silent) == len(layers):
        return [ProfileWarning(
            "no_spikes",
            f"no spiking neuron fired{over}: all {len(layers)} spiking layers are silent, so "
            "the output ignores the input and the energy counts only dense (non-spike) "
            "operations. These figures do not describe a working network: profile a trained "
            "checkpoint (e.g. `spikemoe profile runs/<run> --out DIR`).", silent)]
    out = []
    first = next(iter(layers))
    if first in silent:
        out.append(ProfileWarning(
            "stem_silent",
            f"no spike passes the stem: its first spiking layer {first} fired 0 spikes{over}, "
            "so nothing of the input reaches the later layers (they fire from biases alone, "
            "the same for every input).", [first]))
        silent = silent[1:]
    if silent:
        out.append(ProfileWarning(
            "silent_layers",
            f"{len(silent)} of {len(layers)} spiking layers fired 0 spikes{over}: "
            f"{_names(silent)}; they pass nothing on and their SOPs are 0.", silent))
    return out
