"""What a conversion of official weights did (``ConversionReport``) and its two errors."""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ConversionError", "ConversionReport", "KeyMapping", "ShapeMismatchError"]


class ConversionError(ValueError):
    """A checkpoint that cannot be converted onto the model; the message says why and what to do."""


class ShapeMismatchError(ConversionError):
    """A source tensor whose shape does not fit the target key; both keys and shapes named."""


@dataclass(frozen=True)
class KeyMapping:
    """One target key and the source keys it was built from (3 for a fused q/k/v tensor)."""

    target: str
    sources: tuple[str, ...]


@dataclass
class ConversionReport:
    """What ``convert_state_dict`` did.

    Attributes:
        source: ``spikformer`` | ``spike_driven`` | ``spikingjelly``.
        variant: the official file the keys were matched against.
        model: the target model's registry name.
        mapped: every target key filled from source keys.
        unused: source key -> why it was not used.
        missing: target keys no source key filled (they keep the model's initialisation).
        zero_filled: target keys set to zero because the source has no such tensor (biases).
        differences: architecture differences that change the output (refused unless
            ``allow_mismatch``).
        notes: facts the weights cannot tell and the user must check.
    """

    source: str
    variant: str
    model: str
    mapped: list[KeyMapping] = field(default_factory=list)
    unused: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    zero_filled: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def num_source_keys_used(self) -> int:
        """Distinct source keys consumed by the mapping."""
        return len({k for m in self.mapped for k in m.sources})

    def format(self, verbose: bool = True) -> str:
        """The report as text: counts, then (``verbose``) every key by section."""
        lines = [f"{self.source} ({self.variant}) -> {self.model}: {len(self.mapped)} target keys "
                 f"mapped from {self.num_source_keys_used} source keys; {len(self.unused)} source "
                 f"keys unused; {len(self.missing)} target keys missing; {len(self.zero_filled)} "
                 f"zero-filled; {len(self.differences)} architecture differences."]
        sections = [("differences", self.differences), ("notes", self.notes)]
        if verbose:
            sections = [
                ("mapped", [f"{m.target} <- {' + '.join(m.sources)}" for m in self.mapped]),
                ("unused", [f"{k}: {why}" for k, why in self.unused.items()]),
                ("missing", self.missing), ("zero-filled", self.zero_filled), *sections]
        for title, items in sections:
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend(f"  {item}" for item in items)
        return "\n".join(lines)
