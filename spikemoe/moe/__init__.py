"""Mixtures of experts: SEMM's spiking router, EMSA and EMSP."""
from .emsa import EMSA
from .emsp import EMSP, default_emsp_hidden
from .router import SpikingRouter, router_statistics

__all__ = ["EMSA", "EMSP", "SpikingRouter", "default_emsp_hidden", "router_statistics"]
