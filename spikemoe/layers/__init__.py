"""Spiking building blocks on time-major tensors: patch splitting, SSA/SDSA, MLP."""
from .attention import HeadwiseSpikingAttention
from .block import SpikingBlock
from .kernels import sdsa_column_sum, ssa_scores_times_values
from .linear_bn import TokenLinearBN
from .mlp import SpikingMLP
from .patch_split import PAPER_POOLS, SpikingPatchSplit

__all__ = [
    "HeadwiseSpikingAttention", "PAPER_POOLS", "SpikingBlock", "SpikingMLP",
    "SpikingPatchSplit", "TokenLinearBN", "sdsa_column_sum", "ssa_scores_times_values",
]
