"""Measurement for any ``nn.Module``: firing rates and router statistics, operation counts,
energy per inference (two named conventions, named cost tables), plots and tables; warnings
when the measured network does not fire (``health``); run files read so that damage is named
(``runlog``).

Firing rates: ``FiringRateMonitor``; counts: ``count_operations`` / ``LayerOpCounter`` (on
SpikingJelly's op_counter); energy: ``layer_energy``, ``audit``, ``COST_TABLES``; the whole
measurement: ``profile_model``, which returns a typed ``ProfileResult`` (``results``); the CLI's
``spikemoe profile`` / ``spikemoe report``.
"""
from .energy import (
           CONVENTIONS,
           COST_TABLES,
           CostTable,
           LayerEnergy,
           audit,
           cost_table,
           layer_energy,
)
from .firing_rates import FiringRateMonitor, FiringRates
from .health import ProfileWarning, firing_warnings, silent_layers
from .op_counts import LayerOpCounter, OpRecord, count_operations
from .profile import profile_model
from .results import (
           Accuracy,
           ConventionEnergy,
           EnergySpread,
           FiringSummary,
           OpCounts,
           ProfileResult,
)
from .runlog import JsonLines, RunFileError, read_json_file, read_jsonl

__all__ = ["CONVENTIONS", "COST_TABLES", "Accuracy", "ConventionEnergy", "CostTable",
           "EnergySpread", "FiringRateMonitor", "FiringRates", "FiringSummary", "JsonLines",
           "LayerEnergy", "LayerOpCounter", "OpCounts", "OpRecord", "ProfileResult",
           "ProfileWarning", "RunFileError", "audit", "cost_table", "count_operations",
           "firing_warnings", "layer_energy", "profile_model", "read_json_file", "read_jsonl",
           "silent_layers"]
