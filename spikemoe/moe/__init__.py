"""Mixtures of experts: SEMM's spiking router, EMSA and EMSP; V-MoE's router, dispatch and
MoE MLP (ANN)."""
from .dispatch import SortedBins, dispatch_combine, einsum_dispatch_combine, sort_into_bins
from .emsa import EMSA
from .emsp import EMSP, default_emsp_hidden
from .router import SpikingRouter, mark_router_neuron, router_statistics
from .surprise import SurpriseGate, causal_moving_average  # SDT / STT (ANN)
from .token_selection import DepthRouter, TimescaleRouter, run_selected, topk_mask
from .vmoe_layer import MLP, DenseMLP, VMoEMLP
from .vmoe_router import NoisyTopKRouter, RouterOutput, assign_slots, capacity_per_group

__all__ = ["EMSA", "EMSP", "MLP", "DenseMLP", "NoisyTopKRouter", "RouterOutput", "SortedBins",
           "SpikingRouter", "VMoEMLP", "assign_slots", "capacity_per_group",
           "default_emsp_hidden", "dispatch_combine", "einsum_dispatch_combine",
           "mark_router_neuron", "router_statistics", "sort_into_bins"]
__all__ += ["DepthRouter", "SurpriseGate", "TimescaleRouter", "causal_moving_average",
            "run_selected", "topk_mask"]
