"""Mixtures of experts: SEMM's spiking router, EMSA and EMSP."""
from .emsa import EMSA
from .emsp import EMSP, default_emsp_hidden
from .router import SpikingRouter, mark_router_neuron, router_statistics

__all__ = ["EMSA", "EMSP", "SpikingRouter", "default_emsp_hidden", "mark_router_neuron",
           "router_statistics"]
