"""Measurement for any ``nn.Module``: firing rates and router statistics, operation counts,
energy per inference (two named conventions, named cost tables), plots and tables.

Firing rates: ``FiringRateMonitor``; counts: ``count_operations`` / ``LayerOpCounter`` (on
SpikingJelly's op_counter); energy: ``layer_energy``, ``audit``, ``COST_TABLES``; the whole
measurement: ``profile_model``; the CLI's ``spikemoe profile`` / ``spikemoe report``.
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
from .op_counts import LayerOpCounter, OpRecord, count_operations
from .profile import profile_model

__all__ = ["CONVENTIONS", "COST_TABLES", "CostTable", "FiringRateMonitor", "FiringRates",
           "LayerEnergy", "LayerOpCounter", "OpRecord", "audit", "cost_table", "count_operations",
           "layer_energy", "profile_model"]
